package ipset

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// RuleOptions names the sets and ports of the DROP rules InstallRules
// writes.
type RuleOptions struct {
	SetV4, SetV6 string
	Ports        []int // SIP ports (DefaultRulePorts)
	Chain        string
}

// ruleComment marks the rules sipwarden owns, so that they are found again.
const ruleComment = "sipwarden"

// InstallRules inserts, at the top of the INPUT chain (or o.Chain), one DROP
// rule per protocol (UDP, TCP) and family that matches the ban sets on the
// SIP ports, unless it is already there, and returns the function that
// removes what it inserted. It runs iptables/ip6tables (through
// go-iptables): that happens once at start and once at stop — the ban path
// itself never runs a process. The sets must exist (the backend's Ensure).
func InstallRules(o RuleOptions) (remove func() error, err error) {
	if o.Chain == "" {
		o.Chain = "INPUT"
	}
	if len(o.Ports) == 0 {
		o.Ports = DefaultRulePorts
	}
	ports := make([]string, len(o.Ports))
	for i, p := range o.Ports {
		ports[i] = strconv.Itoa(p)
	}
	type rule struct {
		ipt  *iptables.IPTables
		spec []string
	}
	var added []rule
	remove = func() error {
		var errs []error
		for _, r := range added {
			if err := r.ipt.DeleteIfExists("filter", o.Chain, r.spec...); err != nil {
				errs = append(errs, fmt.Errorf("remove rule %s: %w", strings.Join(r.spec, " "), err))
			}
		}
		return errors.Join(errs...)
	}
	for _, fam := range []struct {
		proto iptables.Protocol
		set   string
	}{{iptables.ProtocolIPv4, o.SetV4}, {iptables.ProtocolIPv6, o.SetV6}} {
		ipt, err := iptables.New(iptables.IPFamily(fam.proto), iptables.Timeout(5))
		if err != nil {
			remove()
			return nil, fmt.Errorf("install rule: %w (is iptables installed?)", err)
		}
		for _, proto := range []string{"udp", "tcp"} {
			spec := []string{"-p", proto, "-m", "multiport", "--dports", strings.Join(ports, ","),
				"-m", "set", "--match-set", fam.set, "src", "-m", "comment", "--comment", ruleComment, "-j", "DROP"}
			ok, err := ipt.Exists("filter", o.Chain, spec...)
			if err != nil {
				remove()
				return nil, fmt.Errorf("install rule: %w", err)
			}
			if ok {
				continue // the operator's own copy, or ours from a crash: leave it
			}
			if err := ipt.Insert("filter", o.Chain, 1, spec...); err != nil {
				remove()
				return nil, fmt.Errorf("install rule %s: %w", strings.Join(spec, " "), err)
			}
			added = append(added, rule{ipt, spec})
		}
	}
	return remove, nil
}
