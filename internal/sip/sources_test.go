package sip

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/bpf"

	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/sipcodec"
)

// ethFrame builds an Ethernet/IP/UDP-or-TCP frame (the test's own encoder).
func ethFrame(src, dst netip.AddrPort, tcp bool, fragOff uint16, payload []byte) []byte {
	var l4 []byte
	if tcp {
		l4 = make([]byte, 20)
		l4[12] = 5 << 4
	} else {
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(payload)))
	}
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	l4 = append(l4, payload...)
	proto := byte(17)
	if tcp {
		proto = 6
	}
	f := make([]byte, 12)
	if src.Addr().Is4() {
		f = binary.BigEndian.AppendUint16(f, 0x0800)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(ip[6:], fragOff)
		ip[8], ip[9] = 64, proto
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		f = append(append(f, ip...), l4...)
	} else {
		f = binary.BigEndian.AppendUint16(f, 0x86dd)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		ip[6], ip[7] = proto, 64
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		f = append(append(f, ip...), l4...)
	}
	return f
}

// withV6Ext inserts an 8-byte IPv6 extension header (Hop-by-Hop 0 or
// Destination Options 60, a PadN option) after the fixed header of an
// Ethernet/IPv6 frame.
func withV6Ext(f []byte, ext byte) []byte {
	out := append([]byte(nil), f[:14+40]...)
	next := out[14+6]
	out[14+6] = ext
	binary.BigEndian.PutUint16(out[14+4:], binary.BigEndian.Uint16(out[14+4:])+8)
	out = append(out, next, 0, 1, 4, 0, 0, 0, 0) // PadN of 4
	return append(out, f[14+40:]...)
}

func TestBPFFilter(t *testing.T) {
	raw, err := sipFilter([]int{5060, 5080}, false)
	if err != nil {
		t.Fatal(err)
	}
	ins, _ := bpf.Disassemble(raw)
	vm, err := bpf.NewVM(ins)
	if err != nil {
		t.Fatal(err)
	}
	a4, b4 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	a6, b6 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	pl := []byte("OPTIONS sip:x SIP/2.0\r\n\r\n")
	for _, tc := range []struct {
		name  string
		frame []byte
		want  bool
		whole bool // decodes to pl without reassembly
	}{
		{"v4 udp dst 5060", ethFrame(netip.AddrPortFrom(a4, 40000), netip.AddrPortFrom(b4, 5060), false, 0, pl), true, true},
		{"v4 udp src 5080", ethFrame(netip.AddrPortFrom(a4, 5080), netip.AddrPortFrom(b4, 40000), false, 0, pl), true, true},
		{"v4 tcp 5060", ethFrame(netip.AddrPortFrom(a4, 40000), netip.AddrPortFrom(b4, 5060), true, 0, pl), true, true},
		{"v4 other port", ethFrame(netip.AddrPortFrom(a4, 40000), netip.AddrPortFrom(b4, 53), false, 0, pl), false, true},
		// Fragments and IPv6 extension headers pass: software checks them.
		{"v4 first fragment", ethFrame(netip.AddrPortFrom(a4, 40000), netip.AddrPortFrom(b4, 5060), false, 0x2000, pl), true, false},
		{"v4 later fragment", ethFrame(netip.AddrPortFrom(a4, 1), netip.AddrPortFrom(b4, 2), false, 0x0004, pl), true, false},
		{"v6 udp 5060", ethFrame(netip.AddrPortFrom(a6, 40000), netip.AddrPortFrom(b6, 5060), false, 0, pl), true, true},
		{"v6 tcp src 5080", ethFrame(netip.AddrPortFrom(a6, 5080), netip.AddrPortFrom(b6, 40000), true, 0, pl), true, true},
		{"v6 hop-by-hop", withV6Ext(ethFrame(netip.AddrPortFrom(a6, 40000), netip.AddrPortFrom(b6, 5060), false, 0, pl), 0), true, true},
		{"v6 destination options", withV6Ext(ethFrame(netip.AddrPortFrom(a6, 40000), netip.AddrPortFrom(b6, 5060), false, 0, pl), 60), true, true},
		{"v6 other", ethFrame(netip.AddrPortFrom(a6, 1), netip.AddrPortFrom(b6, 2), false, 0, pl), false, true},
		{"arp", append(make([]byte, 12), 0x08, 0x06, 0, 1), false, true},
	} {
		n, err := vm.Run(tc.frame)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if (n > 0) != tc.want {
			t.Errorf("%s: accept=%v", tc.name, n > 0)
		}
		// The software decoder agrees on what it can decode.
		var f sipcodec.Frame
		if err := sipcodec.DecodeFrame(sipcodec.LinkEthernet, tc.frame, &f, nil); tc.want && tc.whole && (err != nil || string(f.Payload) != string(pl)) {
			t.Errorf("%s: decode %v %q", tc.name, err, f.Payload)
		}
	}
	if _, err := sipFilter(nil, false); err == nil {
		t.Error("no ports accepted")
	}
	if _, err := sipFilter([]int{70000}, false); err == nil {
		t.Error("bad port accepted")
	}
	if _, err := sipFilter([]int{5060}, true); err != nil { // the loopback variant assembles
		t.Error(err)
	}
}

func TestHEPListener(t *testing.T) {
	c := &collector{}
	reg := prometheus.NewRegistry()
	a, err := NewAnalyzer(Options{Config: DefaultConfig(), Sink: c, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewHEPListener("127.0.0.1:0", a, HEPOptions{}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	conn, err := net.Dial("udp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ts := time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)
	scan := req("OPTIONS", "sip:100@198.51.100.1", "User-Agent: friendly-scanner")
	conn.Write([]byte("HEP3\x00\x10garbage......"))                               // malformed HEP: counted, skipped
	conn.Write(encodeHEP3(attacker, pbx, false, ts, 1, []byte("not sip at all"))) // malformed SIP
	conn.Write(encodeHEP3(attacker, pbx, false, ts, 1, scan))
	waitFor(t, 5*time.Second, func() bool { return len(c.rules()) == 2 })
	// A second listener on the same port fails at construction.
	if _, err := NewHEPListener(l.Addr().String(), a, HEPOptions{}, nil, reg); err == nil {
		t.Error("port in use not reported")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	got := c.count()
	if got["203.0.113.7 scanner_user_agent"] != 1 || got["203.0.113.7 malformed_sip"] != 1 {
		t.Errorf("%v", got)
	}
	if pe := testutil.ToFloat64(a.m.parseErrors[offense.SourceHEP]); pe != 2 {
		t.Errorf("parse_errors_total{hep} = %v, want 2", pe)
	}
	if m := testutil.ToFloat64(a.m.messages.WithLabelValues("hep")); m != 2 {
		t.Errorf("messages_total{hep} = %v", m)
	}
	for _, o := range c.offs {
		if o.Source != offense.SourceHEP || !o.Time.Equal(ts) {
			t.Errorf("%+v", o)
		}
	}
}
