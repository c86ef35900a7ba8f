package sip

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/sipcodec"
)

// TCP reassembly: a message split across segments is read once, verified
// when the handshake was seen; a segment without a handshake proves nothing
// and carries at most one message's evidence (finding 3: one forged TCP
// segment full of scanner messages must not ban).
func TestTCPReassembly(t *testing.T) {
	c := &collector{}
	a := newTestAnalyzer(t, c, nil)
	w := a.newWire(offense.SourceCapture, nil, nil)
	cli := netip.MustParseAddrPort("203.0.113.7:40000")
	srv := netip.MustParseAddrPort("198.51.100.1:5060")
	seg := func(src, dst netip.AddrPort, flags uint8, seq, ack uint32, payload []byte) {
		f := sipcodec.Frame{Src: src, Dst: dst, TCP: true, Flags: flags, Seq: seq, Ack: ack, Payload: payload}
		w.tcp.segment(&f, t0, w.sm, func(msg []byte, verified bool) {
			a.Packet(Packet{Src: f.Src, Dst: f.Dst, TCP: true, Verified: verified, Time: t0, Payload: msg, Source: offense.SourceCapture})
		})
	}
	m := req("OPTIONS", "sip:100@198.51.100.1", "User-Agent: friendly-scanner")
	// Handshake, then the message in three segments.
	seg(cli, srv, sipcodec.TCPSyn, 1000, 0, nil)
	seg(srv, cli, sipcodec.TCPSyn|sipcodec.TCPAck, 5000, 1001, nil)
	seg(cli, srv, sipcodec.TCPAck, 1001, 5001, nil)
	seg(cli, srv, sipcodec.TCPAck, 1001, 5001, m[:30])
	seg(cli, srv, sipcodec.TCPAck, 1031, 5001, m[30:31]) // one byte
	seg(cli, srv, sipcodec.TCPAck, 1031, 5001, m[30:31]) // retransmitted
	seg(cli, srv, sipcodec.TCPAck, 1032, 5001, m[31:])
	if len(c.offs) != 1 || !c.offs[0].Verified || c.offs[0].Rule != offense.ScannerUserAgent {
		t.Fatalf("split message: %+v", c.offs)
	}
	// A forged segment, no handshake: ten messages, one counted, unverified.
	forged := netip.MustParseAddrPort("192.0.2.50:41000")
	var many []byte
	for i := 0; i < 10; i++ {
		many = append(many, req("OPTIONS", fmt.Sprintf("sip:%d@198.51.100.1", 100+i), "User-Agent: friendly-scanner")...)
	}
	seg(forged, srv, sipcodec.TCPAck, 777, 888, many)
	var n int
	for _, o := range c.offs {
		if o.IP == forged.Addr() {
			n++
			if o.Verified {
				t.Errorf("forged segment verified: %+v", o)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d offenses from one forged segment, want 1", n)
	}
	if s := testutil.ToFloat64(a.m.skippedVec.WithLabelValues("capture", "tcp_unverified_extra")); s != 9 {
		t.Errorf("skipped{tcp_unverified_extra} = %v, want 9", s)
	}
	_ = time.Second
}
