package sipcodec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Link types DecodeFrame reads (pcap LINKTYPE_* values).
const (
	LinkNull     = 0   // BSD loopback: 4-byte host-order family
	LinkEthernet = 1   // Ethernet II (and Linux "lo")
	LinkRaw      = 101 // raw IPv4/IPv6
	LinkRawAlt   = 12  // raw IP on some BSDs
	LinkRawAlt2  = 14
	LinkLoop     = 108 // OpenBSD loopback: network-order family
	LinkSLL      = 113 // Linux cooked v1
	LinkSLL2     = 276 // Linux cooked v2
	LinkIPv4     = 228
	LinkIPv6     = 229
)

// Links lists every link type DecodeFrame reads.
var Links = []int{LinkNull, LinkEthernet, LinkRaw, LinkRawAlt, LinkRawAlt2, LinkLoop, LinkSLL, LinkSLL2, LinkIPv4, LinkIPv6}

// TCP flags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPAck = 0x10
)

// Frame is a decoded transport segment or datagram. Payload aliases the
// decoded input (or the Defragmenter's buffer, valid until its next call).
type Frame struct {
	Src, Dst netip.AddrPort
	TCP      bool
	Flags    uint8  // TCP flags
	Seq, Ack uint32 // TCP sequence and acknowledgment numbers
	Payload  []byte
	// Reassembled is true when the datagram was put together from IP
	// fragments.
	Reassembled bool
}

// Errors of DecodeFrame.
var (
	ErrNotIP     = errors.New("not IP")
	ErrNotL4     = errors.New("not UDP/TCP")
	ErrTruncated = errors.New("truncated")
	// ErrFragment: an IP fragment and no Defragmenter was given.
	ErrFragment = errors.New("IP fragment")
	// ErrFragmentHeld: a fragment the Defragmenter keeps until the datagram
	// is whole.
	ErrFragmentHeld = errors.New("IP fragment held for reassembly")
	ErrLinkType     = errors.New("unsupported link type")
)

// DecodeFrame decodes a link-layer frame down to its UDP/TCP payload. It does
// not allocate; the payload aliases data. IP fragments go to d (nil: they are
// refused with ErrFragment); the frame that completes a datagram decodes to
// the whole datagram.
func DecodeFrame(link int, data []byte, f *Frame, d *Defragmenter) error {
	var ethType uint16
	switch link {
	case LinkEthernet:
		if len(data) < 14 {
			return ErrTruncated
		}
		ethType = binary.BigEndian.Uint16(data[12:14])
		data = data[14:]
		for ethType == 0x8100 || ethType == 0x88a8 { // VLAN / QinQ tags
			if len(data) < 4 {
				return ErrTruncated
			}
			ethType = binary.BigEndian.Uint16(data[2:4])
			data = data[4:]
		}
	case LinkSLL:
		if len(data) < 16 {
			return ErrTruncated
		}
		ethType = binary.BigEndian.Uint16(data[14:16])
		data = data[16:]
	case LinkSLL2:
		if len(data) < 20 {
			return ErrTruncated
		}
		ethType = binary.BigEndian.Uint16(data[0:2])
		data = data[20:]
	case LinkNull, LinkLoop:
		if len(data) < 4 {
			return ErrTruncated
		}
		fam := binary.LittleEndian.Uint32(data[:4])
		if link == LinkLoop || fam > 0xffff {
			fam = binary.BigEndian.Uint32(data[:4])
		}
		data = data[4:]
		switch fam {
		case 2:
			ethType = 0x0800
		case 10, 24, 28, 30: // AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, macOS
			ethType = 0x86dd
		default:
			return ErrNotIP
		}
	case LinkRaw, LinkRawAlt, LinkRawAlt2, LinkIPv4, LinkIPv6:
		if len(data) < 1 {
			return ErrTruncated
		}
		switch data[0] >> 4 {
		case 4:
			ethType = 0x0800
		case 6:
			ethType = 0x86dd
		default:
			return ErrNotIP
		}
	default:
		return fmt.Errorf("%w %d", ErrLinkType, link)
	}
	return DecodeIP(ethType, data, f, d)
}

// maxExtHeaders bounds the IPv6 extension header chain walked.
const maxExtHeaders = 8

