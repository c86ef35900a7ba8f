package config

import (
	"time"

	"github.com/sipwarden/sipwarden/internal/ipset"
	"github.com/sipwarden/sipwarden/internal/protect"
)

// Protect configures the graduated response for addresses that hold a
// live registration (internal/protect): watch, quarantine the failing NAT
// mapping, throttle the address over budget. Registered addresses are
// never banned.
type Protect struct {
	// Disabled: registered addresses are only skipped (the old behaviour).
	Disabled bool `yaml:"disabled"`
	// Window is the findtime of the distinct-ports and distinct-users budget.
	Window             time.Duration `yaml:"window"`
	MaxPorts           int           `yaml:"max_ports"`
	MaxUsers           int           `yaml:"max_users"`
	MaxFailuresPerHour int           `yaml:"max_failures_per_hour"`
	MaxAddresses       int           `yaml:"max_addresses"`
	// DistributedAddresses: distinct addresses failing against one user
	// (extension) within Window raise distributed guessing.
	DistributedAddresses int `yaml:"distributed_addresses"`
	// Kernel sets (ipset backend): hash:ip,port for quarantined mappings,
	// hash:ip for throttled addresses, per family.
	QuarantineV4 string `yaml:"quarantine_v4"`
	QuarantineV6 string `yaml:"quarantine_v6"`
	ThrottleV4   string `yaml:"throttle_v4"`
	ThrottleV6   string `yaml:"throttle_v6"`
	// ThrottleRate and ThrottleBurst: packets per second to the SIP ports
	// a throttled address may send (rule installed with ban.install_rule).
	ThrottleRate  int `yaml:"throttle_rate"`
	ThrottleBurst int `yaml:"throttle_burst"`
}

func defaultProtect() Protect {
	return Protect{
		Window:               protect.DefaultWindow,
		MaxPorts:             protect.DefaultMaxPorts,
		MaxUsers:             protect.DefaultMaxUsers,
		MaxFailuresPerHour:   protect.DefaultMaxPerHour,
		MaxAddresses:         protect.DefaultMaxAddresses,
		DistributedAddresses: protect.DefaultDistributedAddresses,
		QuarantineV4:         ipset.DefaultQuarantineV4,
		QuarantineV6:         ipset.DefaultQuarantineV6,
		ThrottleV4:           ipset.DefaultThrottleV4,
		ThrottleV6:           ipset.DefaultThrottleV6,
		ThrottleRate:         ipset.DefaultThrottleRate,
		ThrottleBurst:        ipset.DefaultThrottleBurst,
	}
}

func (c *Config) validateProtect(bad func(path, format string, args ...any)) {
	p := c.Protect
	if p.Window < time.Second {
		bad("protect.window", "must be >= 1s, got %s", p.Window)
	}
	for _, f := range []struct {
		path string
		v    int
	}{{"protect.max_ports", p.MaxPorts}, {"protect.max_users", p.MaxUsers}, {"protect.max_failures_per_hour", p.MaxFailuresPerHour},
		{"protect.max_addresses", p.MaxAddresses}, {"protect.distributed_addresses", p.DistributedAddresses}, {"protect.throttle_rate", p.ThrottleRate}, {"protect.throttle_burst", p.ThrottleBurst}} {
		if f.v < 1 {
			bad(f.path, "must be >= 1, got %d", f.v)
		}
	}
	seen := map[string]string{c.Ban.SetV4: "ban.set_v4", c.Ban.SetV6: "ban.set_v6"}
	for _, f := range []struct{ path, v string }{{"protect.quarantine_v4", p.QuarantineV4}, {"protect.quarantine_v6", p.QuarantineV6},
		{"protect.throttle_v4", p.ThrottleV4}, {"protect.throttle_v6", p.ThrottleV6}} {
		switch {
		case f.v == "" || len(f.v) > 31:
			bad(f.path, "must be a set name of 1 to 31 bytes, got %q", f.v)
		case seen[f.v] != "":
			bad(f.path, "%q is also %s", f.v, seen[f.v])
		default:
			seen[f.v] = f.path
		}
	}
}

// ProtectOptions maps the protect section onto the guard's options (the
// caller adds the backend, accounts, logger, registry and clock).
func ProtectOptions(c Config) protect.Options {
	return protect.Options{Window: c.Protect.Window, MaxPorts: c.Protect.MaxPorts, MaxUsers: c.Protect.MaxUsers,
		MaxPerHour: c.Protect.MaxFailuresPerHour, MaxAddresses: c.Protect.MaxAddresses, DistributedAddresses: c.Protect.DistributedAddresses}
}
