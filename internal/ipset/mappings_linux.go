package ipset

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/protect"
)

// Mappings is the kernel backend of internal/protect: quarantined NAT
// mappings in hash:ip,port sets and throttled addresses in hash:ip sets,
// written over one netlink handle like Set.
type Mappings struct {
	opt    MappingOptions
	mu     sync.Mutex
	h      *netlink.Handle
	closed bool
}

var _ protect.Firewall = (*Mappings)(nil)

// NewMappings opens the handle and creates the sets when missing.
func NewMappings(o MappingOptions) (*Mappings, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	var (
		h   *netlink.Handle
		err error
	)
	if o.NetNS > 0 {
		h, err = netlink.NewHandleAt(netns.NsHandle(o.NetNS), unix.NETLINK_NETFILTER)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
	}
	if err != nil {
		return nil, fmt.Errorf("ipset: netlink handle: %w", permHint(err))
	}
	if err := h.SetSocketTimeout(o.Timeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("ipset: %w", err)
	}
	m := &Mappings{opt: o, h: h}
	if _, err := m.Ensure(context.Background()); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func (m *Mappings) handle() (*netlink.Handle, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("ipset: closed")
	}
	return m.h, nil
}

func (m *Mappings) sets() []struct {
	name, typ string
	family    uint8
} {
	return []struct {
		name, typ string
		family    uint8
	}{
		{m.opt.QuarantineV4, "hash:ip,port", unix.AF_INET},
		{m.opt.QuarantineV6, "hash:ip,port", unix.AF_INET6},
		{m.opt.ThrottleV4, "hash:ip", unix.AF_INET},
		{m.opt.ThrottleV6, "hash:ip", unix.AF_INET6},
	}
}

// Ensure creates the sets that do not exist and reports how many it made.
func (m *Mappings) Ensure(context.Context) (int, error) {
	h, err := m.handle()
	if err != nil {
		return 0, err
	}
	zero := uint32(0)
	created := 0
	for _, set := range m.sets() {
		err := guard(func() error {
			return h.IpsetCreate(set.name, set.typ, netlink.IpsetCreateOptions{
				Family: set.family, Timeout: &zero, MaxElements: uint32(m.opt.MaxElem),
			})
		})
		switch {
		case err == nil:
			created++
		case errors.Is(err, syscall.EEXIST) || isIpsetErr(err, nl.IPSET_ERR_EXIST):
		default:
			return created, wrapKernel(err, "ipset create %s %s", set.name, set.typ)
		}
	}
	return created, nil
}

// Check is the readiness probe: the sets exist.
func (m *Mappings) Check(ctx context.Context) error {
	_, err := m.Ensure(ctx)
	return err
}

func ipOf(a netip.Addr) (net.IP, bool, error) {
	a = a.Unmap()
	switch {
	case a.Is4():
		b := a.As4()
		return net.IP(b[:]), true, nil
	case a.Is6():
		b := a.WithZone("").As16()
		return net.IP(b[:]), false, nil
	}
	return nil, false, fmt.Errorf("ipset: invalid address")
}

// protos is what a mapping's transport blocks: TLS is TCP; none named (the
// Event Socket's register_failure) blocks the port on both.
func protos(t offense.Transport) []uint8 {
	switch t {
	case offense.TransportUDP:
		return []uint8{unix.IPPROTO_UDP}
	case offense.TransportTCP, offense.TransportTLS:
		return []uint8{unix.IPPROTO_TCP}
	}
	return []uint8{unix.IPPROTO_UDP, unix.IPPROTO_TCP}
}

func (m *Mappings) mapping(mp protect.Mapping, f func(h *netlink.Handle, set string, e *netlink.IPSetEntry) error) error {
	if mp.Port == 0 {
		return fmt.Errorf("ipset: mapping %s without a port", mp)
	}
	ip, v4, err := ipOf(mp.IP)
	if err != nil {
		return err
	}
	h, err := m.handle()
	if err != nil {
		return err
	}
	set := m.opt.QuarantineV6
	if v4 {
		set = m.opt.QuarantineV4
	}
	for _, p := range protos(mp.Transport) {
		port, proto := mp.Port, p
		e := netlink.IPSetEntry{IP: ip, Port: &port, Protocol: &proto, Replace: true}
		if err := f(h, set, &e); err != nil {
			return err
		}
	}
	return nil
}

// AddMapping quarantines mp for d (0: no timeout), refreshing an entry.
func (m *Mappings) AddMapping(_ context.Context, mp protect.Mapping, d time.Duration) error {
	to := timeoutSeconds(d)
	return m.mapping(mp, func(h *netlink.Handle, set string, e *netlink.IPSetEntry) error {
		e.Timeout = &to
		if err := guard(func() error { return h.IpsetAdd(set, e) }); err != nil {
			return wrapKernel(err, "ipset add %s to %s", mp, set)
		}
		return nil
	})
}

// DelMapping lifts the quarantine of mp; an absent entry is not an error.
func (m *Mappings) DelMapping(_ context.Context, mp protect.Mapping) error {
	return m.mapping(mp, func(h *netlink.Handle, set string, e *netlink.IPSetEntry) error {
		err := guard(func() error { return h.IpsetDel(set, e) })
		if err != nil && !isIpsetErr(err, nl.IPSET_ERR_EXIST) && !errors.Is(err, syscall.ENOENT) {
			return wrapKernel(err, "ipset del %s from %s", mp, set)
		}
		return nil
	})
}

