package sip

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// HEP is one decoded HEPv3 packet.
type HEP struct {
	Src, Dst  netip.AddrPort
	Proto     uint8 // IP protocol: 17 UDP, 6 TCP
	ProtoType uint8 // HEP payload type: 1 is SIP
	Time      time.Time
	CaptureID uint32
	Payload   []byte // points into the decoded buffer
}

// HEPv3 chunk types (vendor 0).
const (
	hepIPFamily   = 1
	hepIPProto    = 2
	hepSrcIP4     = 3
	hepDstIP4     = 4
	hepSrcIP6     = 5
	hepDstIP6     = 6
	hepSrcPort    = 7
	hepDstPort    = 8
	hepTimeSec    = 9
	hepTimeUsec   = 10
	hepProtoType  = 11
	hepCaptureID  = 12
	hepPayload    = 15
	hepCompressed = 16
)

// Errors of DecodeHEP.
var (
	ErrHEPShort   = errors.New("hep: short packet")
	ErrHEPMagic   = errors.New("hep: not HEPv3")
	ErrHEPChunk   = errors.New("hep: bad chunk")
	ErrHEPMissing = errors.New("hep: missing address, port or payload")
)

// DecodeHEP decodes a HEPv3 packet. It does not allocate; Payload aliases b.
func DecodeHEP(b []byte, h *HEP) error {
	*h = HEP{}
	if len(b) < 6 {
		return ErrHEPShort
	}
	if string(b[:4]) != "HEP3" {
		return ErrHEPMagic
	}
	total := int(binary.BigEndian.Uint16(b[4:6]))
	if total < 6 || total > len(b) {
		return fmt.Errorf("%w: length %d of %d", ErrHEPShort, total, len(b))
	}
	b = b[6:total]
	var (
		family            uint8
		src4, dst4        [4]byte
		src6, dst6        [16]byte
		have              uint16 // bit per chunk type seen
		sec, usec         uint32
		srcPort, dstPort  uint16
		payloadCompressed bool
	)
	for len(b) > 0 {
		if len(b) < 6 {
			return fmt.Errorf("%w: trailing %d bytes", ErrHEPChunk, len(b))
		}
		vendor := binary.BigEndian.Uint16(b[0:2])
		typ := binary.BigEndian.Uint16(b[2:4])
		l := int(binary.BigEndian.Uint16(b[4:6]))
		if l < 6 || l > len(b) {
			return fmt.Errorf("%w: type %d length %d", ErrHEPChunk, typ, l)
		}
		d := b[6:l]
		b = b[l:]
		if vendor != 0 {
			continue
		}
		fixed := func(n int) bool { return len(d) == n }
		ok := true
		switch typ {
		case hepIPFamily:
			ok = fixed(1)
			if ok {
				family = d[0]
			}
		case hepIPProto:
			ok = fixed(1)
			if ok {
				h.Proto = d[0]
			}
		case hepSrcIP4:
			ok = fixed(4)
			copy(src4[:], d)
		case hepDstIP4:
			ok = fixed(4)
			copy(dst4[:], d)
		case hepSrcIP6:
			ok = fixed(16)
			copy(src6[:], d)
		case hepDstIP6:
			ok = fixed(16)
			copy(dst6[:], d)
		case hepSrcPort:
			ok = fixed(2)
			if ok {
				srcPort = binary.BigEndian.Uint16(d)
			}
		case hepDstPort:
			ok = fixed(2)
			if ok {
				dstPort = binary.BigEndian.Uint16(d)
			}
		case hepTimeSec:
			ok = fixed(4)
			if ok {
				sec = binary.BigEndian.Uint32(d)
			}
		case hepTimeUsec:
			ok = fixed(4)
			if ok {
				usec = binary.BigEndian.Uint32(d)
			}
		case hepProtoType:
			ok = fixed(1)
			if ok {
				h.ProtoType = d[0]
			}
		case hepCaptureID:
			ok = fixed(4)
			if ok {
				h.CaptureID = binary.BigEndian.Uint32(d)
			}
		case hepPayload:
			h.Payload = d
		case hepCompressed:
			payloadCompressed = true
		}
		if !ok {
			return fmt.Errorf("%w: type %d length %d", ErrHEPChunk, typ, len(d))
		}
		if typ < 16 {
			have |= 1 << typ
		}
	}
	need := uint16(1<<hepSrcPort | 1<<hepDstPort)
	switch family {
	case 2: // AF_INET
		need |= 1<<hepSrcIP4 | 1<<hepDstIP4
		if have&need == need {
			h.Src = netip.AddrPortFrom(netip.AddrFrom4(src4), srcPort)
			h.Dst = netip.AddrPortFrom(netip.AddrFrom4(dst4), dstPort)
		}
	case 10: // AF_INET6
		need |= 1<<hepSrcIP6 | 1<<hepDstIP6
		if have&need == need {
			h.Src = netip.AddrPortFrom(netip.AddrFrom16(src6).Unmap(), srcPort)
			h.Dst = netip.AddrPortFrom(netip.AddrFrom16(dst6).Unmap(), dstPort)
		}
	default:
		return fmt.Errorf("%w: ip family %d", ErrHEPMissing, family)
	}
	if have&need != need {
		return ErrHEPMissing
	}
	if h.Payload == nil {
		if payloadCompressed {
			return fmt.Errorf("%w: compressed payload not supported", ErrHEPMissing)
		}
		return ErrHEPMissing
	}
	if have&(1<<hepTimeSec) != 0 {
		if usec >= 1_000_000 {
			return fmt.Errorf("%w: usec %d", ErrHEPChunk, usec)
		}
		h.Time = time.Unix(int64(sec), int64(usec)*1000)
	}
	return nil
}

// hepPacket turns a decoded HEP into a Packet; ok is false for non-SIP HEP
// (RTCP, logs) that the analyzer must not see.
func hepPacket(h *HEP, src offense.Source) (Packet, bool) {
	if h.ProtoType != 0 && h.ProtoType != 1 {
		return Packet{}, false
	}
	return Packet{Src: h.Src, Dst: h.Dst, TCP: h.Proto == 6, Time: h.Time, Payload: h.Payload, Source: src}, true
}

// HEPListener receives HEPv3 over UDP (FreeSWITCH sofia capture-server) and
// feeds the SIP inside to an Analyzer.
type HEPListener struct {
	conn      net.PacketConn
	a         *Analyzer
	log       *slog.Logger
	packets   prometheus.Counter
	errors    prometheus.Counter
	nonSIP    prometheus.Counter
	closeOnce sync.Once
}

// NewHEPListener binds addr (UDP) at once, so that a busy port fails start-up
// and Addr is known before Run. reg nil: a private registry.
func NewHEPListener(addr string, a *Analyzer, log *slog.Logger, reg prometheus.Registerer) (*HEPListener, error) {
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
	return &HEPListener{
		conn: conn, a: a, log: log.With("component", "hep"),
		packets: pk, nonSIP: ns,
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
	buf := make([]byte, 65536)
	var h HEP
	for {
		n, _, err := l.conn.ReadFrom(buf)
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
		if err := DecodeHEP(buf[:n], &h); err != nil {
			l.errors.Inc()
			l.log.Debug("bad HEP datagram", "err", err, "bytes", n)
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
