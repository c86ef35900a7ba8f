package sipcodec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"testing"
	"time"
)

// ipv4 builds an IPv4/UDP datagram's fragments: payload split at every
// `size` bytes of the UDP datagram (a multiple of 8), sent in order.
func ipv4Fragments(src, dst netip.AddrPort, id uint16, payload []byte, size int) [][]byte {
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...)
	var out [][]byte
	for off := 0; off < len(udp); off += size {
		end := min(off+size, len(udp))
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+end-off))
		binary.BigEndian.PutUint16(ip[4:], id)
		fo := uint16(off / 8)
		if end < len(udp) {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(ip[6:], fo)
		ip[8], ip[9] = 64, 17
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		out = append(out, append(ip, udp[off:end]...))
	}
	return out
}

func TestDefragmenter(t *testing.T) {
	src, dst := netip.MustParseAddrPort("198.51.100.7:5070"), netip.MustParseAddrPort("192.0.2.2:5060")
	msg := bytes.Repeat([]byte("OPTIONS sip:100@192.0.2.2 SIP/2.0\r\n"), 40)
	frags := ipv4Fragments(src, dst, 7, msg, 512)
	if len(frags) < 3 {
		t.Fatalf("%d fragments", len(frags))
	}
	for _, order := range []string{"in order", "reversed"} {
		t.Run(order, func(t *testing.T) {
			var d Defragmenter
			fs := append([][]byte(nil), frags...)
			if order == "reversed" {
				for i, j := 0, len(fs)-1; i < j; i, j = i+1, j-1 {
					fs[i], fs[j] = fs[j], fs[i]
				}
			}
			for i, fr := range fs {
				var f Frame
				err := DecodeFrame(LinkRaw, fr, &f, &d)
				if i < len(fs)-1 {
					if !errors.Is(err, ErrFragmentHeld) {
						t.Fatalf("fragment %d: %v", i, err)
					}
					continue
				}
				if err != nil || f.Src != src || f.Dst != dst || !bytes.Equal(f.Payload, msg) || !f.Reassembled {
					t.Fatalf("last fragment: %v %+v", err, f)
				}
			}
			if d.Held() != 0 {
				t.Errorf("%d datagrams still held", d.Held())
			}
		})
	}
	t.Run("overlap dropped", func(t *testing.T) {
		var d Defragmenter
		var f Frame
		DecodeFrame(LinkRaw, frags[0], &f, &d)
		// The same first fragment again, rewritten: an overlap.
		if err := DecodeFrame(LinkRaw, frags[0], &f, &d); !errors.Is(err, ErrFragmentOverlap) {
			t.Fatalf("overlap: %v", err)
		}
		if d.Held() != 0 || d.Dropped() != 1 {
			t.Errorf("held %d dropped %d", d.Held(), d.Dropped())
		}
	})
	t.Run("without a defragmenter", func(t *testing.T) {
		var f Frame
		if err := DecodeFrame(LinkRaw, frags[0], &f, nil); !errors.Is(err, ErrFragment) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		d := Defragmenter{MaxDatagrams: 16}
		for id := 0; id < 1000; id++ {
			var f Frame
			DecodeFrame(LinkRaw, ipv4Fragments(src, dst, uint16(id), msg, 512)[0], &f, &d)
		}
		if d.Held() > 16 || d.Dropped() != 1000-16 {
			t.Errorf("held %d dropped %d", d.Held(), d.Dropped())
		}
	})
}

