package sip

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// Link types we decode (pcap LINKTYPE_* values).
const (
	linkNull     = 0   // BSD loopback: 4-byte host-order family
	linkEthernet = 1   // Ethernet II (and Linux "lo")
	linkRaw      = 101 // raw IPv4/IPv6
	linkRawAlt   = 12  // raw IP on some BSDs
	linkRawAlt2  = 14
	linkLoop     = 108 // OpenBSD loopback: network-order family
	linkSLL      = 113 // Linux cooked v1
	linkSLL2     = 276 // Linux cooked v2
	linkIPv4     = 228
	linkIPv6     = 229
)

// frame is a decoded transport payload.
type frame struct {
	src, dst netip.AddrPort
	tcp      bool
	payload  []byte
}

var (
	errNotIP     = errors.New("not IP")
	errNotL4     = errors.New("not UDP/TCP")
	errTruncated = errors.New("truncated")
	errFragment  = errors.New("IP fragment")
	errLinkType  = errors.New("unsupported link type")
)

// decodeFrame decodes a link-layer frame down to its UDP/TCP payload. It does
// not allocate; the payload aliases data.
func decodeFrame(link int, data []byte, f *frame) error {
	var ethType uint16
	switch link {
	case linkEthernet:
		if len(data) < 14 {
			return errTruncated
		}
		ethType = binary.BigEndian.Uint16(data[12:14])
		data = data[14:]
		for ethType == 0x8100 || ethType == 0x88a8 { // VLAN / QinQ tags
			if len(data) < 4 {
				return errTruncated
			}
			ethType = binary.BigEndian.Uint16(data[2:4])
			data = data[4:]
		}
	case linkSLL:
		if len(data) < 16 {
			return errTruncated
		}
		ethType = binary.BigEndian.Uint16(data[14:16])
		data = data[16:]
	case linkSLL2:
		if len(data) < 20 {
			return errTruncated
		}
		ethType = binary.BigEndian.Uint16(data[0:2])
		data = data[20:]
	case linkNull, linkLoop:
		if len(data) < 4 {
			return errTruncated
		}
		fam := binary.LittleEndian.Uint32(data[:4])
		if link == linkLoop || fam > 0xffff {
			fam = binary.BigEndian.Uint32(data[:4])
		}
		data = data[4:]
		switch fam {
		case 2:
			ethType = 0x0800
		case 10, 24, 28, 30: // AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, macOS
			ethType = 0x86dd
		default:
			return errNotIP
		}
	case linkRaw, linkRawAlt, linkRawAlt2, linkIPv4, linkIPv6:
		if len(data) < 1 {
			return errTruncated
		}
		switch data[0] >> 4 {
		case 4:
			ethType = 0x0800
		case 6:
			ethType = 0x86dd
		default:
			return errNotIP
		}
	default:
		return fmt.Errorf("%w %d", errLinkType, link)
	}
	return decodeIP(ethType, data, f)
}

