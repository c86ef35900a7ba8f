package ipset

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sipwarden/sipwarden/internal/ban"
)

// Set is the kernel backend: two ipsets written over netlink, never a
// process. One persistent netlink.Handle (NETLINK_NETFILTER) does set
// creation, single adds and deletes; one raw netlink socket next to it, in
// the same namespace, carries batched adds and set dumps (see
// ipset_batch_linux.go and ipset_dump_linux.go for why).
type Set struct {
	opt    Options
	mu     sync.Mutex // the handle's socket serialises anyway; this guards Close
	h      *netlink.Handle
	type6  string
	closed bool

	bmu  sync.Mutex // batch socket, see ipset_batch_linux.go
	bs   *nl.NetlinkSocket
	seq  uint32
	bbuf []byte
}

var (
	_ ban.Firewall   = (*Set)(nil)
	_ ban.Lister     = (*Set)(nil)
	_ ban.Ensurer    = (*Set)(nil)
	_ ban.BatchAdder = (*Set)(nil)
)

// New opens the netlink handle and creates the sets when missing. An
// existing set of another type or family is an error (destroy it, or
// rename the set in the config).
func New(o Options) (*Set, error) {
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
	// The IPv6 set is hash:net whatever v6_prefix says, as
	// examples/firewall/ipset.conf creates it: it holds single addresses as
	// well, so the README's order (start sipwarden, then load ipset.conf with
	// -exist) agrees with what is already there.
	s := &Set{opt: o, h: h, type6: "hash:net"}
	ns := netns.None()
	if o.NetNS > 0 {
		ns = netns.NsHandle(o.NetNS)
	}
	bs, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_NETFILTER)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("ipset: netlink socket: %w", permHint(err))
	}
	tv := unix.NsecToTimeval(o.Timeout.Nanoseconds())
	bs.SetSendTimeout(&tv)
	bs.SetReceiveTimeout(&tv)
	bs.SetReceiveBufferSize(1<<20, false)
	// errors need not echo the request: a batch of failures stays small
	unix.SetsockoptInt(bs.GetFd(), unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	s.bs = bs
	if _, err := s.Ensure(context.Background()); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.checkTypes(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func permHint(err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w (needs CAP_NET_ADMIN)", err)
	}
	return err
}

// guard turns a panic inside the netlink library (it type-asserts errors
// to syscall.Errno) into an error: bad kernel answers must not crash us.
func guard(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("netlink: %v", r)
		}
	}()
	return f()
}

func isIpsetErr(err error, code int) bool {
	var e nl.IPSetError
	return errors.As(err, &e) && int(e) == code
}

// wrap adds the sentinel for a full set.
func wrapKernel(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if isIpsetErr(err, nl.IPSET_ERR_TYPE_SPECIFIC) { // hash full (IPSET_ERR_HASH_FULL)
		return fmt.Errorf("%s: %w: %w", msg, ban.ErrSetFull, err)
	}
	return fmt.Errorf("%s: %w", msg, permHint(err))
}

func (s *Set) handle() (*netlink.Handle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("ipset: closed")
	}
	return s.h, nil
}

