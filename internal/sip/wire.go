package sip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/sipcodec"
)

// IsCapture reports whether head (the first bytes of a file) is a pcap or
// pcapng capture.
func IsCapture(head []byte) bool { return sipcodec.IsCapture(head) }

// wire turns captured frames (live or from a file) into Packets: IP
// fragments are reassembled, TCP is reassembled per flow and its handshake
// tracked. One wire serves one capture; it is not safe for concurrent use.
type wire struct {
	a      *Analyzer
	source offense.Source
	sm     *srcMetrics
	ports  map[uint16]bool // nil: the analyzer's SIPPorts
	defrag sipcodec.Defragmenter
	tcp    *tcpStreams
	// hep, when set, unwraps HEPv3 datagrams whose outer source it allows
	// (a recorded capture of FreeSWITCH's capture-server). Live capture
	// leaves it nil: HEP is read only by the HEP listener.
	hep *HEPOptions
}

func (a *Analyzer) newWire(source offense.Source, ports map[uint16]bool, hep *HEPOptions) *wire {
	return &wire{a: a, source: source, sm: a.m.source(source), ports: ports, tcp: newTCPStreams(), hep: hep}
}

// CaptureOptions configure ReadCapture.
type CaptureOptions struct {
	// HEP, when non-nil, unwraps the HEPv3 datagrams of the capture sent by
	// the addresses it allows (FreeSWITCH's capture-server traffic). Nil:
	// HEP inside a capture is not read.
	HEP *HEPOptions
}

// ReadCapture feeds every SIP message of a pcap or pcapng stream to a, with
// the packets' own timestamps and Source pcap. It returns the number of
// packets read; undecodable packets are counted and skipped, and a truncated
// file ends the read without error.
func ReadCapture(ctx context.Context, r io.Reader, a *Analyzer, o CaptureOptions) (packets int, err error) {
	cr, err := sipcodec.NewCaptureReader(r)
	if err != nil {
		return 0, err
	}
	w := a.newWire(offense.SourcePCAP, nil, o.HEP)
	for {
		if packets&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return packets, err
			}
		}
		data, link, ts, err := cr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return packets, nil
			}
			return packets, fmt.Errorf("read packet %d: %w", packets+1, err)
		}
		packets++
		w.frame(link, data, ts)
	}
}

// frame decodes one captured frame and hands its SIP to the analyzer.
func (w *wire) frame(link int, data []byte, ts time.Time) {
	var f sipcodec.Frame
	if err := sipcodec.DecodeFrame(link, data, &f, &w.defrag); err != nil {
		switch {
		case errors.Is(err, sipcodec.ErrFragmentHeld):
		case errors.Is(err, sipcodec.ErrFragmentOverlap), errors.Is(err, sipcodec.ErrFragmentTooBig), errors.Is(err, sipcodec.ErrFragment):
			w.sm.skipped("fragment")
		case errors.Is(err, sipcodec.ErrTruncated):
			w.sm.parseErrors.Inc()
		default:
			w.sm.skipped("not_sip")
		}
		return
	}
	if !f.TCP && len(f.Payload) >= 4 && string(f.Payload[:4]) == "HEP3" {
		w.unwrapHEP(&f, ts)
		return
	}
	if f.Src.Port() == 9060 || f.Dst.Port() == 9060 {
		if !f.TCP {
			w.sm.parseErrors.Inc() // HEP port, not HEP
			return
		}
	}
	if !w.isSIPPort(f.Src.Port(), f.Dst.Port()) && !looksLikeStartLine(skipLeadingSpace(f.Payload)) &&
		!(f.TCP && w.tcp.tracked(&f)) {
		if len(f.Payload) > 0 {
			w.sm.skipped("not_sip")
		}
		return
	}
	if f.TCP {
		w.tcp.segment(&f, ts, w.sm, func(msg []byte, verified bool) {
			w.a.Packet(Packet{Src: f.Src, Dst: f.Dst, TCP: true, Verified: verified, Time: ts, Payload: msg, Source: w.source})
		})
		return
	}
	w.a.Packet(Packet{Src: f.Src, Dst: f.Dst, Time: ts, Payload: f.Payload, Source: w.source})
}

// unwrapHEP reads a HEP datagram found in a capture.
func (w *wire) unwrapHEP(f *sipcodec.Frame, ts time.Time) {
	if w.hep == nil {
		w.sm.skipped("hep")
		return
	}
	if !w.hep.allowed(f.Src.Addr()) {
		w.sm.skipped("hep_sender")
		return
	}
	var h HEP
	if err := DecodeHEP(f.Payload, &h); err != nil {
		w.sm.parseErrors.Inc()
		return
	}
	if len(w.hep.CaptureIDs) > 0 && !containsU32(w.hep.CaptureIDs, h.CaptureID) {
		w.sm.skipped("hep_capture_id")
		return
	}
	p, ok := hepPacket(&h, w.source)
	if !ok {
		w.sm.skipped("not_sip")
		return
	}
	if p.Time.IsZero() {
		p.Time = ts
	}
	w.a.Packet(p)
}

func containsU32(l []uint32, v uint32) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}

func (w *wire) isSIPPort(sp, dp uint16) bool {
	if w.ports != nil {
		return w.ports[sp] || w.ports[dp]
	}
	for _, p := range w.a.cfg.SIPPorts {
		if int(sp) == p || int(dp) == p {
			return true
		}
	}
	return false
}