func decodeIP(ethType uint16, data []byte, f *frame) error {
	var src, dst netip.Addr
	var proto uint8
	switch ethType {
	case 0x0800:
		if len(data) < 20 || data[0]>>4 != 4 {
			return errTruncated
		}
		ihl := int(data[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(data[2:4]))
		if ihl < 20 || total < ihl || len(data) < ihl {
			return errTruncated
		}
		if total <= len(data) {
			data = data[:total] // drop Ethernet padding
		}
		if binary.BigEndian.Uint16(data[6:8])&0x3fff != 0 { // MF or offset
			return errFragment
		}
		proto = data[9]
		src = netip.AddrFrom4([4]byte(data[12:16]))
		dst = netip.AddrFrom4([4]byte(data[16:20]))
		data = data[ihl:]
	case 0x86dd:
		if len(data) < 40 || data[0]>>4 != 6 {
			return errTruncated
		}
		plen := int(binary.BigEndian.Uint16(data[4:6]))
		proto = data[6]
		src = netip.AddrFrom16([16]byte(data[8:24])).Unmap()
		dst = netip.AddrFrom16([16]byte(data[24:40])).Unmap()
		data = data[40:]
		if plen <= len(data) && plen > 0 {
			data = data[:plen]
		}
		// Walk the common extension headers.
		for i := 0; i < 8; i++ {
			switch proto {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(data) < 8 {
					return errTruncated
				}
				l := (int(data[1]) + 1) * 8
				if len(data) < l {
					return errTruncated
				}
				proto = data[0]
				data = data[l:]
				continue
			case 44: // fragment
				return errFragment
			}
			break
		}
	default:
		return errNotIP
	}
	switch proto {
	case 17:
		if len(data) < 8 {
			return errTruncated
		}
		sp, dp := binary.BigEndian.Uint16(data[0:2]), binary.BigEndian.Uint16(data[2:4])
		ulen := int(binary.BigEndian.Uint16(data[4:6]))
		data = data[8:]
		if ulen >= 8 && ulen-8 <= len(data) {
			data = data[:ulen-8]
		}
		*f = frame{src: netip.AddrPortFrom(src, sp), dst: netip.AddrPortFrom(dst, dp), payload: data}
	case 6:
		if len(data) < 20 {
			return errTruncated
		}
		sp, dp := binary.BigEndian.Uint16(data[0:2]), binary.BigEndian.Uint16(data[2:4])
		off := int(data[12]>>4) * 4
		if off < 20 || off > len(data) {
			return errTruncated
		}
		*f = frame{src: netip.AddrPortFrom(src, sp), dst: netip.AddrPortFrom(dst, dp), tcp: true, payload: data[off:]}
	default:
		return errNotL4
	}
	return nil
}

// IsCapture reports whether head (the first bytes of a file) is a pcap or
// pcapng capture.
func IsCapture(head []byte) bool {
	if len(head) < 4 {
		return false
	}
	switch binary.LittleEndian.Uint32(head[:4]) {
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1, 0x0a0d0d0a:
		return true
	}
	return false
}

// packetSource is what pcapgo's readers have in common.
type packetSource interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// ReadCapture feeds every SIP message of a pcap or pcapng stream to a, with
// the packets' own timestamps and Source pcap. HEPv3 datagrams inside (UDP to
// or from port 9060, or any UDP payload starting "HEP3") are unwrapped. It
// returns the number of packets read; undecodable packets are counted and
// skipped, and a truncated file ends the read without error.
func ReadCapture(ctx context.Context, r io.Reader, a *Analyzer) (packets int, err error) {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	head, _ := br.Peek(4)
	if !IsCapture(head) {
		return 0, errors.New("not a pcap or pcapng capture")
	}
	var src packetSource
	linkOf := func(gopacket.CaptureInfo) int { return 0 }
	if binary.LittleEndian.Uint32(head) == 0x0a0d0d0a {
		ng, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return 0, fmt.Errorf("pcapng: %w", err)
		}
		src = ng
		linkOf = func(ci gopacket.CaptureInfo) int {
			if i, err := ng.Interface(ci.InterfaceIndex); err == nil {
				return int(i.LinkType)
			}
			return int(ng.LinkType())
		}
	} else {
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return 0, fmt.Errorf("pcap: %w", err)
		}
		src = pr
		lt := int(pr.LinkType())
		linkOf = func(gopacket.CaptureInfo) int { return lt }
	}
	sm := a.m.source(offense.SourcePCAP)
	for {
		if packets&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return packets, err
			}
		}
		data, ci, err := src.ZeroCopyReadPacketData()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return packets, nil
			}
			return packets, fmt.Errorf("read packet %d: %w", packets+1, err)
		}
		packets++
		a.frame(linkOf(ci), data, ci.Timestamp, offense.SourcePCAP, sm, nil)
	}
}

// frame decodes one captured frame and hands its SIP (or HEP-wrapped SIP) to
// the analyzer. ports, when non-nil, restricts SIP to those ports.
func (a *Analyzer) frame(link int, data []byte, ts time.Time, source offense.Source, sm *srcMetrics, ports map[uint16]bool) {
	var f frame
	if err := decodeFrame(link, data, &f); err != nil {
		switch {
		case errors.Is(err, errFragment):
			sm.skipped("fragment")
		case errors.Is(err, errTruncated):
			sm.parseErrors.Inc()
		default:
			sm.skipped("not_sip")
		}
		return
	}
	if !f.tcp && len(f.payload) >= 4 && string(f.payload[:4]) == "HEP3" {
		var h HEP
		if err := DecodeHEP(f.payload, &h); err != nil {
			sm.parseErrors.Inc()
			return
		}
		p, ok := hepPacket(&h, source)
		if !ok {
			sm.skipped("not_sip")
			return
		}
		if p.Time.IsZero() {
			p.Time = ts
		}
		a.Packet(p)
		return
	}
	if f.src.Port() == 9060 || f.dst.Port() == 9060 {
		if !f.tcp {
			sm.parseErrors.Inc() // HEP port, not HEP
			return
		}
	}
	if !a.isSIPPort(f.src.Port(), f.dst.Port(), ports) && !looksLikeStartLine(f.payload) {
		if len(f.payload) > 0 {
			sm.skipped("not_sip")
		}
		return
	}
	if f.tcp && len(f.payload) == 0 {
		return // SYN, ACK, FIN
	}
	a.Packet(Packet{Src: f.src, Dst: f.dst, TCP: f.tcp, Time: ts, Payload: f.payload, Source: source})
}

func (a *Analyzer) isSIPPort(sp, dp uint16, ports map[uint16]bool) bool {
	if ports != nil {
		return ports[sp] || ports[dp]
	}
	for _, p := range a.cfg.SIPPorts {
		if int(sp) == p || int(dp) == p {
			return true
		}
	}
	return false
}
