package config

import (
	"slices"

	"github.com/sipwarden/sipwarden/internal/eslwatch"
	"github.com/sipwarden/sipwarden/internal/ipset"
	"github.com/sipwarden/sipwarden/internal/jail"
	"github.com/sipwarden/sipwarden/internal/logwatch"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/sip"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// Default returns the built-in configuration: Event Socket on
// 127.0.0.1:8021 with FreeSWITCH's default password, HEP on 127.0.0.1:9060,
// API on 127.0.0.1:9091, ipset backend.
//
// Every value a package has a default for is read from that package
// (eslwatch.DefaultMaxFrame, whitelist.DefaultGrace, ...), never restated:
// a restated 1 MiB frame limit once capped the whitelist at ~3,800
// registrations. TestDefaultsArePackageDefaults says so.
func Default() Config {
	sc := sip.DefaultConfig()
	return Config{
		ESL: ESL{
			Address:        "127.0.0.1:8021",
			Password:       "ClueCon",
			DialTimeout:    eslwatch.DefaultDialTimeout,
			CommandTimeout: eslwatch.DefaultCommandTimeout,
			ResyncInterval: eslwatch.DefaultResyncEvery,
			DownPolicy:     eslwatch.DefaultDownPolicy,
			BackoffMin:     eslwatch.DefaultBackoffMin,
			BackoffMax:     eslwatch.DefaultBackoffMax,
			MaxFrameBytes:  eslwatch.DefaultMaxFrame,
		},
		Logs: Logs{
			MaxLineBytes:   logwatch.DefaultMaxLine,
			PollInterval:   logwatch.DefaultPoll,
			PublicContexts: []string{logwatch.DefaultPublicContext},
			Timezone:       "Local",
		},
		SIP: SIP{
			HEPListen:     "127.0.0.1:9060",
			CapturePorts:  slices.Clone(sc.SIPPorts),
			FloodRequests: sc.FloodRequests,
			FloodWindow:   sc.FloodWindow,
			ScanUsers:     sc.ScanUsers,
			ScanWindow:    sc.ScanWindow,
		},
		Rules: map[string]Rule{
			// Every legitimate login is challenged once: off unless an
			// operator enables it (with a weight) for DDoS mode.
			string(offense.AuthChallenge): {Enabled: ptr(false), Weight: ptr(0.0)},
		},
		Jail: Jail{
			Findtime:         jail.DefaultFindtime,
			MaxRetry:         jail.DefaultMaxRetry,
			Bantime:          jail.DefaultBantime,
			Factor:           jail.DefaultFactor,
			MaxBantime:       jail.DefaultMaxBantime,
			MaxOffenders:     jail.DefaultMaxOffenders,
			UnverifiedFactor: jail.DefaultUnverifiedFactor,
		},
		Whitelist: Whitelist{Grace: whitelist.DefaultGrace},
		Ban: Ban{Backend: BackendIPSet, SetV4: ipset.DefaultSetV4, SetV6: ipset.DefaultSetV6, MaxElem: ipset.DefaultMaxElem,
			V6Prefix: jail.DefaultV6Prefix, ResyncInterval: jail.DefaultResyncEvery, RulePorts: slices.Clone(ipset.DefaultRulePorts)},
		Protect: defaultProtect(),
		API:     API{Listen: "127.0.0.1:9091"},
		Log:     Log{Level: "info", Format: "text"},
	}
}

func ptr[T any](v T) *T { return &v }
