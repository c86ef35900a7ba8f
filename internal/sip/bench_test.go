package sip

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// countingSink counts offenses per rule without locking.
type countingSink struct {
	n     atomic.Int64
	rules [16]atomic.Int64
}

func (c *countingSink) Offend(o offense.Offense) {
	c.n.Add(1)
	for i, r := range offense.Rules {
		if r == o.Rule {
			c.rules[i].Add(1)
		}
	}
}

func (c *countingSink) count(r offense.Rule) int64 {
	for i, x := range offense.Rules {
		if x == r {
			return c.rules[i].Load()
		}
	}
	return 0
}

// benchMix is the fixture traffic: REGISTER/401/REGISTER/200, INVITE/407/ACK,
// OPTIONS-like requests, plus an OPTIONS ping of our own.
func benchMix(b *testing.B) [][]byte {
	var msgs [][]byte
	for _, name := range []string{
		"A_vanilla_register_ok_sipp_messages.txt",
		"A_vanilla_invite_unauth_sipp_messages.txt",
		"C_extras_invite_wrong_password_sipp_messages.txt",
	} {
		for _, m := range loadFixture(b, name) {
			msgs = append(msgs, m.raw)
		}
	}
	msgs = append(msgs,
		req("OPTIONS", "sip:198.51.100.1", "User-Agent: Yealink SIP-T46S 66.86.0.15"),
		req("OPTIONS", "sip:198.51.100.1", "User-Agent: Linphone-Desktop/5.2.0 (belle-sip/5.2.0)"))
	return msgs
}

// BenchmarkAnalyzer: messages/s through HEP decode + parse + rules into a
// counting sink, one goroutine. Sources rotate over 65536 addresses and the
// packets' clock advances 1 ms per message, so no source floods and every
// message is parsed.
func BenchmarkAnalyzer(b *testing.B) {
	msgs := benchMix(b)
	const nIP = 1 << 16
	t0 := time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)
	var hep [][]byte
	for i, m := range msgs {
		hep = append(hep, encodeHEP3(netip.MustParseAddrPort("10.0.0.1:5060"), pbx, false, t0, 1, m))
		_ = i
	}
	srcs := make([]netip.AddrPort, nIP)
	for i := range srcs {
		srcs[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 5060)
	}
	run := func(b *testing.B, decode bool) {
		sink := &countingSink{}
		a, err := NewAnalyzer(Options{Config: DefaultConfig(), Sink: sink})
		if err != nil {
			b.Fatal(err)
		}
		var h HEP
		b.ReportAllocs()
		b.ResetTimer()
		cpu0 := cpuTime()
		for i := 0; i < b.N; i++ {
			k := i % len(msgs)
			var p Packet
			if decode {
				if err := DecodeHEP(hep[k], &h); err != nil {
					b.Fatal(err)
				}
				p, _ = hepPacket(&h, offense.SourceHEP)
			} else {
				p = Packet{Dst: pbx, Payload: msgs[k], Source: offense.SourceHEP}
			}
			p.Src = srcs[i%nIP]
			p.Time = t0.Add(time.Duration(i) * time.Millisecond)
			if p.Payload[0] == 'S' { // a response goes to the phone
				p.Src, p.Dst = pbx, p.Src
			}
			a.Packet(p)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		reportCPU(b, cpu0, "msgs/cpu-s")
		b.StopTimer()
		if sink.count(offense.Flood) != 0 || sink.count(offense.MalformedSIP) != 0 {
			b.Fatalf("unexpected flood/malformed: %d/%d", sink.count(offense.Flood), sink.count(offense.MalformedSIP))
		}
	}
	b.Run("hep", func(b *testing.B) { run(b, true) })
	b.Run("packet", func(b *testing.B) { run(b, false) })
	// For comparison: sipgo's parser alone on the same mix, which is what
	// every message would cost without the literal prefilter.
	b.Run("sipgo-parse-only", func(b *testing.B) {
		p := sipmsg.NewParser()
		b.ReportAllocs()
		cpu0 := cpuTime()
		for i := 0; i < b.N; i++ {
			if _, err := p.ParseSIP(msgs[i%len(msgs)]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		reportCPU(b, cpu0, "msgs/cpu-s")
	})
}

// BenchmarkFlood: one address floods at 50k msgs/s (packet clock) while
// 4096 others send the normal mix, one legitimate message per flood message.
// The flood costs only the pre-parse counter; detection of the others is
// unaffected (a scanner among them is still flagged, checked at the end).
func BenchmarkFlood(b *testing.B) {
	msgs := benchMix(b)
	scanner := req("OPTIONS", "sip:100@198.51.100.1", "User-Agent: friendly-scanner")
	flood := req("INVITE", "sip:0097254333222@198.51.100.1")
	t0 := time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)
	floodSrc := netip.MustParseAddrPort("203.0.113.66:5060")
	srcs := make([]netip.AddrPort, 4096)
	for i := range srcs {
		srcs[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), 5060)
	}
	b.Run("flooder-only", func(b *testing.B) {
		sink := &countingSink{}
		a, _ := NewAnalyzer(Options{Config: DefaultConfig(), Sink: sink})
		b.ReportAllocs()
		cpu0 := cpuTime()
		for i := 0; i < b.N; i++ {
			a.Packet(Packet{Src: floodSrc, Dst: pbx, Time: t0.Add(time.Duration(i) * 20 * time.Microsecond), Payload: flood, Source: offense.SourceHEP})
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		reportCPU(b, cpu0, "msgs/cpu-s")
	})
	b.Run("mixed", func(b *testing.B) {
		sink := &countingSink{}
		a, _ := NewAnalyzer(Options{Config: DefaultConfig(), Sink: sink})
		b.ReportAllocs()
		cpu0 := cpuTime()
		for i := 0; i < b.N; i++ {
			t := t0.Add(time.Duration(i) * 20 * time.Microsecond) // 50k flood msgs/s
			a.Packet(Packet{Src: floodSrc, Dst: pbx, Time: t, Payload: flood, Source: offense.SourceHEP})
			m := msgs[i%len(msgs)]
			if i%1000 == 999 {
				m = scanner
			}
			p := Packet{Src: srcs[i%len(srcs)], Dst: pbx, Time: t, Payload: m, Source: offense.SourceHEP}
			if m[0] == 'S' {
				p.Src, p.Dst = pbx, p.Src
			}
			a.Packet(p)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "legit-msgs/s")
		reportCPU(b, cpu0, "legit-msgs/cpu-s")
		b.StopTimer()
		if want := int64(b.N / 1000); sink.count(offense.ScannerUserAgent) != want {
			b.Fatalf("scanner detections %d, want %d", sink.count(offense.ScannerUserAgent), want)
		}
	})
}

// reportCPU adds msgs per CPU-second (all goroutines of the process, GC
// included) since cpu0.
func reportCPU(b *testing.B, cpu0 time.Duration, unit string) {
	if d := cpuTime() - cpu0; d > 0 {
		b.ReportMetric(float64(b.N)/d.Seconds(), unit)
	}
}
