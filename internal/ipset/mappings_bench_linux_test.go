package ipset

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/protect"

	"github.com/sipwarden/sipwarden/internal/testenv"
)

// BenchmarkProtectOffenseToKernel: a verified stale-password failure of a
// protected address judged by the guard and its quarantine entry written
// to the hash:ip,port set (offense -> kernel entry), each on a new office
// address; reports the p99.
func BenchmarkProtectOffenseToKernel(b *testing.B) {
	ns := testenv.NewNS(b, "gradb")
	m, err := NewMappings(MappingOptions{NetNS: int(ns.H), QuarantineV4: "swq4", QuarantineV6: "swq6",
		ThrottleV4: "swth4", ThrottleV6: "swth6", MaxElem: 1 << 22})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	g, err := protect.New(protect.Options{Firewall: m, MaxAddresses: 1 << 22, QueueSize: 1})
	if err != nil {
		b.Fatal(err)
	}
	ladder := protect.Ladder{Bantime: time.Hour, MaxBantime: 24 * time.Hour, Factor: 2}
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o := offense.Offense{IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Port: 40004,
			Transport: offense.TransportUDP, Rule: offense.AuthFailure, Source: offense.SourceESL, User: "1004", Verified: true}
		start := time.Now()
		o.Time = start
		if r := g.Offend(o, ladder); !r.New {
			b.Fatalf("%s (%s)", r.Action, r.Why)
		}
		g.Drain(ctx)
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
