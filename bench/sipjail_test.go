// Package bench holds the benchmarks of bench/run that no component package
// owns because they cross packages: SIP analysis feeding a real jail.
package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/jail"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/sip"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

var pbx = netip.MustParseAddrPort("198.51.100.1:5060")

// sippHeader starts a message in a sipp message log (see sip/testdata).
var sippHeader = regexp.MustCompile(`^(UDP message sent|UDP message received|Unexpected UDP message received|>>> sent|<<< received)`)

var contentLength = regexp.MustCompile(`(?mi)^Content-Length:\s*(\d+)`)

// sippMessages splits one of the sip package's sipp logs into wire messages
// (CRLF, body cut at Content-Length), as sip's own benchmark reads them.
func sippMessages(tb testing.TB, name string) [][]byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "internal", "sip", "testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	lines := strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		if !sippHeader.MatchString(lines[i]) || strings.HasPrefix(lines[i], "Unexpected") {
			continue
		}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		var msg []string
		for ; j < len(lines); j++ {
			if strings.HasPrefix(lines[j], "-----") || sippHeader.MatchString(lines[j]) || strings.HasPrefix(lines[j], "FINAL:") {
				break
			}
			msg = append(msg, lines[j])
		}
		i = j - 1
		text := strings.Join(msg, "\r\n")
		end := strings.Index(text, "\r\n\r\n")
		if end < 0 {
			tb.Fatalf("%s: message without header end", name)
		}
		cl := 0
		if m := contentLength.FindStringSubmatch(text[:end]); m != nil {
			cl, _ = strconv.Atoi(m[1])
		}
		body := text[end+4:]
		if len(body) < cl {
			tb.Fatalf("%s: body %d < Content-Length %d", name, len(body), cl)
		}
		out = append(out, []byte(text[:end+4]+body[:cl]))
	}
	if len(out) == 0 {
		tb.Fatalf("%s: no messages", name)
	}
	return out
}

// options is an OPTIONS request with the given User-Agent.
func options(ua string) []byte {
	return []byte("OPTIONS sip:100@198.51.100.1 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 203.0.113.7:5070;branch=z9hG4bK-1\r\n" +
		"From: <sip:100@198.51.100.1>;tag=a1\r\n" +
		"To: <sip:100@198.51.100.1>\r\n" +
		"Call-ID: c1@203.0.113.7\r\n" +
		"CSeq: 1 OPTIONS\r\n" +
		"Max-Forwards: 70\r\n" +
		"User-Agent: " + ua + "\r\n" +
		"Content-Length: 0\r\n\r\n")
}

// encodeHEP wraps a payload in a HEPv3 datagram (IPv4, UDP), as FreeSWITCH's
// capture-server sends it.
func encodeHEP(src, dst netip.AddrPort, ts time.Time, payload []byte) []byte {
	var body bytes.Buffer
	chunk := func(typ uint16, data []byte) {
		var h [6]byte
		binary.BigEndian.PutUint16(h[2:], typ)
		binary.BigEndian.PutUint16(h[4:], uint16(6+len(data)))
		body.Write(h[:])
		body.Write(data)
	}
	s, d := src.Addr().As4(), dst.Addr().As4()
	chunk(1, []byte{2})  // IPv4
	chunk(2, []byte{17}) // UDP
	chunk(3, s[:])
	chunk(4, d[:])
	chunk(7, binary.BigEndian.AppendUint16(nil, src.Port()))
	chunk(8, binary.BigEndian.AppendUint16(nil, dst.Port()))
	chunk(9, binary.BigEndian.AppendUint32(nil, uint32(ts.Unix())))
	chunk(10, binary.BigEndian.AppendUint32(nil, uint32(ts.Nanosecond()/1000)))
	chunk(11, []byte{1}) // SIP
	chunk(12, binary.BigEndian.AppendUint32(nil, 100))
	chunk(15, payload)
	out := binary.BigEndian.AppendUint16([]byte("HEP3"), uint16(6+body.Len()))
	return append(out, body.Bytes()...)
}

