package jail

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// Regression (issue 11 item 8): banned entries were never evicted, so
// max_offenders bounded nothing under a flood that gets banned.
func TestMaxOffendersBoundsBannedEntries(t *testing.T) {
	const n = 100
	e := newEnv(t, Options{MaxOffenders: n})
	real := netip.MustParseAddr("198.51.100.1")
	for i := range 5 { // a verified brute-forcer, banned first
		e.j.Offend(offense.Offense{IP: real, Rule: offense.AuthFailure, Source: offense.SourceESL, Time: t0.Add(time.Duration(i)), User: "1000", Verified: true})
	}
	for i := range 5000 {
		// one scanner sighting bans at once: every forged source is banned
		ip := netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})
		e.j.Offend(offense.Offense{IP: ip, Rule: offense.ScannerUserAgent, Source: offense.SourceHEP, Time: t0.Add(time.Second)})
		if c := e.j.count.Load(); c > n {
			t.Fatalf("after %d sources: %d entries, max %d", i+1, c, n)
		}
		if i%512 == 0 {
			e.flush()
		}
	}
	e.flush()
	if got := len(e.j.AllOffenders()); got > n {
		t.Fatalf("%d entries listed, max %d", got, n)
	}
	if !e.banned(real.String()) {
		t.Fatal("the verified ban was evicted by the unverified flood")
	}
	// the evicted bans are still in the set until their timeout; the
	// resync must not adopt them back beyond the bound
	if e.fw.Len() <= n {
		t.Fatalf("kernel holds %d entries: the flood's bans should outlive their eviction", e.fw.Len())
	}
	if err := e.j.resync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := e.j.count.Load(); c > n {
		t.Fatalf("after resync: %d entries, max %d", c, n)
	}
	// a reload that lowers the bound applies at the next sweep
	pol := e.j.Policy()
	pol.MaxOffenders = 10
	if err := e.j.SetPolicy(pol); err != nil {
		t.Fatal(err)
	}
	e.j.Sweep()
	if c := e.j.count.Load(); c > 10 {
		t.Fatalf("after lowering max offenders: %d entries", c)
	}
	if !e.banned(real.String()) {
		t.Fatal("the verified ban was evicted before the flood's")
	}
}
