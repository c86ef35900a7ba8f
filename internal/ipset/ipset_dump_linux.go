package ipset

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/sipwarden/sipwarden/internal/ban"
)

// Reading a set back. netlink.Handle.IpsetList does collect a multi-message
// dump (every NLM_F_MULTI part until NLMSG_DONE), but it parses each
// attribute list on a new goroutine and prints every attribute it does not
// know with the global log package: sets created by the ipset tool
// (examples/firewall/ipset.conf) carry bucketsize and initval, so every
// resync would print two stray lines. This small parser reads the same dump
// on the raw socket and keeps only what the jail needs.

type setInfo struct {
	typ        string
	family     uint8
	hasTimeout bool
	elements   uint32
	references uint32 // rules (iptables -m set, other sets) that use the set
	entries    []ban.Entry
}

// ipsetFlagListHeader asks for the header only, as `ipset list -t`
// (IPSET_FLAG_LIST_HEADER in linux/netfilter/ipset/ip_set.h).
const ipsetFlagListHeader = 1 << 2

func (s *Set) dump(set string) (*setInfo, error) { return s.dumpFlags(set, 0) }

func (s *Set) dumpFlags(set string, flags uint32) (*setInfo, error) {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	if s.bs == nil {
		return nil, fmt.Errorf("ipset: closed")
	}
	s.seq++
	seq := s.seq
	b := s.bbuf[:0]
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint16(b, uint16(nl.IPSET_CMD_LIST|unix.NFNL_SUBSYS_IPSET<<8))
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = append(b, unix.AF_NETLINK, nl.NFNETLINK_V0, 0, 0)
	b = appendAttrHdr(b, 5, nl.IPSET_ATTR_PROTOCOL)
	b = pad4(append(b, nl.IPSET_PROTOCOL))
	b = appendAttrHdr(b, 4+len(set)+1, nl.IPSET_ATTR_SETNAME)
	b = pad4(append(append(b, set...), 0))
	if flags != 0 {
		b = appendAttrHdr(b, 8, nl.IPSET_ATTR_FLAGS)
		b = binary.NativeEndian.AppendUint32(b, flags)
	}
	binary.NativeEndian.PutUint32(b, uint32(len(b)))
	s.bbuf = b
	if err := unix.Sendto(s.bs.GetFd(), b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	info := &setInfo{}
	for {
		msgs, _, err := s.bs.Receive()
		if err != nil {
			return nil, fmt.Errorf("receive: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue // late answer to an earlier request
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return info, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return nil, fmt.Errorf("short netlink error")
				}
				if errno := int32(binary.NativeEndian.Uint32(m.Data[:4])); errno != 0 {
					return nil, ipsetErrno(-errno)
				}
				return info, nil
			}
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				return nil, fmt.Errorf("dump interrupted")
			}
			if len(m.Data) > 4 {
				info.parse(m.Data[4:]) // skip nfgenmsg
			}
		}
	}
}

// attrs calls f for every netlink attribute in b (type without flags);
// malformed lengths end the walk.
func attrs(b []byte, f func(typ uint16, v []byte)) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) & nl.NLA_TYPE_MASK
		if l < 4 || l > len(b) {
			return
		}
		f(typ, b[4:l])
		b = b[min((l+3)&^3, len(b)):]
	}
}

func (info *setInfo) parse(b []byte) {
	attrs(b, func(typ uint16, v []byte) {
		switch typ {
		case nl.IPSET_ATTR_TYPENAME:
			info.typ = nullString(v)
		case nl.IPSET_ATTR_FAMILY:
			if len(v) > 0 {
				info.family = v[0]
			}
		case nl.IPSET_ATTR_DATA:
			attrs(v, func(typ uint16, v []byte) {
				switch typ {
				case nl.IPSET_ATTR_TIMEOUT:
					info.hasTimeout = true
				case nl.IPSET_ATTR_ELEMENTS:
					if len(v) == 4 {
						info.elements = binary.BigEndian.Uint32(v)
					}
				case nl.IPSET_ATTR_REFERENCES:
					if len(v) == 4 {
						info.references = binary.BigEndian.Uint32(v)
					}
				}
			})
		case nl.IPSET_ATTR_ADT:
			attrs(v, func(typ uint16, v []byte) {
				if typ == nl.IPSET_ATTR_DATA {
					if e, ok := parseEntry(v); ok {
						info.entries = append(info.entries, e)
					}
				}
			})
		}
	})
}

func parseEntry(b []byte) (ban.Entry, bool) {
	var (
		addr netip.Addr
		cidr = -1
		e    ban.Entry
	)
	attrs(b, func(typ uint16, v []byte) {
		switch typ {
		case nl.IPSET_ATTR_IP:
			attrs(v, func(_ uint16, v []byte) {
				if a, ok := netip.AddrFromSlice(v); ok {
					addr = a.Unmap()
				}
			})
		case nl.IPSET_ATTR_CIDR:
			if len(v) > 0 {
				cidr = int(v[0])
			}
		case nl.IPSET_ATTR_TIMEOUT:
			if len(v) == 4 {
				e.Timeout = time.Duration(binary.BigEndian.Uint32(v)) * time.Second
			}
		}
	})
	if !addr.IsValid() {
		return e, false
	}
	bits := addr.BitLen()
	if cidr >= 0 && cidr < bits {
		bits = cidr
	}
	e.Prefix = netip.PrefixFrom(addr, bits).Masked()
	return e, true
}

func nullString(v []byte) string {
	for i, c := range v {
		if c == 0 {
			return string(v[:i])
		}
	}
	return string(v)
}
