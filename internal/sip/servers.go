package sip

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// ServerSet says which addresses are FreeSWITCH's: the configured prefixes,
// and with HostAddrs the host's own interface addresses (read again at most
// every 30 s, so an address added later counts).
type ServerSet struct {
	Prefixes  []netip.Prefix
	HostAddrs bool

	mu      sync.Mutex
	host    []netip.Addr
	checked time.Time
}

// Contains reports whether ip is a FreeSWITCH address.
func (s *ServerSet) Contains(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range s.Prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	if !s.HostAddrs {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := time.Now(); now.Sub(s.checked) > 30*time.Second || now.Before(s.checked) {
		s.checked = now
		s.host = s.host[:0]
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					if h, ok := netip.AddrFromSlice(n.IP); ok {
						s.host = append(s.host, h.Unmap())
					}
				}
			}
		}
	}
	for _, h := range s.host {
		if h == ip {
			return true
		}
	}
	return false
}
