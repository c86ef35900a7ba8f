package config

import "path/filepath"

// DefaultTokenFile is where the API token lives when neither api.token_file
// nor jail.state_file says otherwise.
const DefaultTokenFile = "/var/lib/sipwarden/api.token"

// TokenPath is the file the API token is read from, and generated into at
// the daemon's first start: api.token_file; else api.token next to
// jail.state_file; else DefaultTokenFile. The commands find it the same way
// through the same config file.
func (c *Config) TokenPath() string {
	switch {
	case c.API.TokenFile != "":
		return c.API.TokenFile
	case c.Jail.StateFile != "":
		return filepath.Join(filepath.Dir(c.Jail.StateFile), "api.token")
	}
	return DefaultTokenFile
}