func TestAppendHEPRoundTrip(t *testing.T) {
	for _, h := range []HEP{
		{Src: netip.MustParseAddrPort("203.0.113.7:5070"), Dst: netip.MustParseAddrPort("192.0.2.2:5060"), Proto: 17,
			Time: time.Unix(1795640000, 123000), CaptureID: 100, Payload: []byte("OPTIONS sip:x SIP/2.0\r\n\r\n")},
		{Src: netip.MustParseAddrPort("[2001:db8::7]:5070"), Dst: netip.MustParseAddrPort("[2001:db8::2]:5060"), Proto: 6, Payload: []byte("x")},
	} {
		b, err := AppendHEP(nil, &h)
		if err != nil {
			t.Fatal(err)
		}
		var g HEP
		if err := DecodeHEP(b, &g); err != nil {
			t.Fatal(err)
		}
		if g.Src != h.Src || g.Dst != h.Dst || g.Proto != h.Proto || !g.Time.Equal(h.Time) || g.CaptureID != h.CaptureID || !bytes.Equal(g.Payload, h.Payload) || !g.IsSIP() {
			t.Errorf("round trip %+v -> %+v", h, g)
		}
	}
	big := HEP{Src: netip.MustParseAddrPort("1.2.3.4:1"), Dst: netip.MustParseAddrPort("1.2.3.5:1"), Payload: make([]byte, 70000)}
	if _, err := AppendHEP(nil, &big); err == nil {
		t.Error("a payload over 64 KiB encoded")
	}
}

func TestCaptureReader(t *testing.T) {
	for _, name := range []string{"testdata/office_roam_wire.pcap", "testdata/office_roam_hep.pcap"} {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewCaptureReader(f)
		if err != nil {
			t.Fatal(err)
		}
		n, udp := 0, 0
		for {
			data, link, _, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			n++
			var fr Frame
			if DecodeFrame(link, data, &fr, nil) == nil && !fr.TCP {
				udp++
			}
		}
		f.Close()
		if n == 0 || udp == 0 {
			t.Errorf("%s: %d frames, %d UDP", name, n, udp)
		}
	}
	if _, err := NewCaptureReader(bytes.NewReader([]byte("not a capture"))); !errors.Is(err, ErrNotCapture) {
		t.Errorf("%v", err)
	}
}

// FuzzDecodeHEP: never a panic, a payload always from the input, and what
// decodes re-encodes to the same packet.
func FuzzDecodeHEP(f *testing.F) {
	h := HEP{Src: netip.MustParseAddrPort("203.0.113.7:5070"), Dst: netip.MustParseAddrPort("192.0.2.2:5060"), Time: time.Unix(1, 0), Payload: []byte("OPTIONS")}
	b, _ := AppendHEP(nil, &h)
	f.Add(b)
	f.Add([]byte("HEP3\x00\x06"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var h HEP
		if DecodeHEP(b, &h) != nil {
			return
		}
		if len(h.Payload) > 0 && !bytes.Contains(b, h.Payload) {
			t.Fatal("payload not from input")
		}
		re, err := AppendHEP(nil, &h)
		if err != nil {
			return // e.g. a payload the 16-bit length cannot carry with our chunks
		}
		var g HEP
		if err := DecodeHEP(re, &g); err != nil || g.Src != h.Src || g.Dst != h.Dst || !bytes.Equal(g.Payload, h.Payload) {
			t.Fatalf("re-encoded: %v %+v != %+v", err, g, h)
		}
	})
}

// FuzzDecodeFrame: every link type, with reassembly, never panics and
// returns payloads within bounds.
func FuzzDecodeFrame(f *testing.F) {
	src, dst := netip.MustParseAddrPort("198.51.100.7:5070"), netip.MustParseAddrPort("192.0.2.2:5060")
	for _, fr := range ipv4Fragments(src, dst, 1, bytes.Repeat([]byte("x"), 100), 64) {
		f.Add(uint16(LinkRaw), fr)
	}
	var d Defragmenter
	f.Fuzz(func(t *testing.T, link uint16, data []byte) {
		var fr Frame
		if DecodeFrame(Links[int(link)%len(Links)], data, &fr, &d) == nil && len(fr.Payload) > 65535 {
			t.Fatalf("payload of %d bytes", len(fr.Payload))
		}
		if d.Held() > 256 {
			t.Fatalf("%d datagrams held", d.Held())
		}
	})
}
