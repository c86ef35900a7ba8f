package jail

import (
	"net/netip"
	"testing"

	"github.com/sipwarden/sipwarden/internal/offense"
)

func TestOffendersPages(t *testing.T) {
	e := newEnv(t, Options{V6Prefix: 64})
	want := map[netip.Addr]bool{}
	for i := range 2500 {
		ip := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		e.j.Offend(offense.Offense{IP: ip, Rule: offense.AuthFailure, Time: t0})
		want[ip] = true
	}
	v6 := netip.MustParseAddr("2001:db8:7::1")
	e.j.Offend(offense.Offense{IP: v6, Rule: offense.AuthFailure, Time: t0})
	want[netip.MustParseAddr("2001:db8:7::")] = true

	seen := map[netip.Addr]bool{}
	var after, last netip.Addr
	pages := 0
	for {
		page, next := e.j.Offenders(1000, after)
		pages++
		for _, o := range page {
			if last.IsValid() && !last.Less(o.IP) {
				t.Fatalf("page %d: %s after %s: not in address order", pages, o.IP, last)
			}
			if seen[o.IP] {
				t.Fatalf("%s twice", o.IP)
			}
			seen[o.IP], last = true, o.IP
		}
		if !next.IsValid() {
			break
		}
		if len(page) != 1000 || next != page[len(page)-1].IP {
			t.Fatalf("page %d: %d entries, next %s", pages, len(page), next)
		}
		after = next
	}
	if pages != 3 || len(seen) != len(want) {
		t.Fatalf("%d pages, %d entries seen, want 3 and %d", pages, len(seen), len(want))
	}
	for ip := range want {
		if !seen[ip] {
			t.Fatalf("%s never listed", ip)
		}
	}
	if page, _ := e.j.Offenders(0, netip.Addr{}); len(page) != DefaultOffendersLimit {
		t.Fatalf("default limit: %d", len(page))
	}
	if page, next := e.j.Offenders(5, netip.MustParseAddr("2001:db8::")); len(page) != 1 || page[0].Prefix != netip.MustParsePrefix("2001:db8:7::/64") || next.IsValid() {
		t.Fatalf("last page: %+v %v", page, next)
	}
}
