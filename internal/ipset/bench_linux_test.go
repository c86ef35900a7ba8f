package ipset

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/ban"

	"github.com/sipwarden/sipwarden/internal/testenv"
)

func benchAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// BenchmarkIpsetAdd: one netlink add on the persistent handle.
func BenchmarkIpsetAdd(b *testing.B) {
	ns := testenv.NewNS(b, "b")
	s := newTestIPSet(b, ns, Options{MaxElem: 1 << 24})
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Add(ctx, netip.PrefixFrom(benchAddr(i), 32), time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "adds/s")
}

// BenchmarkIpsetAddBatch: adds in batches of 256 on the batch socket.
func BenchmarkIpsetAddBatch(b *testing.B) {
	ns := testenv.NewNS(b, "b")
	s := newTestIPSet(b, ns, Options{MaxElem: 1 << 24})
	ctx := context.Background()
	es := make([]ban.Entry, 0, 256)
	errs := make([]error, 256)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		es = append(es, ban.Entry{Prefix: netip.PrefixFrom(benchAddr(i), 32), Timeout: time.Hour})
		if len(es) == cap(es) || i == b.N-1 {
			if err := s.AddBatch(ctx, es, errs); err != nil {
				b.Fatal(err)
			}
			for _, err := range errs[:len(es)] {
				if err != nil {
					b.Fatal(err)
				}
			}
			es = es[:0]
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "adds/s")
}
