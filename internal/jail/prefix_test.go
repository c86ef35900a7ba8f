package jail

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// Regression (issue 11 item 2): with v6_prefix 64 a registered phone's
// neighbour banned the whole /64, phone included, and the resync asked
// about the prefix's first address only so the ban stayed.
func TestPrefixBanNeverCoversARegisteredAddress(t *testing.T) {
	phone := netip.MustParseAddr("2001:db8:1::10")
	al := allow{phone: "registered"}
	e := newEnv(t, Options{V6Prefix: 64, Allowlist: al})
	for i := range 5 {
		e.offend("2001:db8:1::99", offense.AuthFailure, time.Duration(i)*time.Second)
	}
	e.flush()
	if !e.fw.Contains(netip.MustParsePrefix("2001:db8:1::99/128")) {
		t.Fatalf("offender not banned: %+v", e.j.Bans())
	}
	if e.fw.Contains(netip.MustParsePrefix("2001:db8:1::/64")) || e.fw.Len() != 1 {
		t.Fatalf("the /64 holding the registered phone was banned: %+v", e.j.Bans())
	}
	// another neighbour is judged (and banned) on its own, the phone never
	for i := range 5 {
		e.offend("2001:db8:1::98", offense.AuthFailure, time.Duration(10+i)*time.Second)
		e.offend("2001:db8:1::10", offense.AuthFailure, time.Duration(10+i)*time.Second)
	}
	e.flush()
	if !e.fw.Contains(netip.MustParsePrefix("2001:db8:1::98/128")) || e.fw.Len() != 2 {
		t.Fatalf("second neighbour: %+v", e.j.Bans())
	}
	if st := e.state("2001:db8:1::10"); st.State != StateProtected {
		t.Fatalf("phone: %+v", st)
	}
	// a manual ban narrows the same way
	if err := e.j.Ban(context.Background(), netip.MustParseAddr("2001:db8:1::77"), time.Hour, "by hand"); err != nil {
		t.Fatal(err)
	}
	if !e.fw.Contains(netip.MustParsePrefix("2001:db8:1::77/128")) || e.fw.Contains(netip.MustParsePrefix("2001:db8:1::/64")) {
		t.Fatalf("manual: %+v", e.j.Bans())
	}
	if err := e.j.Ban(context.Background(), phone, time.Hour, "by hand"); !errors.Is(err, ban.ErrWhitelisted) {
		t.Fatalf("manual ban of the phone: %v", err)
	}
	if err := e.j.Unban(context.Background(), netip.MustParseAddr("2001:db8:1::77")); err != nil {
		t.Fatal(err)
	}
	// a clean prefix is still banned whole
	for i := range 5 {
		e.offend("2001:db8:2::5", offense.AuthFailure, time.Duration(i)*time.Second)
	}
	e.flush()
	if !e.fw.Contains(netip.MustParsePrefix("2001:db8:2::/64")) {
		t.Fatalf("clean prefix: %+v", e.j.Bans())
	}
}

func TestResyncNarrowsOrLiftsPrefixBans(t *testing.T) {
	ctx := context.Background()
	al := allow{}
	e := newEnv(t, Options{V6Prefix: 64, Allowlist: al})
	for i := range 5 {
		e.offend("2001:db8:1::99", offense.AuthFailure, time.Duration(i)*time.Second)
	}
	e.flush()
	if !e.fw.Contains(netip.MustParsePrefix("2001:db8:1::/64")) {
		t.Fatalf("prefix ban: %+v", e.j.Bans())
	}
	// an admin's prefix entry the jail does not know
	if err := e.fw.Add(ctx, netip.MustParsePrefix("2001:db8:3::/64"), time.Hour); err != nil {
		t.Fatal(err)
	}
	// the phones register (learnt after the bans)
	al[netip.MustParseAddr("2001:db8:1::10")] = "registered"
	al[netip.MustParseAddr("2001:db8:3::10")] = "registered"
	if err := e.j.resync(ctx); err != nil {
		t.Fatal(err)
	}
	list, _ := e.fw.List(ctx)
	if len(list) != 1 || list[0].Prefix != netip.MustParsePrefix("2001:db8:1::99/128") {
		t.Fatalf("kernel after resync: %+v (want only the offender)", list)
	}
	if !e.banned("2001:db8:1::99") || e.banned("2001:db8:1::/64") || len(e.j.Bans()) != 1 {
		t.Fatalf("jail after resync: %+v", e.j.Bans())
	}
	if got := testutil.ToFloat64(e.j.m.narrowed); got != 1 {
		t.Fatalf("bans_narrowed_total = %v", got)
	}
	if got := testutil.ToFloat64(e.j.m.lifted.WithLabelValues("registered")); got != 1 {
		t.Fatalf("bans_lifted_total{registered} = %v", got)
	}
	// stable: a second resync changes nothing
	if err := e.j.resync(ctx); err != nil {
		t.Fatal(err)
	}
	if list, _ := e.fw.List(ctx); len(list) != 1 {
		t.Fatalf("second resync: %+v", list)
	}
}

// flush runs the queued kernel writes through the writer's own code path
// (drain), in the test goroutine: no Run, nothing to wait for.
func (e *env) flush() {
	for {
		select {
		case o := <-e.j.queue:
			e.j.drain(context.Background(), o)
		default:
			return
		}
	}
}

// The same regression with the real whitelist (its prefix questions) in
// place of the test map.
func TestPrefixBanWithTheRealWhitelist(t *testing.T) {
	wl := whitelist.New(whitelist.Options{Now: func() time.Time { return t0 }, Static: []netip.Prefix{netip.MustParsePrefix("2001:db8:5::/48")}})
	wl.Upsert(whitelist.Registration{IP: netip.MustParseAddr("2001:db8:1::10"), User: "1001", Realm: "pbx", Contact: "sip:1001@[2001:db8:1::10]", CallID: "c1", ExpiresAt: t0.Add(time.Hour)})
	e := newEnv(t, Options{V6Prefix: 64, Allowlist: wl})
	for i := range 5 {
		e.offend("2001:db8:1::99", offense.AuthFailure, time.Duration(i)*time.Second)
		e.offend("2001:db8:5:0:1::9", offense.AuthFailure, time.Duration(i)*time.Second)
	}
	e.flush()
	list, _ := e.fw.List(context.Background())
	if len(list) != 1 || list[0].Prefix != netip.MustParsePrefix("2001:db8:1::99/128") {
		t.Fatalf("kernel: %+v, want only 2001:db8:1::99/128", list)
	}
	if st := e.state("2001:db8:5::/64"); st.State != StateProtected || st.Why != "static 2001:db8:5::/48" {
		t.Fatalf("static: %+v", st)
	}
}
