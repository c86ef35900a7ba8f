package config

import (
	"slices"
	"time"

	"github.com/sipwarden/sipwarden/internal/eslwatch"
	"github.com/sipwarden/sipwarden/internal/ipset"
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
			Findtime:         10 * time.Minute,
			MaxRetry:         5,
			Bantime:          time.Hour,
			Factor:           2,
			MaxBantime:       7 * 24 * time.Hour,
			MaxOffenders:     1_000_000,
			UnverifiedFactor: 1,
		},
		Whitelist: Whitelist{Grace: whitelist.DefaultGrace},
		Ban: Ban{Backend: BackendIPSet, SetV4: ipset.DefaultSetV4, SetV6: ipset.DefaultSetV6, MaxElem: ipset.DefaultMaxElem,
			V6Prefix: 128, ResyncInterval: time.Minute, RulePorts: slices.Clone(sc.SIPPorts)},
		API: API{Listen: "127.0.0.1:9091"},
		Log: Log{Level: "info", Format: "text"},
	}
}

func ptr[T any](v T) *T { return &v }
