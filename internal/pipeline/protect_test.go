package pipeline

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/decision"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/protect"
)

// With the shipped defaults, the stale-password phone of a registered
// office gets its mapping quarantined (with the jail's bantime), never a
// ban; protect.disabled brings back plain protection.
func TestProtectWiredWithDefaults(t *testing.T) {
	officeIP := netip.MustParseAddr("198.51.100.10")
	allow := decision.AddrOnly(func(ip netip.Addr) (bool, bool) { return false, ip == officeIP })
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, disabled := range []bool{false, true} {
		cfg := config.Default()
		cfg.Protect.Disabled = disabled
		fw := protect.NewDryRun()
		pl, err := New(cfg, Parts{Allowlist: allow, ProtectFirewall: fw, Offline: true, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 6 {
			pl.Sink().Offend(offense.Offense{IP: officeIP, Port: 40004, Rule: offense.AuthFailure, Source: offense.SourceESL,
				User: "1004", Verified: true, Time: now.Add(time.Duration(i) * time.Second)})
		}
		if len(pl.Jail().Bans()) != 0 {
			t.Fatal("office banned")
		}
		if disabled {
			if pl.Guard() != nil {
				t.Fatal("guard built while disabled")
			}
			continue
		}
		pl.Guard().Drain(context.Background())
		m := fw.Mappings()
		if d, ok := m[protect.Mapping{IP: officeIP, Port: 40004}]; !ok || d != cfg.Jail.Bantime || len(m) != 1 {
			t.Fatalf("quarantined %v, want the mapping for %s", m, cfg.Jail.Bantime)
		}
	}
}
