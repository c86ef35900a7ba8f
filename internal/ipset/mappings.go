package ipset

import (
	"fmt"
	"time"
)

// Defaults of MappingOptions: the quarantine (hash:ip,port) and throttle
// (hash:ip) sets of the graduated response (internal/protect).
const (
	DefaultQuarantineV4  = "sipwarden4q"
	DefaultQuarantineV6  = "sipwarden6q"
	DefaultThrottleV4    = "sipwarden4t"
	DefaultThrottleV6    = "sipwarden6t"
	DefaultMappingMaxEl  = 65536
	DefaultThrottleRate  = 20 // packets per second to the SIP ports from one throttled address
	DefaultThrottleBurst = 40
)

// MappingOptions configures the quarantine and throttle sets.
type MappingOptions struct {
	QuarantineV4, QuarantineV6 string // hash:ip,port per family
	ThrottleV4, ThrottleV6     string // hash:ip per family
	MaxElem                    int
	NetNS                      int           // see Options.NetNS
	Timeout                    time.Duration // per netlink round trip (5s)
}

func (o *MappingOptions) defaults() error {
	setDefault(&o.QuarantineV4, DefaultQuarantineV4)
	setDefault(&o.QuarantineV6, DefaultQuarantineV6)
	setDefault(&o.ThrottleV4, DefaultThrottleV4)
	setDefault(&o.ThrottleV6, DefaultThrottleV6)
	setDefault(&o.MaxElem, DefaultMappingMaxEl)
	setDefault(&o.Timeout, DefaultTimeout)
	names := map[string]bool{}
	for _, n := range []string{o.QuarantineV4, o.QuarantineV6, o.ThrottleV4, o.ThrottleV6} {
		if len(n) > 31 {
			return fmt.Errorf("ipset: set name %q: at most 31 bytes", n)
		}
		if names[n] {
			return fmt.Errorf("ipset: set name %q used twice", n)
		}
		names[n] = true
	}
	if o.MaxElem < 1 || o.MaxElem > 1<<31-1 {
		return fmt.Errorf("ipset: maxelem %d out of range", o.MaxElem)
	}
	return nil
}
