// Package decision owns the one ban decision: may this address (and the
// prefix the jail would ban for it) be banned, and if not, why. The
// automatic path, a manual ban and the resync lift all ask the same
// Decision, so the checks cannot drift apart.
//
// It keeps no state of its own and learns nothing: never-ban prefixes and
// the host's addresses come from the jail, static entries and live
// registrations from the Allowlist (the whitelist). It must never widen a
// ban: a prefix that covers a protected address is narrowed to the
// offender's single address, or refused.
package decision

import (
	"fmt"
	"net/netip"
)

// Reason says why an address is not banned; Ban means it may be.
type Reason uint8

// Reasons, in the order they are checked.
const (
	Ban        Reason = iota // no protection: ban Verdict.Prefix
	NeverBan                 // loopback, link-local, multicast, the host's own addresses, never_ban prefixes
	Static                   // a static whitelist entry
	Registered               // a live registration
)

// String is the reason as metrics and logs name it.
func (r Reason) String() string {
	switch r {
	case Ban:
		return "ban"
	case NeverBan:
		return "never_ban"
	case Static:
		return "static"
	case Registered:
		return "registered"
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Reasons lists every reason that refuses a ban (metric label values).
var Reasons = []Reason{NeverBan, Static, Registered}

// Allowlist is what the decision needs from the whitelist: questions about
// whole prefixes, so that a prefix ban is judged on every address it would
// cover. *whitelist.Whitelist satisfies it.
type Allowlist interface {
	// Registered reports whether any live registration lies inside p.
	Registered(p netip.Prefix) bool
	// StaticOverlap returns a static entry overlapping p.
	StaticOverlap(p netip.Prefix) (netip.Prefix, bool)
}

// Verdict is the outcome of Decide.
type Verdict struct {
	Reason Reason
	// Why says more, for logs and the API: "loopback", "own address",
	// "never_ban 10.0.0.0/8", "static 192.0.2.0/24", "registered".
	Why string
	// Prefix is what to ban when Reason is Ban: the prefix asked about,
	// or the offender's single address when the prefix covers a protected
	// address (Narrowed).
	Prefix   netip.Prefix
	Narrowed bool
}

// Decision holds what the checks read. Build a new one when an input
// changes (policy reload, host addresses); a Decision is never modified, so
// it is safe for concurrent use.
type Decision struct {
	neverBan []netip.Prefix
	own      map[netip.Addr]struct{}
	allow    Allowlist
}

// New returns a Decision. neverBan are the configured never-ban prefixes,
// own the host's addresses; allow may be nil (nothing allowlisted).
func New(neverBan []netip.Prefix, own []netip.Addr, allow Allowlist) *Decision {
	d := &Decision{allow: allow, own: make(map[netip.Addr]struct{}, len(own))}
	for _, n := range neverBan {
		if n.IsValid() {
			d.neverBan = append(d.neverBan, n.Masked())
		}
	}
	for _, a := range own {
		if a.IsValid() {
			d.own[a.Unmap().WithZone("")] = struct{}{}
		}
	}
	return d
}

// With returns a copy of d with other host addresses.
func (d *Decision) With(own []netip.Addr) *Decision {
	return New(d.neverBan, own, d.allow)
}

// Decide judges a ban on p for the offender ip. p may be the zero Prefix
// (ban ip itself); ip may be the zero Addr when the offender is unknown (a
// prefix found in the kernel set): then any protection inside p refuses it,
// since there is no single address to narrow to.
//
// With a known offender, protections of ip itself refuse the ban; a
// protection elsewhere in p narrows the ban to ip alone.
func (d *Decision) Decide(ip netip.Addr, p netip.Prefix) Verdict {
	ip = ip.Unmap().WithZone("")
	if ip.IsValid() && (!p.IsValid() || !p.Contains(ip)) {
		p = netip.PrefixFrom(ip, ip.BitLen())
	}
	if !p.IsValid() {
		return Verdict{Reason: NeverBan, Why: "invalid address"}
	}
	p = p.Masked()
	if !ip.IsValid() {
		if p.IsSingleIP() {
			ip = p.Addr()
		} else {
			if r, why := d.check(p); r != Ban {
				return Verdict{Reason: r, Why: why}
			}
			return Verdict{Reason: Ban, Prefix: p}
		}
	}
	single := netip.PrefixFrom(ip, ip.BitLen())
	if r, why := d.check(single); r != Ban {
		return Verdict{Reason: r, Why: why}
	}
	if !p.IsSingleIP() {
		if r, why := d.check(p); r != Ban {
			return Verdict{Reason: Ban, Prefix: single, Narrowed: true, Why: fmt.Sprintf("narrowed: %s (%s)", r, why)}
		}
	}
	return Verdict{Reason: Ban, Prefix: p}
}

// special lists the ranges that are never banned whatever the config says.
var special = []struct {
	p   netip.Prefix
	why string
}{
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("0.0.0.0/32"), "unspecified"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// check runs every protection against the whole of p, in Reason order.
func (d *Decision) check(p netip.Prefix) (Reason, string) {
	for _, s := range special {
		if s.p.Overlaps(p) {
			return NeverBan, s.why
		}
	}
	if p.IsSingleIP() {
		if _, ok := d.own[p.Addr()]; ok {
			return NeverBan, "own address"
		}
	} else {
		for a := range d.own {
			if p.Contains(a) {
				return NeverBan, "own address " + a.String()
			}
		}
	}
	for _, n := range d.neverBan {
		if n.Overlaps(p) {
			return NeverBan, "never_ban " + n.String()
		}
	}
	if d.allow == nil {
		return Ban, ""
	}
	if s, ok := d.allow.StaticOverlap(p); ok {
		return Static, "static " + s.String()
	}
	if d.allow.Registered(p) {
		if p.IsSingleIP() {
			return Registered, "registered"
		}
		return Registered, "registered address in " + p.String()
	}
	return Ban, ""
}

// AddrOnly adapts an allowlist that can be asked about single addresses
// only. It cannot tell what a wider prefix covers, so it answers that the
// prefix holds a registration: prefix bans are then always narrowed to the
// offender's address — never wider than what was checked.
type AddrOnly func(netip.Addr) (static, registered bool)

// Registered implements Allowlist.
func (f AddrOnly) Registered(p netip.Prefix) bool {
	if !p.IsSingleIP() {
		return true
	}
	_, r := f(p.Addr())
	return r
}

// StaticOverlap implements Allowlist.
func (f AddrOnly) StaticOverlap(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsSingleIP() {
		return netip.Prefix{}, false
	}
	if s, _ := f(p.Addr()); s {
		return p, true
	}
	return netip.Prefix{}, false
}
