package ban

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestDryRunBehavesLikeAFullSet(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	d := NewDryRun(DryRunOptions{MaxElem: 2, Now: func() time.Time { return now }})
	ctx := context.Background()
	a, b, c := netip.MustParsePrefix("203.0.113.1/32"), netip.MustParsePrefix("2001:db8::/64"), netip.MustParsePrefix("203.0.113.3/32")
	if err := d.Add(ctx, a, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := d.Add(ctx, netip.MustParsePrefix("2001:db8::5/64"), 0); err != nil { // masked: stored as b, no timeout
		t.Fatal(err)
	}
	if err := d.Add(ctx, c, time.Minute); !errors.Is(err, ErrSetFull) {
		t.Fatalf("third add in a set of 2: %v", err)
	}
	if err := d.Add(ctx, a, time.Hour); err != nil { // refreshing an entry needs no room
		t.Fatalf("refresh: %v", err)
	}
	if !d.Contains(b) || d.Len() != 2 {
		t.Fatalf("contains %v, len %d", d.Contains(b), d.Len())
	}
	now = now.Add(2 * time.Hour) // a expires; room again
	if err := d.Add(ctx, c, time.Minute); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	l, _ := d.List(ctx)
	if len(l) != 2 || l[0].Prefix != c || l[1].Prefix != b || l[1].Timeout != 0 || l[0].Timeout != time.Minute {
		t.Fatalf("list %+v", l)
	}
	if err := d.Del(ctx, c); err != nil || d.Contains(c) {
		t.Fatalf("del: %v", err)
	}
	if err := d.Add(ctx, netip.Prefix{}, time.Minute); err == nil {
		t.Fatal("invalid prefix accepted")
	}
}
