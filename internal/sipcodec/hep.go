package sipcodec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// HEP is one decoded HEPv3 packet. Every field is the sender's claim: a HEP
// packet is only as trustworthy as the address it came from.
type HEP struct {
	Src, Dst  netip.AddrPort
	Proto     uint8 // IP protocol claimed: 17 UDP, 6 TCP
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

// IsSIP reports whether h carries SIP (payload type 1, or unset as some
// agents send it) rather than RTCP, logs or QoS reports.
func (h *HEP) IsSIP() bool { return h.ProtoType == 0 || h.ProtoType == 1 }

// AppendHEP appends h encoded as HEPv3 to dst (the chunks FreeSWITCH's
// capture-server writes). A payload longer than the 16-bit length allows is
// an error.
func AppendHEP(dst []byte, h *HEP) ([]byte, error) {
	if !h.Src.IsValid() || !h.Dst.IsValid() {
		return dst, ErrHEPMissing
	}
	v4 := h.Src.Addr().Is4() && h.Dst.Addr().Is4()
	start := len(dst)
	dst = append(dst, "HEP3\x00\x00"...)
	chunk := func(typ uint16, data ...byte) {
		dst = binary.BigEndian.AppendUint16(dst, 0)
		dst = binary.BigEndian.AppendUint16(dst, typ)
		dst = binary.BigEndian.AppendUint16(dst, uint16(6+len(data)))
		dst = append(dst, data...)
	}
	if v4 {
		chunk(hepIPFamily, 2)
	} else {
		chunk(hepIPFamily, 10)
	}
	proto := h.Proto
	if proto == 0 {
		proto = 17
	}
	chunk(hepIPProto, proto)
	if v4 {
		s, d := h.Src.Addr().As4(), h.Dst.Addr().As4()
		chunk(hepSrcIP4, s[:]...)
		chunk(hepDstIP4, d[:]...)
	} else {
		s, d := h.Src.Addr().As16(), h.Dst.Addr().As16()
		chunk(hepSrcIP6, s[:]...)
		chunk(hepDstIP6, d[:]...)
	}
	chunk(hepSrcPort, byte(h.Src.Port()>>8), byte(h.Src.Port()))
	chunk(hepDstPort, byte(h.Dst.Port()>>8), byte(h.Dst.Port()))
	if !h.Time.IsZero() {
		chunk(hepTimeSec, binary.BigEndian.AppendUint32(nil, uint32(h.Time.Unix()))...)
		chunk(hepTimeUsec, binary.BigEndian.AppendUint32(nil, uint32(h.Time.Nanosecond()/1000))...)
	}
	pt := h.ProtoType
	if pt == 0 {
		pt = 1
	}
	chunk(hepProtoType, pt)
	chunk(hepCaptureID, binary.BigEndian.AppendUint32(nil, h.CaptureID)...)
	if len(h.Payload) > 0xffff-6 || len(dst)-start+6+len(h.Payload) > 0xffff {
		return dst[:start], fmt.Errorf("%w: payload of %d bytes too long", ErrHEPChunk, len(h.Payload))
	}
	chunk(hepPayload, h.Payload...)
	binary.BigEndian.PutUint16(dst[start+4:], uint16(len(dst)-start))
	return dst, nil
}
