package whitelist

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
)

// SetStatic replaces the static prefixes (a configuration reload).
// IPv4-mapped prefixes are unmapped and every prefix is masked.
func (w *Whitelist) SetStatic(prefixes []netip.Prefix) {
	s := newStaticSet(prefixes)
	w.mu.Lock()
	w.static = s
	w.mu.Unlock()
	w.mStatic.Set(float64(len(s.prefixes)))
}

// Static returns the static prefixes in force.
func (w *Whitelist) Static() []netip.Prefix {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return slices.Clone(w.static.prefixes)
}

// StaticOverlap returns a static prefix that overlaps p (contains it, or
// lies inside it), the first in address order. A prefix ban that overlaps
// a static entry would block a whitelisted address.
func (w *Whitelist) StaticOverlap(p netip.Prefix) (netip.Prefix, bool) {
	p, ok := normPrefix(p)
	if !ok {
		return netip.Prefix{}, false
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	for _, s := range w.static.prefixes {
		if s.Overlaps(p) {
			return s, true
		}
	}
	return netip.Prefix{}, false
}

// staticSet answers prefix membership with one map probe per distinct
// prefix length, so long static lists stay cheap; IPv4 probes use integer
// keys.
type staticSet struct {
	prefixes []netip.Prefix
	set4     map[uint64]struct{} // bits<<32 | masked address
	lin4     []net4              // the same, scanned linearly when short
	set6     map[netip.Prefix]struct{}
	bits4    []int // distinct lengths, longest first
	bits6    []int
}

// net4 is an IPv4 prefix as mask and masked address.
type net4 struct{ mask, addr uint32 }

// linearMax is the IPv4 list length up to which a linear scan beats one
// map probe per prefix length.
const linearMax = 16

func key4(a uint32, bits int) uint64 {
	if bits == 0 {
		return 0
	}
	return uint64(bits)<<32 | uint64(a&^(1<<(32-bits)-1))
}

func newStaticSet(prefixes []netip.Prefix) *staticSet {
	s := &staticSet{set4: make(map[uint64]struct{}), set6: make(map[netip.Prefix]struct{})}
	for _, p := range prefixes {
		p, ok := normPrefix(p)
		if !ok {
			continue
		}
		a, bits := p.Addr(), p.Bits()
		if slices.Contains(s.prefixes, p) {
			continue
		}
		s.prefixes = append(s.prefixes, p)
		if a.Is4() {
			b := a.As4()
			v := binary.BigEndian.Uint32(b[:])
			s.set4[key4(v, bits)] = struct{}{}
			mask := ^uint32(0)
			if bits < 32 {
				mask = ^(uint32(1)<<(32-bits) - 1)
			}
			s.lin4 = append(s.lin4, net4{mask: mask, addr: v & mask})
			if !slices.Contains(s.bits4, bits) {
				s.bits4 = append(s.bits4, bits)
			}
		} else {
			s.set6[p] = struct{}{}
			if !slices.Contains(s.bits6, bits) {
				s.bits6 = append(s.bits6, bits)
			}
		}
	}
	slices.SortFunc(s.bits4, func(a, b int) int { return b - a })
	slices.SortFunc(s.bits6, func(a, b int) int { return b - a })
	slices.SortFunc(s.prefixes, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), a.Bits()-b.Bits())
	})
	return s
}

func (s *staticSet) contains(ip netip.Addr) bool {
	if ip.Is4() {
		b := ip.As4()
		a := binary.BigEndian.Uint32(b[:])
		if len(s.lin4) <= linearMax {
			for _, n := range s.lin4 {
				if a&n.mask == n.addr {
					return true
				}
			}
			return false
		}
		for _, bits := range s.bits4 {
			if _, ok := s.set4[key4(a, bits)]; ok {
				return true
			}
		}
		return false
	}
	_, ok := s.match(ip)
	return ok
}

func (s *staticSet) match(ip netip.Addr) (netip.Prefix, bool) {
	if ip.Is4() {
		b := ip.As4()
		a := binary.BigEndian.Uint32(b[:])
		for _, bits := range s.bits4 {
			if _, ok := s.set4[key4(a, bits)]; ok {
				p, _ := ip.Prefix(bits)
				return p, true
			}
		}
		return netip.Prefix{}, false
	}
	ip = ip.WithZone("")
	for _, b := range s.bits6 {
		p, err := ip.Prefix(b)
		if err != nil {
			continue
		}
		if _, ok := s.set6[p]; ok {
			return p, true
		}
	}
	return netip.Prefix{}, false
}
