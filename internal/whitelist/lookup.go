package whitelist

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Allowed reports whether ip must not be banned, and why (ReasonStatic or
// ReasonRegistered), judged at the clock's current reading. It does not
// allocate.
func (w *Whitelist) Allowed(ip netip.Addr) (why string, ok bool) {
	return w.allowedAt(ip, w.clock())
}

// AllowedAt is Allowed at time t (replay asks with the record's own time).
func (w *Whitelist) AllowedAt(ip netip.Addr, t time.Time) (why string, ok bool) {
	return w.allowedAt(ip, t.UnixNano())
}

func (w *Whitelist) allowedAt(ip netip.Addr, now int64) (why string, ok bool) {
	ip = ip.Unmap().WithZone("")
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.static.contains(ip) {
		return ReasonStatic, true
	}
	if e := w.store.byIP[ip]; e != nil && e.live(now, w.grace) {
		return ReasonRegistered, true
	}
	return "", false
}

// Registered reports whether any address inside p holds a live
// registration (the ban path asks before banning a whole prefix). A prefix
// of one address asks about that address. Static prefixes do not count:
// see StaticOverlap.
func (w *Whitelist) Registered(p netip.Prefix) bool {
	p, ok := normPrefix(p)
	if !ok {
		return false
	}
	now := w.clock()
	w.mu.RLock()
	defer w.mu.RUnlock()
	s := &w.store
	live := func(a netip.Addr) bool {
		e := s.byIP[a]
		return e != nil && e.live(now, w.grace)
	}
	if p.IsSingleIP() {
		return live(p.Addr())
	}
	if b := bucketOf(p.Addr()); p.Bits() >= b.Bits() {
		for _, a := range s.nets[b] {
			if p.Contains(a) && live(a) {
				return true
			}
		}
		return false
	}
	// Wider than a bucket (rare): every bucket inside p.
	for b, as := range s.nets {
		if b.Addr().Is4() != p.Addr().Is4() || !p.Contains(b.Addr()) {
			continue
		}
		for _, a := range as {
			if live(a) {
				return true
			}
		}
	}
	return false
}

// normPrefix unmaps an IPv4-mapped prefix, drops the zone and masks it.
func normPrefix(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsValid() {
		return netip.Prefix{}, false
	}
	a, bits := p.Addr().WithZone(""), p.Bits()
	if a.Is4In6() {
		bits = max(bits-96, 0)
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, bits).Masked(), true
}

// Registrations returns how many live registrations ip holds (0 for a
// static-only or unknown address). The ban decision's log line uses it.
func (w *Whitelist) Registrations(ip netip.Addr) int {
	ip = ip.Unmap().WithZone("")
	limit := w.clock()
	w.mu.RLock()
	defer w.mu.RUnlock()
	e := w.store.byIP[ip]
	if e == nil {
		return 0
	}
	limit -= w.grace
	n := 0
	for i := range e.regs {
		if e.regs[i].expires > limit {
			n++
		}
	}
	return n
}

// Lookup returns what the whitelist holds for ip: its live registrations and
// whether a static prefix covers it. ok is false when ip is not whitelisted;
// it always agrees with Allowed at the same instant.
func (w *Whitelist) Lookup(ip netip.Addr) (Entry, bool) {
	ip = ip.Unmap().WithZone("")
	e := Entry{IP: ip, Registrations: []Registration{}}
	limit := w.clock()
	w.mu.RLock()
	if p, ok := w.static.match(ip); ok {
		e.Static, e.Prefix = true, p
	}
	limit -= w.grace
	if ie := w.store.byIP[ip]; ie != nil {
		for i := range ie.regs {
			if ie.regs[i].expires > limit {
				e.Registrations = append(e.Registrations, ie.regs[i].registration(ip))
			}
		}
	}
	w.mu.RUnlock()
	sortRegs(e.Registrations)
	return e, e.Static || len(e.Registrations) > 0
}

func sortRegs(rs []Registration) {
	slices.SortFunc(rs, func(a, b Registration) int {
		return cmp.Or(strings.Compare(a.User, b.User), strings.Compare(a.Realm, b.Realm),
			strings.Compare(a.Node, b.Node), strings.Compare(a.CallID, b.CallID))
	})
}

// Entries lists every address with live registrations (sorted), then every
// static prefix.
func (w *Whitelist) Entries() []Entry {
	limit := w.clock()
	out := []Entry{}
	w.mu.RLock()
	s := w.static
	limit -= w.grace
	for ip, ie := range w.store.byIP {
		e := Entry{IP: ip}
		for j := range ie.regs {
			if ie.regs[j].expires > limit {
				e.Registrations = append(e.Registrations, ie.regs[j].registration(ip))
			}
		}
		if len(e.Registrations) == 0 {
			continue
		}
		e.Prefix, e.Static = s.match(ip)
		out = append(out, e)
	}
	w.mu.RUnlock()
	slices.SortFunc(out, func(a, b Entry) int { return a.IP.Compare(b.IP) })
	for _, e := range out {
		sortRegs(e.Registrations)
	}
	for _, p := range s.prefixes {
		out = append(out, Entry{IP: p.Addr(), Prefix: p, Static: true, Registrations: []Registration{}})
	}
	return out
}

// Len returns how many addresses hold registrations and how many
// registrations there are (including expired ones the sweep has not dropped).
func (w *Whitelist) Len() (ips, registrations int) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return len(w.store.byIP), w.store.nRegs
}
