package sip

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"os"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/sipcodec"
)

// allowAll takes HEP inside test captures from any sender.
var allowAll = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

func sipSeeds(f *testing.F) [][]byte {
	var out [][]byte
	for _, name := range fixtureNames(f) {
		for _, m := range loadFixture(f, name) {
			out = append(out, m.raw)
		}
	}
	out = append(out,
		req("INVITE", "sip:0097254333222@198.51.100.1", "User-Agent: friendly-scanner"),
		req("OPTIONS", "sip:nm", "From: <sip:nm@nm>;tag=root"),
		req("REGISTER", "sip:198.51.100.1", "Contact: <sip:1000@[2001:db8::1]:5060>;+sip.instance=\"<urn:uuid:1>\";expires=60"),
		resp("200 OK", "2 REGISTER", "<sip:1000@pbx>", "Contact: <sip:1000@1.2.3.4>;expires=60, <sip:1000@5.6.7.8>;expires=30"),
		[]byte("OPTIONS sip:x SIP/2.0\r\nv: SIP/2.0/UDP h\r\nf: <sip:a@b>\r\nt: sip:c@d\r\ni: x\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"),
	)
	return out
}

// FuzzSIP holds the fast scanner to its promise: whenever it vouches for a
// message, sipgo parses it too and both read the same fields. And the
// analyzer never panics, over UDP or TCP.
func FuzzSIP(f *testing.F) {
	for _, s := range sipSeeds(f) {
		f.Add(s)
	}
	p := sipmsg.NewParser()
	a, err := NewAnalyzer(Options{Config: DefaultConfig(), Sink: offense.SinkFunc(func(offense.Offense) {})})
	if err != nil {
		f.Fatal(err)
	}
	src := netip.MustParseAddrPort("192.0.2.1:5060")
	dst := netip.MustParseAddrPort("192.0.2.2:5060")
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast, slow msgInfo
		ok := fastScan(b, &fast)
		err := slowParse(p, b, &slow)
		if ok {
			if err != nil {
				t.Fatalf("fast scanner vouched for a message sipgo rejects (%v):\n%q", err, b)
			}
			if d := diffInfo(&fast, &slow); d != "" {
				t.Fatalf("fast and sipgo differ: %s\n%q", d, b)
			}
		}
		a.Packet(Packet{Src: src, Dst: dst, Time: time.Unix(1, 0), Payload: b, Source: offense.SourceHEP})
		a.Packet(Packet{Src: dst, Dst: src, TCP: true, Time: time.Unix(1, 0), Payload: b, Source: offense.SourceCapture})
	})
}

// FuzzHEP: DecodeHEP never panics, never returns a payload outside its
// input, and what the test encoder writes decodes back.
func FuzzHEP(f *testing.F) {
	ts := time.Unix(1795640000, 123000)
	for _, s := range sipSeeds(f)[:5] {
		f.Add(encodeHEP3(netip.MustParseAddrPort("[2001:db8::2]:5060"), netip.MustParseAddrPort("[2001:db8::1]:5080"), false, ts, 7, s))
	}
	if fh, err := os.Open("testdata/office_roam_hep.pcap"); err == nil {
		r, err := pcapgo.NewReader(fh)
		if err == nil {
			for i := 0; i < 8; i++ {
				data, _, err := r.ReadPacketData()
				if err != nil {
					break
				}
				var fr sipcodec.Frame
				if sipcodec.DecodeFrame(int(r.LinkType()), data, &fr, nil) == nil {
					f.Add(append([]byte(nil), fr.Payload...))
				}
			}
		}
		fh.Close()
	}
	f.Add([]byte("HEP3\x00\x06"))
	a, err := NewAnalyzer(Options{Config: DefaultConfig(), Sink: offense.SinkFunc(func(offense.Offense) {})})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var h HEP
		if err := DecodeHEP(b, &h); err != nil {
			return
		}
		if len(h.Payload) > len(b) || (len(h.Payload) > 0 && !bytes.Contains(b, h.Payload)) {
			t.Fatalf("payload not from input")
		}
		if !h.Src.IsValid() || !h.Dst.IsValid() {
			t.Fatalf("invalid addresses %+v", h)
		}
		re := encodeHEP3(h.Src, h.Dst, h.Proto == 6, h.Time, h.CaptureID, h.Payload)
		var h2 HEP
		if err := DecodeHEP(re, &h2); err != nil {
			t.Fatalf("re-encoded: %v", err)
		}
		if h2.Src != h.Src || h2.Dst != h.Dst || !bytes.Equal(h2.Payload, h.Payload) {
			t.Fatalf("round trip %+v != %+v", h2, h)
		}
		if p, ok := hepPacket(&h, offense.SourceHEP); ok {
			a.Packet(p)
		}
	})
}

