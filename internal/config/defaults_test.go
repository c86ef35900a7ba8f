package config

import (
	"slices"
	"testing"

	"github.com/sipwarden/sipwarden/internal/eslwatch"
	"github.com/sipwarden/sipwarden/internal/ipset"
	"github.com/sipwarden/sipwarden/internal/jail"
	"github.com/sipwarden/sipwarden/internal/logwatch"
	"github.com/sipwarden/sipwarden/internal/protect"
	"github.com/sipwarden/sipwarden/internal/sip"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// TestDefaultsArePackageDefaults: every config default that a package also
// defaults agrees with that package (a 1 MiB esl.max_frame_bytes against the
// watcher's 64 MiB once capped the whitelist at ~3,800 registrations).
func TestDefaultsArePackageDefaults(t *testing.T) {
	c := Default()
	sc := sip.DefaultConfig()
	for _, tc := range []struct {
		key       string
		got, want any
	}{
		{"esl.dial_timeout", c.ESL.DialTimeout, eslwatch.DefaultDialTimeout},
		{"esl.command_timeout", c.ESL.CommandTimeout, eslwatch.DefaultCommandTimeout},
		{"esl.resync_interval", c.ESL.ResyncInterval, eslwatch.DefaultResyncEvery},
		{"esl.backoff_min", c.ESL.BackoffMin, eslwatch.DefaultBackoffMin},
		{"esl.backoff_max", c.ESL.BackoffMax, eslwatch.DefaultBackoffMax},
		{"esl.max_frame_bytes", c.ESL.MaxFrameBytes, eslwatch.DefaultMaxFrame},
		{"logs.max_line_bytes", c.Logs.MaxLineBytes, logwatch.DefaultMaxLine},
		{"logs.poll_interval", c.Logs.PollInterval, logwatch.DefaultPoll},
		{"logs.public_contexts", c.Logs.PublicContexts, []string{logwatch.DefaultPublicContext}},
		{"sip.capture_ports", c.SIP.CapturePorts, sc.SIPPorts},
		{"sip.flood_requests", c.SIP.FloodRequests, sc.FloodRequests},
		{"sip.flood_window", c.SIP.FloodWindow, sc.FloodWindow},
		{"sip.scan_users", c.SIP.ScanUsers, sc.ScanUsers},
		{"sip.scan_window", c.SIP.ScanWindow, sc.ScanWindow},
		{"whitelist.grace", c.Whitelist.Grace, whitelist.DefaultGrace},
		{"jail.findtime", c.Jail.Findtime, jail.DefaultFindtime},
		{"jail.maxretry", c.Jail.MaxRetry, jail.DefaultMaxRetry},
		{"jail.bantime", c.Jail.Bantime, jail.DefaultBantime},
		{"jail.factor", c.Jail.Factor, jail.DefaultFactor},
		{"jail.maxbantime", c.Jail.MaxBantime, jail.DefaultMaxBantime},
		{"jail.max_offenders", c.Jail.MaxOffenders, jail.DefaultMaxOffenders},
		{"jail.unverified_factor", c.Jail.UnverifiedFactor, jail.DefaultUnverifiedFactor},
		{"ban.resync_interval", c.Ban.ResyncInterval, jail.DefaultResyncEvery},
		{"protect.window", c.Protect.Window, protect.DefaultWindow},
		{"protect.max_ports", c.Protect.MaxPorts, protect.DefaultMaxPorts},
		{"protect.max_users", c.Protect.MaxUsers, protect.DefaultMaxUsers},
		{"protect.max_failures_per_hour", c.Protect.MaxFailuresPerHour, protect.DefaultMaxPerHour},
		{"protect.max_addresses", c.Protect.MaxAddresses, protect.DefaultMaxAddresses},
		{"ban.set_v4", c.Ban.SetV4, ipset.DefaultSetV4},
		{"ban.set_v6", c.Ban.SetV6, ipset.DefaultSetV6},
		{"ban.maxelem", c.Ban.MaxElem, ipset.DefaultMaxElem},
		{"ban.rule_ports", c.Ban.RulePorts, ipset.DefaultRulePorts},
		{"esl.down_policy", c.ESL.DownPolicy, eslwatch.DefaultDownPolicy},
	} {
		if !equal(tc.got, tc.want) {
			t.Errorf("%s: config default %v, package default %v", tc.key, tc.got, tc.want)
		}
	}
	if c.ESL.MaxFrameBytes < 30<<20 {
		t.Errorf("esl.max_frame_bytes %d cannot hold a 100,000-registration listing (~30 MB)", c.ESL.MaxFrameBytes)
	}
}

func equal(a, b any) bool {
	if x, ok := a.([]int); ok {
		y, _ := b.([]int)
		return slices.Equal(x, y)
	}
	if x, ok := a.([]string); ok {
		y, _ := b.([]string)
		return slices.Equal(x, y)
	}
	return a == b
}
