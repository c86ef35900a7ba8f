package whitelist

import (
	"net/netip"
	"testing"
)

// BenchmarkAllowed measures the ban-decision lookup with 100k registrations
// on 100k addresses and a few static prefixes.
func BenchmarkAllowed(b *testing.B) {
	c := newClock()
	w, _ := newWL(b, c, "192.0.2.0/24", "198.51.100.0/24", "2001:db8::/48", "203.0.113.7/32")
	fill(w, c, 100_000)
	cases := []struct {
		name string
		addr func(i int) netip.Addr
	}{
		{"registered", func(i int) netip.Addr { return genIP(i % 100_000) }},
		{"miss", func(i int) netip.Addr { return netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}) }},
		{"static", func(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}) }},
	}
	for _, tc := range cases {
		addrs := make([]netip.Addr, 4096)
		for i := range addrs {
			addrs[i] = tc.addr(i * 24)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				w.Allowed(addrs[i&4095])
				i++
			}
		})
		b.Run(tc.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					w.Allowed(addrs[i&4095])
					i++
				}
			})
		})
	}
}

// BenchmarkUpsert measures renewing registrations in a 100k whitelist (the
// cost of one sofia::register event on the whitelist side).
func BenchmarkUpsert(b *testing.B) {
	c := newClock()
	w, _ := newWL(b, c)
	fill(w, c, 100_000)
	regs := make([]Registration, 4096)
	for i := range regs {
		regs[i] = genReg(c, i*24)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		w.Upsert(regs[i&4095])
		i++
	}
}

// BenchmarkMemory reports the retained heap per registration and for 100k.
func BenchmarkMemory(b *testing.B) {
	for b.Loop() {
		per, total := measure(100_000)
		b.ReportMetric(per, "B/registration")
		b.ReportMetric(total/1e6, "MB/100k")
	}
}

// BenchmarkReplaceNode measures a resync of 100k registrations: into an
// empty whitelist (the first one after a start) and over the same set (a
// periodic one, every registration renewed).
func BenchmarkReplaceNode(b *testing.B) {
	c := newClock()
	regs := make([]Registration, 100_000)
	for i := range regs {
		regs[i] = genReg(c, i)
	}
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			w, _ := newWL(b, c)
			b.StartTimer()
			w.ReplaceNode("127.0.0.1:8021", regs)
		}
	})
	b.Run("renew", func(b *testing.B) {
		w, _ := newWL(b, c)
		w.ReplaceNode("127.0.0.1:8021", regs)
		b.ReportAllocs()
		for b.Loop() {
			w.ReplaceNode("127.0.0.1:8021", regs)
		}
	})
}
