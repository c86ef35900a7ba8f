package pipeline

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/jail"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// With the defaults IPv6 is scored per /64 (issue 13 item 6): a guesser
// rotating addresses inside one /64 is banned as one source, yet a
// registered phone in its /64 is never banned — the neighbour's ban is
// narrowed to the neighbour, the phone's own failures are excused.
func TestDefaultV6PrefixNeverBansARegisteredPhone(t *testing.T) {
	cfg := config.Default()
	if cfg.Ban.V6Prefix != 64 || jail.DefaultV6Prefix != 64 {
		t.Fatalf("ban.v6_prefix default %d (jail %d), want 64", cfg.Ban.V6Prefix, jail.DefaultV6Prefix)
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	phone := netip.MustParseAddr("2001:db8:7:1::10")
	wl := whitelist.New(whitelist.Options{Now: func() time.Time { return now }})
	wl.Upsert(whitelist.Registration{IP: phone, User: "1001", Realm: "pbx", Contact: "sip:1001@[2001:db8:7:1::10]", CallID: "c1", ExpiresAt: now.Add(time.Hour)})
	p, err := New(cfg, Parts{Now: func() time.Time { return now }, Offline: true, Allowlist: wl})
	if err != nil {
		t.Fatal(err)
	}
	offend := func(ip string, i int) {
		p.Sink().Offend(offense.Offense{IP: netip.MustParseAddr(ip), Rule: offense.AuthFailure, User: "1002",
			Source: offense.SourceESL, Time: now.Add(time.Duration(i) * time.Second), Verified: true})
	}
	// a guesser hopping across one clean /64: five addresses, one source
	for i := range 5 {
		offend("2001:db8:9:1::"+string(rune('a'+i)), i)
	}
	// a neighbour of the phone, and the phone itself, failing
	for i := range 8 {
		offend("2001:db8:7:1::99", i)
		offend(phone.String(), i)
	}
	var guesser, neighbour bool
	for _, b := range p.Jail().Bans() {
		switch {
		case b.Prefix == netip.MustParsePrefix("2001:db8:9:1::/64"):
			guesser = true
		case b.IP == netip.MustParseAddr("2001:db8:7:1::99") && !b.Prefix.IsValid():
			neighbour = true
		case b.Prefix.Contains(phone) || b.IP == phone:
			t.Errorf("a ban covers the registered phone: %+v", b)
		}
	}
	if !guesser || !neighbour {
		t.Errorf("guesser's /64 banned %v, neighbour (narrowed to its address) banned %v: %+v", guesser, neighbour, p.Jail().Bans())
	}
}