// FuzzFrame: the link/IP/UDP/TCP decoder never panics on any link type.
func FuzzFrame(f *testing.F) {
	fh, err := os.Open("testdata/office_roam_wire.pcap")
	if err != nil {
		f.Fatal(err)
	}
	r, err := pcapgo.NewReader(fh)
	if err != nil {
		f.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		f.Add(uint16(sipcodec.LinkEthernet), data)
		if len(data) > 14 {
			f.Add(uint16(sipcodec.LinkRaw), data[14:])
		}
	}
	fh.Close()
	a, err := NewAnalyzer(Options{Config: DefaultConfig(), Sink: offense.SinkFunc(func(offense.Offense) {})})
	if err != nil {
		f.Fatal(err)
	}
	w := a.newWire(offense.SourcePCAP, nil, &HEPOptions{Allow: allowAll})
	links := sipcodec.Links
	f.Fuzz(func(t *testing.T, link uint16, data []byte) {
		w.frame(links[int(link)%len(links)], data, time.Unix(1, 0))
	})
}

// A capture cut short ends without error; garbage is refused.
func TestReadCaptureTruncatedAndGarbage(t *testing.T) {
	b, err := os.ReadFile("testdata/office_roam_wire.pcap")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	a := newTestAnalyzer(t, c, nil)
	n, err := ReadCapture(context.Background(), bytes.NewReader(b[:len(b)/2+3]), a, CaptureOptions{})
	if err != nil || n == 0 {
		t.Errorf("truncated: %d, %v", n, err)
	}
	if _, err := ReadCapture(context.Background(), bytes.NewReader([]byte("2026-11-25 log line\n")), a, CaptureOptions{HEP: &HEPOptions{Allow: allowAll}}); err == nil {
		t.Error("garbage accepted")
	}
}

// The lab capture rewritten into every container and link type ReadCapture
// claims (pcapng, Linux cooked v1/v2, raw IP, BSD null, VLAN-tagged
// Ethernet) gives the same verdicts as the original.
func TestCaptureFormats(t *testing.T) {
	fh, err := os.Open("testdata/office_roam_wire.pcap")
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r, err := pcapgo.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		ci   gopacket.CaptureInfo
		data []byte
	}
	var recs []rec
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		recs = append(recs, rec{ci, data})
	}
	sll := func(eth []byte) []byte {
		h := make([]byte, 16)
		binary.BigEndian.PutUint16(h[2:], 1)
		binary.BigEndian.PutUint16(h[4:], 6)
		copy(h[6:], eth[6:12])
		copy(h[14:], eth[12:14])
		return append(h, eth[14:]...)
	}
	sll2 := func(eth []byte) []byte {
		h := make([]byte, 20)
		copy(h[0:], eth[12:14])
		binary.BigEndian.PutUint32(h[4:], 2)
		binary.BigEndian.PutUint16(h[8:], 1)
		h[11] = 6
		copy(h[12:], eth[6:12])
		return append(h, eth[14:]...)
	}
	null := func(eth []byte) []byte {
		h := binary.LittleEndian.AppendUint32(nil, 2)
		return append(h, eth[14:]...)
	}
	vlan := func(eth []byte) []byte {
		out := append([]byte{}, eth[:12]...)
		out = append(out, 0x81, 0x00, 0x00, 0x64)
		return append(out, eth[12:]...)
	}
	for _, tc := range []struct {
		name string
		link layers.LinkType
		conv func([]byte) []byte
		ng   bool
	}{
		{"pcapng ethernet", layers.LinkTypeEthernet, nil, true},
		{"pcap sll", layers.LinkTypeLinuxSLL, sll, false},
		{"pcapng sll2", layers.LinkTypeLinuxSLL2, sll2, true},
		{"pcap raw", layers.LinkTypeRaw, func(e []byte) []byte { return e[14:] }, false},
		{"pcap null", layers.LinkTypeNull, null, false},
		{"pcap vlan", layers.LinkTypeEthernet, vlan, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			var write func(gopacket.CaptureInfo, []byte) error
			flush := func() error { return nil }
			if tc.ng {
				w, err := pcapgo.NewNgWriter(&buf, tc.link)
				if err != nil {
					t.Fatal(err)
				}
				write, flush = w.WritePacket, w.Flush
			} else {
				w := pcapgo.NewWriter(&buf)
				if err := w.WriteFileHeader(65536, tc.link); err != nil {
					t.Fatal(err)
				}
				write = w.WritePacket
			}
			for _, rc := range recs {
				if binary.BigEndian.Uint16(rc.data[12:14]) != 0x0800 && (tc.link == layers.LinkTypeRaw || tc.link == layers.LinkTypeNull) {
					continue // ARP has no raw-IP or null form
				}
				d := rc.data
				if tc.conv != nil {
					d = tc.conv(d)
				}
				ci := rc.ci
				ci.CaptureLength, ci.Length = len(d), len(d)
				if err := write(ci, d); err != nil {
					t.Fatal(err)
				}
			}
			if err := flush(); err != nil {
				t.Fatal(err)
			}
			if !IsCapture(buf.Bytes()) {
				t.Fatal("IsCapture false")
			}
			c := &collector{}
			a := newTestAnalyzer(t, c, nil)
			n, err := ReadCapture(context.Background(), bytes.NewReader(buf.Bytes()), a, CaptureOptions{HEP: &HEPOptions{Allow: allowAll}})
			if err != nil || n == 0 {
				t.Fatalf("ReadCapture %d %v", n, err)
			}
			got := c.count()
			if got["10.77.0.10 auth_failure"] != 15 || len(got) != 1 || len(c.regs) != 4 {
				t.Errorf("got %v, %d registrations", got, len(c.regs))
			}
		})
	}
}
