package sip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/sipcodec"
)

// HEP is a decoded HEPv3 packet (see package sipcodec).
type HEP = sipcodec.HEP

// DecodeHEP decodes a HEPv3 packet (see sipcodec.DecodeHEP).
func DecodeHEP(b []byte, h *HEP) error { return sipcodec.DecodeHEP(b, h) }

// Reasons a HEP datagram is refused (sipwarden_sip_hep_refused_total).
const (
	HEPRefusedSender    = "sender"     // not from a sip.hep_allow address
	HEPRefusedCaptureID = "capture_id" // a capture_id not in sip.hep_capture_ids
	HEPRefusedDecode    = "decode"     // not a well-formed HEPv3 packet
)

// hepPacket turns a decoded HEP into a Packet; ok is false for non-SIP HEP
// (RTCP, logs) that the analyzer must not see. The transport HEP claims is
// used to frame the payload, never to mark evidence verified: a HEP packet
// proves no round trip with the address inside it.
func hepPacket(h *HEP, src offense.Source) (Packet, bool) {
	if !h.IsSIP() {
		return Packet{}, false
	}
	return Packet{Src: h.Src, Dst: h.Dst, TCP: h.Proto == 6, Time: h.Time, Payload: h.Payload, Source: src}, true
}

// HEPOptions restrict what a HEPListener accepts.
type HEPOptions struct {
	// Allow lists the prefixes HEP may come from (the datagram's own source
	// address, which a UDP sender on the Internet can forge but a local
	// user cannot). Empty: loopback only.
	Allow []netip.Prefix
	// CaptureIDs, when not empty, are the only HEP capture_id values taken.
	CaptureIDs []uint32
}

// allowed reports whether HEP from ip is taken.
func (o *HEPOptions) allowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	if len(o.Allow) == 0 {
		return ip.IsLoopback()
	}
	for _, p := range o.Allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// HEPListener receives HEPv3 over UDP (FreeSWITCH sofia capture-server) and
// feeds the SIP inside to an Analyzer. It is the only reader of HEP in the
// daemon: live capture never unwraps it.
type HEPListener struct {
	conn      net.PacketConn
	a         *Analyzer
	opt       HEPOptions
	log       *slog.Logger
	packets   prometheus.Counter
	errors    prometheus.Counter
	nonSIP    prometheus.Counter
	refused   *prometheus.CounterVec
	closeOnce sync.Once
}

// NewHEPListener binds addr (UDP) at once, so that a busy port fails start-up
// and Addr is known before Run. reg nil: a private registry.
func NewHEPListener(addr string, a *Analyzer, o HEPOptions, log *slog.Logger, reg prometheus.Registerer) (*HEPListener, error) {
	if a == nil {
		return nil, errors.New("hep: nil analyzer")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("hep listen %s: %w", addr, err)
	}
	if uc, ok := conn.(*net.UDPConn); ok {
		_ = uc.SetReadBuffer(4 << 20)
	}
	f := promauto.With(reg)
	pk := f.NewCounter(prometheus.CounterOpts{
		Namespace: offense.Namespace, Subsystem: "sip", Name: "hep_packets_total",
		Help: "HEP datagrams received.",
	})
	ns := f.NewCounter(prometheus.CounterOpts{
		Namespace: offense.Namespace, Subsystem: "sip", Name: "hep_non_sip_total",
		Help: "HEP datagrams carrying something other than SIP (skipped).",
	})
	refused := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: offense.Namespace, Subsystem: "sip", Name: "hep_refused_total",
		Help: "HEP datagrams refused, by reason: sender (not in sip.hep_allow), capture_id (not in sip.hep_capture_ids), decode (not HEPv3).",
	}, []string{"reason"})
	for _, r := range []string{HEPRefusedSender, HEPRefusedCaptureID, HEPRefusedDecode} {
		refused.WithLabelValues(r)
	}
	o.Allow = slices.Clone(o.Allow)
	o.CaptureIDs = slices.Clone(o.CaptureIDs)
	return &HEPListener{
		conn: conn, a: a, opt: o, log: log.With("component", "hep"),
		packets: pk, nonSIP: ns, refused: refused,
		errors: a.m.source(offense.SourceHEP).parseErrors,
	}, nil
}

// Addr is the bound address.
func (l *HEPListener) Addr() net.Addr { return l.conn.LocalAddr() }

// Close releases the socket (Run does it too).
func (l *HEPListener) Close() error {
	var err error
	l.closeOnce.Do(func() { err = l.conn.Close() })
	return err
}

// Run reads datagrams until ctx is cancelled; it returns nil then.
func (l *HEPListener) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer l.Close()
	uc, _ := l.conn.(*net.UDPConn)
	buf := make([]byte, 65536)
	var h HEP
	refSender := l.refused.WithLabelValues(HEPRefusedSender)
	refID := l.refused.WithLabelValues(HEPRefusedCaptureID)
	refDecode := l.refused.WithLabelValues(HEPRefusedDecode)
	for {
		var n int
		var from netip.AddrPort
		var err error
		if uc != nil {
			n, from, err = uc.ReadFromUDPAddrPort(buf)
		} else {
			var a net.Addr
			n, a, err = l.conn.ReadFrom(buf)
			if ua, ok := a.(*net.UDPAddr); ok {
				from = ua.AddrPort()
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("hep read: %w", err)
		}
		l.packets.Inc()
		if !l.opt.allowed(from.Addr()) {
			refSender.Inc()
			l.log.Debug("HEP refused: sender not in sip.hep_allow", "from", from.Addr())
			continue
		}
		if err := DecodeHEP(buf[:n], &h); err != nil {
			l.errors.Inc()
			refDecode.Inc()
			l.log.Debug("bad HEP datagram", "err", err, "bytes", n)
			continue
		}
		if len(l.opt.CaptureIDs) > 0 && !slices.Contains(l.opt.CaptureIDs, h.CaptureID) {
			refID.Inc()
			continue
		}
		p, ok := hepPacket(&h, offense.SourceHEP)
		if !ok {
			l.nonSIP.Inc()
			continue
		}
		l.a.Packet(p)
	}
}
