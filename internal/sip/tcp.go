package sip

import (
	"net/netip"
	"time"

	"github.com/sipwarden/sipwarden/internal/sipcodec"
)

// Bounds of TCP reassembly: a flood of forged segments costs at most
// maxTCPFlows small records and maxTCPBuffered bytes in total.
const (
	maxTCPFlows    = 16384
	maxTCPMessage  = 64 << 10 // a message larger than this is dropped
	maxTCPBuffered = 16 << 20
	tcpIdle        = 2 * time.Minute
)

type flowKey struct{ src, dst netip.AddrPort }

// tcpFlow is one direction of a TCP connection.
type tcpFlow struct {
	next    uint32 // next expected sequence number
	started bool   // next is known
	resync  bool   // after a gap: wait for a segment that starts a message
	buf     []byte // bytes of an incomplete message
	// The handshake: the peer's SYN-ACK (its ISN) seen, then this side's
	// ACK of it. Only then did this side's address receive our peer's
	// packet: a forged source cannot complete it.
	peerISN   uint32
	synAck    bool
	handshake bool
	last      int64
}

// tcpStreams reassembles TCP per flow into whole SIP messages.
type tcpStreams struct {
	flows    map[flowKey]*tcpFlow
	buffered int
	n        uint64
}

func newTCPStreams() *tcpStreams { return &tcpStreams{flows: make(map[flowKey]*tcpFlow)} }

func (s *tcpStreams) tracked(f *sipcodec.Frame) bool {
	_, ok := s.flows[flowKey{f.Src, f.Dst}]
	if !ok {
		_, ok = s.flows[flowKey{f.Dst, f.Src}]
	}
	return ok
}

func (s *tcpStreams) get(k flowKey, now int64) *tcpFlow {
	fl := s.flows[k]
	if fl == nil {
		if len(s.flows) >= maxTCPFlows {
			for k2, old := range s.flows { // random victim
				s.drop(k2, old)
				break
			}
		}
		fl = &tcpFlow{}
		s.flows[k] = fl
	}
	fl.last = now
	return fl
}

func (s *tcpStreams) drop(k flowKey, fl *tcpFlow) {
	s.buffered -= len(fl.buf)
	delete(s.flows, k)
}

func (s *tcpStreams) sweep(now int64) {
	for k, fl := range s.flows {
		if now-fl.last > int64(tcpIdle) {
			s.drop(k, fl)
		}
	}
}

// seqLE reports a <= b in sequence space.
func seqLE(a, b uint32) bool { return int32(b-a) >= 0 }

// segment files one segment and calls emit for every whole message it
// completes, with verified true when the flow's handshake was seen and the
// segment came in sequence.
func (s *tcpStreams) segment(f *sipcodec.Frame, ts time.Time, sm *srcMetrics, emit func(msg []byte, verified bool)) {
	now := ts.UnixNano()
	s.n++
	if s.n%4096 == 0 {
		s.sweep(now)
	}
	k := flowKey{f.Src, f.Dst}
	switch {
	case f.Flags&sipcodec.TCPRst != 0:
		if fl := s.flows[k]; fl != nil {
			s.drop(k, fl)
		}
		if fl := s.flows[flowKey{f.Dst, f.Src}]; fl != nil {
			s.drop(flowKey{f.Dst, f.Src}, fl)
		}
		return
	case f.Flags&(sipcodec.TCPSyn|sipcodec.TCPAck) == sipcodec.TCPSyn|sipcodec.TCPAck:
		// The answer to the peer's SYN: remember our ISN for the peer's
		// flow, and start ours.
		peer := s.get(flowKey{f.Dst, f.Src}, now)
		peer.peerISN, peer.synAck, peer.handshake = f.Seq, true, false
		fl := s.get(k, now)
		s.reset(fl, f.Seq+1)
		return
	case f.Flags&sipcodec.TCPSyn != 0:
		fl := s.get(k, now)
		s.reset(fl, f.Seq+1)
		fl.synAck, fl.handshake = false, false
		return
	}
	fl := s.flows[k]
	if fl == nil {
		if len(f.Payload) == 0 {
			return
		}
		fl = s.get(k, now)
	}
	fl.last = now
	if fl.synAck && f.Flags&sipcodec.TCPAck != 0 && f.Ack-(fl.peerISN+1) < 1<<30 {
		fl.handshake = true
	}
	if len(f.Payload) > 0 {
		s.data(fl, f, sm, emit)
	}
	if f.Flags&sipcodec.TCPFin != 0 {
		s.drop(k, fl)
	}
}

func (s *tcpStreams) reset(fl *tcpFlow, next uint32) {
	s.buffered -= len(fl.buf)
	fl.buf, fl.next, fl.started, fl.resync = nil, next, true, false
}

func (s *tcpStreams) data(fl *tcpFlow, f *sipcodec.Frame, sm *srcMetrics, emit func([]byte, bool)) {
	p := f.Payload
	seq := f.Seq
	inSeq := true
	if !fl.started {
		fl.started, fl.next = true, seq
		inSeq = false // first bytes of a flow whose start we missed
	}
	switch {
	case seq == fl.next:
	case seqLE(seq+uint32(len(p)), fl.next):
		sm.skipped("tcp_retransmission")
		return
	case seqLE(seq, fl.next): // overlaps what we have: keep the new tail
		p = p[fl.next-seq:]
	default: // a gap: what we hold can never complete
		sm.skipped("tcp_gap")
		s.reset(fl, seq)
		fl.resync = true
		inSeq = false
	}
	fl.next = seq + uint32(len(f.Payload))
	verified := inSeq && fl.handshake && !fl.resync
	if fl.resync {
		if len(fl.buf) == 0 && !looksLikeStartLine(skipLeadingSpace(p)) {
			sm.skipped("tcp_continuation")
			return
		}
		fl.resync = false
		fl.handshake = false // a gap: the rest of this flow proves nothing
	}
	var b []byte
	if len(fl.buf) == 0 {
		b = p // the common case: whole messages in one segment, no copy
	} else {
		if len(fl.buf)+len(p) > maxTCPMessage || s.buffered+len(p) > maxTCPBuffered {
			sm.skipped("tcp_overflow")
			s.reset(fl, fl.next)
			fl.resync = true
			return
		}
		fl.buf = append(fl.buf, p...)
		s.buffered += len(p)
		b = fl.buf
	}
	emitted := 0
	for {
		b = skipLeadingSpace(b)
		if len(b) == 0 {
			break
		}
		if !looksLikeStartLine(b) && len(b) >= 24 {
			sm.skipped("tcp_continuation")
			b = nil
			fl.resync = true
			break
		}
		n := tcpMessageLen(b)
		if n < 0 {
			break
		}
		// A segment that proves no round trip is one forged packet: it
		// may carry one message's evidence, not a pipeline of them.
		if verified || emitted == 0 {
			emit(b[:n], verified)
		} else {
			sm.skipped("tcp_unverified_extra")
		}
		emitted++
		b = b[n:]
	}
	// Keep the incomplete rest (a copy: p aliases the capture buffer).
	rest := len(b)
	if rest > maxTCPMessage || s.buffered-len(fl.buf)+rest > maxTCPBuffered {
		sm.skipped("tcp_overflow")
		rest, fl.resync = 0, true
	}
	kept := append([]byte(nil), b[len(b)-rest:]...)
	if rest == 0 {
		kept = nil
	}
	s.buffered += len(kept) - len(fl.buf)
	fl.buf = kept
}