// BenchmarkSIPToJail measures messages/s through the whole SIP path of the
// daemon on one goroutine: HEPv3 decode, parse, rules, and every offense into
// a real jail (scoring, the never-ban/whitelist/registration decision, bans
// queued to a running writer with a dry-run backend), with the registrations
// learned from 200 OKs going into a real whitelist.
//
// The mix is sip's BenchmarkAnalyzer's (the sipp fixtures: REGISTER with
// challenge and 200, unauthenticated INVITE with 407, INVITE with a wrong
// password, OPTIONS pings) plus one SIPVicious OPTIONS in 64 messages. Sources
// rotate over 65536 addresses and the packet clock advances 1 ms per message,
// so no source floods and every message is parsed; the scanners are banned.
func BenchmarkSIPToJail(b *testing.B) {
	var msgs [][]byte
	for _, name := range []string{
		"A_vanilla_register_ok_sipp_messages.txt",
		"A_vanilla_invite_unauth_sipp_messages.txt",
		"C_extras_invite_wrong_password_sipp_messages.txt",
	} {
		msgs = append(msgs, sippMessages(b, name)...)
	}
	msgs = append(msgs, options("Yealink SIP-T46S 66.86.0.15"), options("Linphone-Desktop/5.2.0 (belle-sip/5.2.0)"))
	scanner := options("friendly-scanner")

	const nIP = 1 << 16
	t0 := time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)
	srcs := make([]netip.AddrPort, nIP)
	for i := range srcs {
		srcs[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 5060)
	}
	// One datagram per (message, source) would be 65536*len(msgs): the
	// phone's address is rewritten in place instead. In encodeHEP's layout
	// the IPv4 source value starts after the 6-byte header, the family and
	// protocol chunks (7 bytes each) and its own chunk header (6); the
	// destination value follows 4+6 bytes later.
	const srcOff, dstOff = 6 + 7 + 7 + 6, 6 + 7 + 7 + 6 + 4 + 6
	type dgram struct {
		b     []byte
		phone int // offset of the phone's address
	}
	var hep []dgram
	for _, m := range append(msgs, scanner) {
		if m[0] == 'S' { // a response goes from the PBX to the phone
			hep = append(hep, dgram{b: encodeHEP(pbx, srcs[0], t0, m), phone: dstOff})
		} else {
			hep = append(hep, dgram{b: encodeHEP(srcs[0], pbx, t0, m), phone: srcOff})
		}
	}

	var h sip.HEP
	for _, d := range hep { // the offsets are right: the phone's address moves
		want := srcs[1].Addr().As4()
		copy(d.b[d.phone:d.phone+4], want[:])
		if err := sip.DecodeHEP(d.b, &h); err != nil {
			b.Fatal(err)
		}
		got := h.Src.Addr()
		if d.phone == dstOff {
			got = h.Dst.Addr()
		}
		if got != srcs[1].Addr() {
			b.Fatalf("phone address %s, want %s", got, srcs[1].Addr())
		}
	}

	now := func() time.Time { return t0 }
	wl := whitelist.New(whitelist.Options{Now: now, Registerer: prometheus.NewRegistry()})
	fw := ban.NewDryRun()
	j, err := jail.New(jail.Options{
		Firewall:     fw,
		Allowlist:    wl,
		Registerer:   prometheus.NewRegistry(),
		MaxOffenders: 2 * nIP,
		QueueSize:    1 << 16,
		HostAddrs:    func() ([]netip.Addr, error) { return nil, nil },
	})
	if err != nil {
		b.Fatal(err)
	}
	var offenses int64
	sink := offense.SinkFunc(func(o offense.Offense) { offenses++; j.Offend(o) })
	a, err := sip.NewAnalyzer(sip.Options{Config: sip.DefaultConfig(), Sink: sink, Registrations: wl,
		Registerer: prometheus.NewRegistry(), Now: now})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()

	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := hep[i%len(msgs)]
		if i%64 == 63 {
			d = hep[len(msgs)]
		}
		phone := srcs[i%nIP].Addr().As4()
		copy(d.b[d.phone:d.phone+4], phone[:])
		if err := sip.DecodeHEP(d.b, &h); err != nil {
			b.Fatal(err)
		}
		a.Packet(sip.Packet{Src: h.Src, Dst: h.Dst, TCP: h.Proto == 6,
			Time: t0.Add(time.Duration(i) * time.Millisecond), Payload: h.Payload, Source: offense.SourceHEP})
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.StopTimer()
	b.ReportMetric(float64(offenses)/float64(b.N), "offenses/msg")
	if b.N >= 64*nIP && len(j.Bans()) == 0 {
		b.Fatal("no scanner banned")
	}
}
