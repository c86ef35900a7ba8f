package pipeline

import (
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/logwatch"
	"github.com/sipwarden/sipwarden/internal/offense"
)

func banned(p *Pipeline, ip string) bool {
	for _, b := range p.Jail().Bans() {
		if b.IP.String() == ip {
			return true
		}
	}
	return false
}

// A rule disabled at start weighs 0 (it neither scores nor fills the jail);
// a new policy enables it, and its offenses then score.
func TestDisabledRuleEnabledByPolicy(t *testing.T) {
	cfg := config.Default()
	no := false
	cfg.Rules[string(offense.AuthFailure)] = config.Rule{Enabled: &no}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	p, err := New(cfg, Parts{Now: func() time.Time { return now }, Offline: true})
	if err != nil {
		t.Fatal(err)
	}
	offend := func(ip string, n int) {
		for i := range n {
			p.Sink().Offend(offense.Offense{IP: netip.MustParseAddr(ip), Rule: offense.AuthFailure,
				Source: offense.SourceLog, Time: now.Add(time.Duration(i) * time.Second), Verified: true})
		}
	}
	offend("198.51.100.1", 10)
	if banned(p, "198.51.100.1") || len(p.Jail().AllOffenders()) != 0 {
		t.Fatalf("a disabled rule was scored: %+v", p.Jail().AllOffenders())
	}

	cfg.Rules[string(offense.AuthFailure)] = config.Rule{}
	cfg.Jail.MaxRetry = 3
	if err := p.SetPolicy(cfg); err != nil {
		t.Fatal(err)
	}
	offend("198.51.100.2", 2)
	if banned(p, "198.51.100.2") {
		t.Fatal("banned below maxretry")
	}
	offend("198.51.100.2", 1)
	if !banned(p, "198.51.100.2") {
		t.Fatal("the 3rd failure did not ban after the rule was enabled")
	}
}

// The replay parser and the daemon's follower get the same line rules
// from the config: the public contexts and the log's time zone.
func TestLogRules(t *testing.T) {
	in, err := os.ReadFile("testdata/no_route.log")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Logs.Timezone = "America/New_York"
	cfg.Logs.PublicContexts = []string{"public", "default"}
	p, err := New(cfg, Parts{Offline: true})
	if err != nil {
		t.Fatal(err)
	}
	lp := p.LogParser(func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) })
	n := 0
	for _, l := range strings.Split(string(in), "\n") {
		if o, ok := lp.Parse([]byte(l)); ok && o.Rule == offense.NoRoute {
			n++
			if o.Time.Location().String() != "America/New_York" {
				t.Errorf("offense time in %v", o.Time.Location())
			}
		}
	}
	if n != 3 {
		t.Errorf("%d no_route with public+default, want 3", n)
	}
	fo := p.LogRules(logwatch.Options{Files: []string{"x"}}, cfg.Logs)
	if fo.Location.String() != "America/New_York" || !slices.Equal(fo.PublicContexts, cfg.Logs.PublicContexts) ||
		fo.Sink != p.Sink() || fo.MaxLine != cfg.Logs.MaxLineBytes || len(fo.Files) != 1 {
		t.Errorf("follower options: %+v", fo)
	}
}