// DecodeIP decodes an IPv4 (ethType 0x0800) or IPv6 (0x86dd) packet down to
// its UDP/TCP payload, following IPv6 Hop-by-Hop, Routing and
// Destination-Options headers.
func DecodeIP(ethType uint16, data []byte, f *Frame, d *Defragmenter) error {
	var src, dst netip.Addr
	var proto uint8
	reassembled := false
	switch ethType {
	case 0x0800:
		if len(data) < 20 || data[0]>>4 != 4 {
			return ErrTruncated
		}
		ihl := int(data[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(data[2:4]))
		if ihl < 20 || total < ihl || len(data) < ihl {
			return ErrTruncated
		}
		if total <= len(data) {
			data = data[:total] // drop Ethernet padding
		}
		proto = data[9]
		src = netip.AddrFrom4([4]byte(data[12:16]))
		dst = netip.AddrFrom4([4]byte(data[16:20]))
		if fo := binary.BigEndian.Uint16(data[6:8]); fo&0x3fff != 0 { // MF or offset
			if d == nil {
				return ErrFragment
			}
			whole, err := d.add(fragKey{src: src, dst: dst, id: uint32(binary.BigEndian.Uint16(data[4:6])), proto: proto},
				int(fo&0x1fff)*8, fo&0x2000 != 0, data[ihl:])
			if err != nil {
				return err
			}
			data, reassembled = whole, true
		} else {
			data = data[ihl:]
		}
	case 0x86dd:
		if len(data) < 40 || data[0]>>4 != 6 {
			return ErrTruncated
		}
		plen := int(binary.BigEndian.Uint16(data[4:6]))
		proto = data[6]
		src = netip.AddrFrom16([16]byte(data[8:24])).Unmap()
		dst = netip.AddrFrom16([16]byte(data[24:40])).Unmap()
		data = data[40:]
		if plen <= len(data) && plen > 0 {
			data = data[:plen]
		}
	walk:
		for i := 0; ; i++ {
			if i == maxExtHeaders {
				return ErrNotL4
			}
			switch proto {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(data) < 8 {
					return ErrTruncated
				}
				l := (int(data[1]) + 1) * 8
				if len(data) < l {
					return ErrTruncated
				}
				proto = data[0]
				data = data[l:]
			case 44: // fragment
				if len(data) < 8 {
					return ErrTruncated
				}
				if d == nil {
					return ErrFragment
				}
				if reassembled {
					return ErrNotL4 // a fragment inside a fragment
				}
				fo := binary.BigEndian.Uint16(data[2:4])
				id := binary.BigEndian.Uint32(data[4:8])
				whole, err := d.add(fragKey{src: src, dst: dst, id: id, proto: data[0]}, int(fo>>3)*8, fo&1 != 0, data[8:])
				if err != nil {
					return err
				}
				proto, data, reassembled = data[0], whole, true
				// A reassembled datagram may still carry a
				// Destination-Options header.
			default:
				break walk
			}
		}
	default:
		return ErrNotIP
	}
	switch proto {
	case 17:
		if len(data) < 8 {
			return ErrTruncated
		}
		sp, dp := binary.BigEndian.Uint16(data[0:2]), binary.BigEndian.Uint16(data[2:4])
		ulen := int(binary.BigEndian.Uint16(data[4:6]))
		data = data[8:]
		if ulen >= 8 && ulen-8 <= len(data) {
			data = data[:ulen-8]
		}
		*f = Frame{Src: netip.AddrPortFrom(src, sp), Dst: netip.AddrPortFrom(dst, dp), Payload: data, Reassembled: reassembled}
	case 6:
		if len(data) < 20 {
			return ErrTruncated
		}
		sp, dp := binary.BigEndian.Uint16(data[0:2]), binary.BigEndian.Uint16(data[2:4])
		off := int(data[12]>>4) * 4
		if off < 20 || off > len(data) {
			return ErrTruncated
		}
		*f = Frame{Src: netip.AddrPortFrom(src, sp), Dst: netip.AddrPortFrom(dst, dp), TCP: true,
			Flags: data[13], Seq: binary.BigEndian.Uint32(data[4:8]), Ack: binary.BigEndian.Uint32(data[8:12]),
			Payload: data[off:], Reassembled: reassembled}
	default:
		return ErrNotL4
	}
	return nil
}
