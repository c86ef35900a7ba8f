package config

import "path/filepath"

// TokenPath is the file the API token is read from, and generated into at
// the daemon's first start: api.token_file; else api.token next to
// jail.state_file; else "" (no token file: every change through the API
// is refused). The commands find it the same way through the same config.
// There is no fixed fallback path: a daemon run with the built-in defaults
// must not share or take over the token of a real installation.
func (c *Config) TokenPath() string {
	switch {
	case c.API.TokenFile != "":
		return c.API.TokenFile
	case c.Jail.StateFile != "":
		return filepath.Join(filepath.Dir(c.Jail.StateFile), "api.token")
	}
	return ""
}
