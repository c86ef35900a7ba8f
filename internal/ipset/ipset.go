// Package ipset is the kernel ban backend: two ipsets (IPv4 hash:ip, IPv6
// hash:net) written over netlink, plus the iptables DROP rules
// that match them (InstallRules, run once at start and stop).
//
// It decides nothing: it adds, deletes and lists what the jail asks. The
// ban path must never run a process, so every set operation goes through
// one persistent netlink handle.
package ipset

import (
	"fmt"
	"time"
)

// Defaults of Options.
const (
	DefaultSetV4   = "sipwarden4"
	DefaultSetV6   = "sipwarden6"
	DefaultMaxElem = 65536
	DefaultTimeout = 5 * time.Second
)

// DefaultRulePorts are the ports InstallRules drops banned sources on (UDP
// and TCP): FreeSWITCH's internal and external profiles, SIP and TLS — the
// same ports examples/firewall/ drops.
var DefaultRulePorts = []int{5060, 5061, 5080, 5081}

// Options configures the ipset backend.
type Options struct {
	SetV4   string // IPv4 set, hash:ip family inet (sipwarden4)
	SetV6   string // IPv6 set, hash:net family inet6 (sipwarden6); an existing hash:ip one serves V6Prefix 0
	MaxElem int    // per set (65536)
	// V6Prefix > 0 (< 128) makes the IPv6 set hash:net so the jail can ban
	// prefixes; it must match Options.V6Prefix of the jail.
	V6Prefix int
	// NetNS opens the netlink handle in that network namespace (tests);
	// 0 or -1: the current one.
	NetNS int
	// Timeout bounds each netlink round trip (5s).
	Timeout time.Duration
}

func (o *Options) defaults() error {
	setDefault(&o.SetV4, DefaultSetV4)
	setDefault(&o.SetV6, DefaultSetV6)
	setDefault(&o.MaxElem, DefaultMaxElem)
	setDefault(&o.Timeout, DefaultTimeout)
	if o.V6Prefix == 128 {
		o.V6Prefix = 0
	}
	switch {
	case o.V6Prefix < 0 || o.V6Prefix > 128:
		return fmt.Errorf("ipset: v6_prefix %d: must be 0..128", o.V6Prefix)
	case len(o.SetV4) > 31 || len(o.SetV6) > 31:
		return fmt.Errorf("ipset: set names are at most 31 bytes")
	case o.MaxElem < 1 || o.MaxElem > 1<<31-1:
		return fmt.Errorf("ipset: maxelem %d out of range", o.MaxElem)
	case o.SetV4 == o.SetV6:
		return fmt.Errorf("ipset: set_v4 and set_v6 must differ")
	}
	return nil
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}