func (m *Mappings) throttle(ip netip.Addr) (*netlink.Handle, string, netlink.IPSetEntry, error) {
	a, v4, err := ipOf(ip)
	if err != nil {
		return nil, "", netlink.IPSetEntry{}, err
	}
	h, err := m.handle()
	if err != nil {
		return nil, "", netlink.IPSetEntry{}, err
	}
	set := m.opt.ThrottleV6
	if v4 {
		set = m.opt.ThrottleV4
	}
	return h, set, netlink.IPSetEntry{IP: a, Replace: true}, nil
}

// AddThrottle puts ip into the throttle set for d.
func (m *Mappings) AddThrottle(_ context.Context, ip netip.Addr, d time.Duration) error {
	h, set, e, err := m.throttle(ip)
	if err != nil {
		return err
	}
	to := timeoutSeconds(d)
	e.Timeout = &to
	if err := guard(func() error { return h.IpsetAdd(set, &e) }); err != nil {
		return wrapKernel(err, "ipset add %s to %s", ip, set)
	}
	return nil
}

// DelThrottle lifts the throttle of ip; absent is not an error.
func (m *Mappings) DelThrottle(_ context.Context, ip netip.Addr) error {
	h, set, e, err := m.throttle(ip)
	if err != nil {
		return err
	}
	err = guard(func() error { return h.IpsetDel(set, &e) })
	if err != nil && !isIpsetErr(err, nl.IPSET_ERR_EXIST) && !errors.Is(err, syscall.ENOENT) {
		return wrapKernel(err, "ipset del %s from %s", ip, set)
	}
	return nil
}

// Destroy removes the four sets (no rule may reference them).
func (m *Mappings) Destroy() error {
	h, err := m.handle()
	if err != nil {
		return err
	}
	var errs []error
	for _, set := range m.sets() {
		err := guard(func() error { return h.IpsetDestroy(set.name) })
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, wrapKernel(err, "ipset destroy %s", set.name))
		}
	}
	return errors.Join(errs...)
}

// Close releases the handle; the sets stay in the kernel.
func (m *Mappings) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		m.h.Close()
	}
	return nil
}

// MappingRuleOptions names the sets, ports and limits of the rules
// InstallMappingRules writes.
type MappingRuleOptions struct {
	QuarantineV4, QuarantineV6, ThrottleV4, ThrottleV6 string
	Ports                                              []int // SIP ports (5060, 5080)
	Chain                                              string
	Rate, Burst                                        int // packets per second per throttled address (20, 40)
}

// InstallMappingRules inserts, at the top of INPUT (or o.Chain), per family
// and protocol: a DROP of packets to the SIP ports whose source address and
// port are a quarantined mapping, and a DROP of packets to the SIP ports
// from a throttled address beyond Rate per second (hashlimit per source
// address). Like InstallRules it runs iptables once at start and stop; it
// returns the function that removes what it inserted.
func InstallMappingRules(o MappingRuleOptions) (remove func() error, err error) {
	if o.Chain == "" {
		o.Chain = "INPUT"
	}
	if len(o.Ports) == 0 {
		o.Ports = []int{5060, 5080}
	}
	setDefault(&o.Rate, DefaultThrottleRate)
	setDefault(&o.Burst, DefaultThrottleBurst)
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
		proto      iptables.Protocol
		quar, thr  string
		hashlimitN string
	}{{iptables.ProtocolIPv4, o.QuarantineV4, o.ThrottleV4, o.ThrottleV4}, {iptables.ProtocolIPv6, o.QuarantineV6, o.ThrottleV6, o.ThrottleV6}} {
		ipt, err := iptables.New(iptables.IPFamily(fam.proto), iptables.Timeout(5))
		if err != nil {
			remove()
			return nil, fmt.Errorf("install rule: %w (is iptables installed?)", err)
		}
		for _, proto := range []string{"udp", "tcp"} {
			base := []string{"-p", proto, "-m", "multiport", "--dports", strings.Join(ports, ",")}
			specs := [][]string{
				append(append([]string{}, base...), "-m", "set", "--match-set", fam.quar, "src,src",
					"-m", "comment", "--comment", ruleComment, "-j", "DROP"),
				append(append([]string{}, base...), "-m", "set", "--match-set", fam.thr, "src",
					"-m", "hashlimit", "--hashlimit-above", strconv.Itoa(o.Rate)+"/sec", "--hashlimit-burst", strconv.Itoa(o.Burst),
					"--hashlimit-mode", "srcip", "--hashlimit-name", fam.hashlimitN+proto,
					"-m", "comment", "--comment", ruleComment, "-j", "DROP"),
			}
			for _, spec := range specs {
				ok, err := ipt.Exists("filter", o.Chain, spec...)
				if err != nil {
					remove()
					return nil, fmt.Errorf("install rule: %w", err)
				}
				if ok {
					continue
				}
				if err := ipt.Insert("filter", o.Chain, 1, spec...); err != nil {
					remove()
					return nil, fmt.Errorf("install rule %s: %w", strings.Join(spec, " "), err)
				}
				added = append(added, rule{ipt, spec})
			}
		}
	}
	return remove, nil
}