// Ensure creates the sets that do not exist and reports how many it made.
func (s *Set) Ensure(context.Context) (int, error) {
	h, err := s.handle()
	if err != nil {
		return 0, err
	}
	zero := uint32(0)
	sets := []struct {
		name, typ string
		family    uint8
	}{
		{s.opt.SetV4, "hash:ip", unix.AF_INET},
		{s.opt.SetV6, s.type6, unix.AF_INET6},
	}
	created := 0
	for _, set := range sets {
		err := guard(func() error {
			return h.IpsetCreate(set.name, set.typ, netlink.IpsetCreateOptions{
				Family: set.family, Timeout: &zero, MaxElements: uint32(s.opt.MaxElem),
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

func (s *Set) checkTypes() error {
	for _, want := range []struct {
		name, typ string
		family    uint8
	}{{s.opt.SetV4, "hash:ip", unix.AF_INET}, {s.opt.SetV6, s.type6, unix.AF_INET6}} {
		info, err := s.dump(want.name)
		if err != nil {
			return wrapKernel(err, "ipset list %s", want.name)
		}
		if want.name == s.opt.SetV6 && s.opt.V6Prefix == 0 && info.typ == "hash:ip" && info.family == want.family && info.hasTimeout {
			// made as hash:ip by an older sipwarden: single addresses only,
			// which is all v6_prefix 128 bans
			s.type6 = "hash:ip"
			continue
		}
		if info.typ != want.typ || info.family != want.family {
			return fmt.Errorf("ipset: set %s exists as %s family %d, want %s family %d (destroy it or use another name)",
				want.name, info.typ, info.family, want.typ, want.family)
		}
		if !info.hasTimeout {
			return fmt.Errorf("ipset: set %s exists without timeout support (destroy it or use another name)", want.name)
		}
	}
	return nil
}

func (s *Set) entry(p netip.Prefix) (set string, e netlink.IPSetEntry, err error) {
	if !p.IsValid() {
		return "", e, fmt.Errorf("ipset: invalid prefix")
	}
	a := p.Addr()
	if a.Is4In6() {
		a = a.Unmap()
		p = netip.PrefixFrom(a, max(p.Bits()-96, 0))
	}
	if a.Is4() {
		if p.Bits() != 32 {
			return "", e, fmt.Errorf("ipset: %s: the IPv4 set holds single addresses", p)
		}
		b := a.As4()
		return s.opt.SetV4, netlink.IPSetEntry{IP: net.IP(b[:])}, nil
	}
	b := p.Masked().Addr().As16()
	e = netlink.IPSetEntry{IP: net.IP(b[:])}
	if p.Bits() != 128 {
		if s.type6 != "hash:net" {
			return "", e, fmt.Errorf("ipset: %s: the IPv6 set holds single addresses (set v6_prefix)", p)
		}
		e.CIDR = uint8(p.Bits())
	}
	return s.opt.SetV6, e, nil
}

// timeoutSeconds is the per-entry kernel timeout: at least 1s, at most the
// kernel's maximum; 0 means no timeout.
func timeoutSeconds(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	d = min(d, ban.MaxKernelTimeout)
	sec := (d + time.Second - 1) / time.Second
	return uint32(max(sec, 1))
}

// Add puts p into its set for d (0: no timeout), refreshing the timeout of
// an existing entry (-exist).
func (s *Set) Add(_ context.Context, p netip.Prefix, d time.Duration) error {
	set, e, err := s.entry(p)
	if err != nil {
		return err
	}
	h, err := s.handle()
	if err != nil {
		return err
	}
	to := timeoutSeconds(d)
	e.Timeout = &to
	e.Replace = true
	if err := guard(func() error { return h.IpsetAdd(set, &e) }); err != nil {
		return wrapKernel(err, "ipset add %s to %s", p, set)
	}
	return nil
}

// Del removes p from its set; an absent entry is not an error.
func (s *Set) Del(_ context.Context, p netip.Prefix) error {
	set, e, err := s.entry(p)
	if err != nil {
		return err
	}
	h, err := s.handle()
	if err != nil {
		return err
	}
	e.Replace = true // no NLM_F_EXCL: deleting a missing entry succeeds
	if err := guard(func() error { return h.IpsetDel(set, &e) }); err != nil {
		return wrapKernel(err, "ipset del %s from %s", p, set)
	}
	return nil
}

// List reads both sets back (see ipset_dump_linux.go: a dump of a big set
// comes in many netlink messages, all read until NLMSG_DONE).
func (s *Set) List(context.Context) ([]ban.Entry, error) {
	var out []ban.Entry
	for _, set := range []string{s.opt.SetV4, s.opt.SetV6} {
		info, err := s.dump(set)
		if err != nil {
			return nil, wrapKernel(err, "ipset list %s", set)
		}
		out = append(out, info.entries...)
		if n := uint32(len(info.entries)); n < info.elements && info.elements-n > info.elements/10+16 {
			// entries may expire between header and dump; far fewer is a short read
			return nil, fmt.Errorf("ipset list %s: read %d of %d entries", set, n, info.elements)
		}
	}
	return out, nil
}

// References reads how many rules (iptables -m set, list:set members)
// use each ban set, from the set headers (as `ipset list -t` shows
// "References:"). A ban set nothing references bans nothing.
func (s *Set) References(context.Context) (map[string]uint32, error) {
	out := make(map[string]uint32, 2)
	for _, set := range []string{s.opt.SetV4, s.opt.SetV6} {
		info, err := s.dumpFlags(set, ipsetFlagListHeader)
		if err != nil {
			return nil, wrapKernel(err, "ipset list -t %s", set)
		}
		out[set] = info.references
	}
	return out, nil
}

// Check is the readiness probe: the sets exist (one small create-if-absent
// round trip per set; nothing is listed).
func (s *Set) Check(ctx context.Context) error {
	_, err := s.Ensure(ctx)
	return err
}

// Flush empties both sets (tests and tools).
func (s *Set) Flush() error {
	h, err := s.handle()
	if err != nil {
		return err
	}
	for _, set := range []string{s.opt.SetV4, s.opt.SetV6} {
		if err := guard(func() error { return h.IpsetFlush(set) }); err != nil {
			return wrapKernel(err, "ipset flush %s", set)
		}
	}
	return nil
}

// Destroy removes both sets (they must not be referenced by a rule).
func (s *Set) Destroy() error {
	h, err := s.handle()
	if err != nil {
		return err
	}
	var errs []error
	for _, set := range []string{s.opt.SetV4, s.opt.SetV6} {
		err := guard(func() error { return h.IpsetDestroy(set) })
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, wrapKernel(err, "ipset destroy %s", set))
		}
	}
	return errors.Join(errs...)
}

// Close releases the netlink handle; the sets stay in the kernel.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.h.Close()
		s.bmu.Lock()
		if s.bs != nil {
			s.bs.Close()
			s.bs = nil
		}
		s.bmu.Unlock()
	}
	return nil
}

var _ ban.SetNamer = (*Set)(nil)

// SetNames returns the IPv4 and IPv6 set names.
func (s *Set) SetNames() (v4, v6 string) { return s.opt.SetV4, s.opt.SetV6 }

// MaxElem returns each set's capacity.
func (s *Set) MaxElem() int { return s.opt.MaxElem }
