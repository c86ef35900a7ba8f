package ipset

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/sipwarden/sipwarden/internal/ban"
)

// Batched adds. The netlink library sends one message and waits for its ACK
// per add: two system calls per entry. Under a flood the writer hands many
// entries at once to AddBatch, which packs them into one datagram (the
// kernel runs each message in order, like `ipset restore`), asks for an ACK
// only on the last one and reads back errors by sequence number.
//
// netlink.Handle does not expose its socket, so batches use a second raw
// NETLINK_NETFILTER socket opened next to the handle, in the same
// namespace, and used only here.

// AddBatch adds every entry (refreshing existing ones) in one kernel round
// trip. errs[i] receives the error of entries[i]; the returned error is for
// the whole batch (nothing known to be written).
func (s *Set) AddBatch(_ context.Context, entries []ban.Entry, errs []error) error {
	if len(errs) < len(entries) {
		return errors.New("ipset: AddBatch: errs shorter than entries")
	}
	s.bmu.Lock()
	defer s.bmu.Unlock()
	if s.bs == nil {
		return errors.New("ipset: closed")
	}
	buf := s.bbuf[:0]
	base := s.seq + 1
	s.seq += uint32(len(entries))
	last, lastOff := -1, 0
	for i, e := range entries {
		errs[i] = nil
		set, ip, cidr, err := s.target(e.Prefix)
		if err != nil {
			errs[i] = err
			continue
		}
		last, lastOff = i, len(buf)
		buf = appendIpsetAdd(buf, base+uint32(i), set, ip, cidr, timeoutSeconds(e.Timeout))
	}
	s.bbuf = buf
	if last < 0 {
		return nil
	}
	// only the last message asks for an ACK; errors come back for every message
	binary.NativeEndian.PutUint16(buf[lastOff+6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	lastSeq := base + uint32(last)
	if err := unix.Sendto(s.bs.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("ipset batch send: %w", err)
	}
	for {
		msgs, _, err := s.bs.Receive()
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				return fmt.Errorf("ipset batch: error reports lost: %w", err)
			}
			return fmt.Errorf("ipset batch receive: %w", err)
		}
		for _, m := range msgs {
			seq := m.Header.Seq
			if seq < base || seq > lastSeq || m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue // a late answer to an earlier request
			}
			if errno := int32(binary.NativeEndian.Uint32(m.Data[:4])); errno != 0 {
				i := int(seq - base)
				errs[i] = wrapKernel(ipsetErrno(-errno), "ipset add %s", entries[i].Prefix)
			}
			if seq == lastSeq {
				return nil
			}
		}
	}
}

func ipsetErrno(n int32) error {
	if n >= nl.IPSET_ERR_PRIVATE {
		return nl.IPSetError(uintptr(n))
	}
	return syscall.Errno(n)
}

// target resolves the set, address bytes and CIDR (0: none) for p.
func (s *Set) target(p netip.Prefix) (set string, ip []byte, cidr uint8, err error) {
	set, e, err := s.entry(p)
	if err != nil {
		return "", nil, 0, err
	}
	if v4 := e.IP.To4(); v4 != nil {
		return set, v4, 0, nil
	}
	return set, e.IP, e.CIDR, nil
}

func appendAttrHdr(b []byte, l int, typ uint16) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	return binary.NativeEndian.AppendUint16(b, typ)
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// appendIpsetAdd encodes one IPSET_CMD_ADD without NLM_F_EXCL (-exist):
// nlmsghdr, nfgenmsg, PROTOCOL, SETNAME, DATA{TIMEOUT, IP{IPADDR}, CIDR}.
func appendIpsetAdd(b []byte, seq uint32, set string, ip []byte, cidr uint8, timeout uint32) []byte {
	start := len(b)
	b = binary.NativeEndian.AppendUint32(b, 0) // length, patched below
	b = binary.NativeEndian.AppendUint16(b, uint16(nl.IPSET_CMD_ADD|unix.NFNL_SUBSYS_IPSET<<8))
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_REQUEST)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0) // port id: the kernel fills it
	b = append(b, unix.AF_NETLINK, nl.NFNETLINK_V0, 0, 0)

	b = appendAttrHdr(b, 5, nl.IPSET_ATTR_PROTOCOL)
	b = pad4(append(b, nl.IPSET_PROTOCOL))
	b = appendAttrHdr(b, 4+len(set)+1, nl.IPSET_ATTR_SETNAME)
	b = pad4(append(append(b, set...), 0))

	ipType, ipLen := uint16(nl.IPSET_ATTR_IPADDR_IPV4), 4
	if len(ip) == 16 {
		ipType, ipLen = nl.IPSET_ATTR_IPADDR_IPV6, 16
	}
	dataLen := 4 + 8 + (4 + 4 + ipLen)
	if cidr != 0 {
		dataLen += 8
	}
	b = appendAttrHdr(b, dataLen, nl.IPSET_ATTR_DATA|nl.NLA_F_NESTED)
	b = appendAttrHdr(b, 8, nl.IPSET_ATTR_TIMEOUT|nl.NLA_F_NET_BYTEORDER)
	b = binary.BigEndian.AppendUint32(b, timeout)
	b = appendAttrHdr(b, 4+4+ipLen, nl.IPSET_ATTR_IP|nl.NLA_F_NESTED)
	b = appendAttrHdr(b, 4+ipLen, ipType|nl.NLA_F_NET_BYTEORDER)
	b = append(b, ip...)
	if cidr != 0 {
		b = appendAttrHdr(b, 5, nl.IPSET_ATTR_CIDR)
		b = pad4(append(b, cidr))
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}
