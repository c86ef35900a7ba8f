// Package whitelist owns the set of addresses that must never be banned:
// static prefixes from the configuration and the live SIP registrations that
// FreeSWITCH reports (learned by eslwatch, or by replay from captures).
//
// An address stays whitelisted while any one of its registrations is live
// (its expiry plus a grace period has not passed); expiry is enforced by time
// on every lookup and by a periodic sweep, never by a goroutine or timer per
// entry. Allowed is the hot path of every ban decision: it is read-mostly
// (a sharded RWMutex map), allocation free and takes no global lock.
//
// The package must not ban, talk to FreeSWITCH or read configuration files:
// it only answers "is this address allowed, and why".
package whitelist

import (
	"cmp"
	"context"
	"encoding/binary"
	"iter"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/prometheus/client_golang/prometheus"
)

// The reasons Allowed gives. They are constants so that callers may compare
// them and use them as bounded metric labels.
const (
	ReasonStatic     = "static"
	ReasonRegistered = "registered"
)

// DefaultGrace matches the margin FreeSWITCH keeps a registration past its
// SIP expiry before deleting it (it stores expires+60 s).
const DefaultGrace = 60 * time.Second

// DefaultSweepEvery is how often Run drops expired registrations.
const DefaultSweepEvery = time.Second

// Registration is one live SIP registration as FreeSWITCH knows it.
// ExpiresAt is the SIP expiry (registration time + Expires); the whitelist
// keeps the registration for Grace beyond it.
type Registration struct {
	IP        netip.Addr `json:"-"`
	User      string     `json:"user"`
	Realm     string     `json:"realm"`
	Profile   string     `json:"profile"`
	Contact   string     `json:"contact"`
	CallID    string     `json:"call_id,omitempty"`
	UserAgent string     `json:"user_agent"`
	Node      string     `json:"node,omitempty"`
	ExpiresAt time.Time  `json:"expires_at"`
}

// Entry is the whitelist's view of one address. For a static prefix listed by
// Entries, IP is the prefix's first address and Prefix the prefix itself;
// Lookup sets Prefix to the static prefix that matched.
type Entry struct {
	IP            netip.Addr     `json:"ip"`
	Prefix        netip.Prefix   `json:"prefix,omitzero"`
	Static        bool           `json:"static"`
	Registrations []Registration `json:"registrations"`
}

// Options configures a Whitelist. Zero values take the defaults.
type Options struct {
	Static     []netip.Prefix
	Grace      time.Duration // default DefaultGrace; negative means none
	SweepEvery time.Duration // default DefaultSweepEvery
	Now        func() time.Time
	Registerer prometheus.Registerer // nil: a private registry
}

// Whitelist is safe for concurrent use.
//
// Two structures hold the registrations. The full records live in one map
// behind an RWMutex, for writers, Lookup and Entries. Allowed reads only a
// lock-free index: idxShards small immutable maps from address to "live
// until", each replaced whole (copy on write) when one of its addresses
// changes. A write thus copies about registrations/idxShards entries, and a
// lookup takes no lock at all.
type Whitelist struct {
	now        func() time.Time
	grace      int64 // ns
	sweepEvery time.Duration

	static atomic.Pointer[staticSet]
	// clock is the latest time the whitelist read from now: Run refreshes it
	// every SweepEvery and every write refreshes it, so Allowed needs no
	// clock read (65 ns on some virtual machines) and is exact to SweepEvery.
	clock atomic.Int64
	idx   [idxShards]atomic.Pointer[idxShard]

	mu       sync.RWMutex // writers Lock; Lookup, Entries, Len RLock
	data     addrMap
	byCall   map[uint64]netip.Addr // (node, call-id) -> address, for roaming phones
	nRegs    int
	minUntil int64  // lower bound of the earliest expiry+grace, for Sweep
	seq      uint64 // write sequence, see Mark
	dirty    []netip.Addr

	mRegs prometheus.Gauge
	mIPs  *prometheus.GaugeVec
}

type ipEntry struct {
	regs []reg
}

func (e *ipEntry) until(grace int64) int64 {
	var u int64
	for i := range e.regs {
		u = max(u, e.regs[i].expires+grace)
	}
	return u
}

// reg is the compact stored form of a Registration: the low-cardinality
// strings are interned, the others share one allocation.
type reg struct {
	blob                        string // user + contact + callID, copied
	userEnd, contactEnd         uint32
	realm, profile, agent, node unique.Handle[string]
	expires                     int64  // SIP expiry, unix ns
	updated                     uint64 // the write (Mark sequence) that last set it
}

func (r *reg) user() string    { return r.blob[:r.userEnd] }
func (r *reg) contact() string { return r.blob[r.userEnd:r.contactEnd] }
func (r *reg) callID() string  { return r.blob[r.contactEnd:] }

func newReg(r Registration, updated uint64) reg {
	// One copy: the caller's strings may be slices of a large event body.
	blob := strings.Clone(r.User + r.Contact + r.CallID)
	return reg{
		blob:       blob,
		userEnd:    uint32(len(r.User)),
		contactEnd: uint32(len(r.User) + len(r.Contact)),
		realm:      unique.Make(r.Realm),
		profile:    unique.Make(r.Profile),
		agent:      unique.Make(r.UserAgent),
		node:       unique.Make(r.Node),
		expires:    r.ExpiresAt.UnixNano(),
		updated:    updated,
	}
}

func (r *reg) registration(ip netip.Addr) Registration {
	return Registration{
		IP:        ip,
		User:      r.user(),
		Realm:     r.realm.Value(),
		Profile:   r.profile.Value(),
		Contact:   r.contact(),
		CallID:    r.callID(),
		UserAgent: r.agent.Value(),
		Node:      r.node.Value(),
		ExpiresAt: time.Unix(0, r.expires).UTC(),
	}
}

// New returns an empty Whitelist holding opts.Static.
func New(opts Options) *Whitelist {
	w := &Whitelist{
		now:        opts.Now,
		grace:      int64(opts.Grace),
		sweepEvery: opts.SweepEvery,
		data:       newAddrMap(),
		byCall:     make(map[uint64]netip.Addr),
		minUntil:   maxInt64,
	}
	if w.now == nil {
		w.now = time.Now
	}
	if opts.Grace == 0 {
		w.grace = int64(DefaultGrace)
	} else if opts.Grace < 0 {
		w.grace = 0
	}
	if w.sweepEvery <= 0 {
		w.sweepEvery = DefaultSweepEvery
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	w.mRegs = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "sipwarden",
		Name:      "registrations",
		Help:      "Live SIP registrations held by the whitelist.",
	})
	w.mIPs = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "sipwarden",
		Name:      "whitelist_ips",
		Help:      "Whitelisted entries by kind: static = configured prefixes, dynamic = addresses with a live registration.",
	}, []string{"kind"})
	reg.MustRegister(w.mRegs, w.mIPs)
	w.mIPs.WithLabelValues("dynamic").Set(0)
	w.SetStatic(opts.Static)
	w.tick()
	return w
}

// tick reads the clock and publishes it for Allowed.
func (w *Whitelist) tick() int64 {
	n := w.now().UnixNano()
	for {
		old := w.clock.Load()
		if n <= old || w.clock.CompareAndSwap(old, n) {
			return n
		}
	}
}

const maxInt64 = int64(^uint64(0) >> 1)

// addrMap keys IPv4 by uint32 and IPv6 by its 16 bytes (zones ignored):
// hashing a netip.Addr (24 bytes with a pointer) costs several times more.
type addrMap struct {
	v4 map[uint32]*ipEntry
	v6 map[[16]byte]*ipEntry
}

func newAddrMap() addrMap {
	return addrMap{v4: make(map[uint32]*ipEntry), v6: make(map[[16]byte]*ipEntry)}
}

func (m *addrMap) get(ip netip.Addr) *ipEntry {
	if ip.Is4() {
		b := ip.As4()
		return m.v4[binary.BigEndian.Uint32(b[:])]
	}
	return m.v6[ip.As16()]
}

func (m *addrMap) set(ip netip.Addr, e *ipEntry) {
	if ip.Is4() {
		b := ip.As4()
		m.v4[binary.BigEndian.Uint32(b[:])] = e
		return
	}
	m.v6[ip.As16()] = e
}

func (m *addrMap) del(ip netip.Addr) {
	if ip.Is4() {
		b := ip.As4()
		delete(m.v4, binary.BigEndian.Uint32(b[:]))
		return
	}
	delete(m.v6, ip.As16())
}

func (m *addrMap) len() int { return len(m.v4) + len(m.v6) }

// all yields every entry; the loop body may delete the current one.
func (m *addrMap) all() iter.Seq2[netip.Addr, *ipEntry] {
	return func(yield func(netip.Addr, *ipEntry) bool) {
		for k, e := range m.v4 {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], k)
			if !yield(netip.AddrFrom4(b), e) {
				return
			}
		}
		for k, e := range m.v6 {
			if !yield(netip.AddrFrom16(k), e) {
				return
			}
		}
	}
}

// callKey hashes (node, call-id) for the roaming index. A collision only
// loses the hint: the reg itself is always matched on its real fields.
func callKey(node, callID string) uint64 {
	h := uint64(14695981039346656037) // FNV-1a
	for i := 0; i < len(node); i++ {
		h ^= uint64(node[i])
		h *= 1099511628211
	}
	h ^= 0xff
	h *= 1099511628211
	for i := 0; i < len(callID); i++ {
		h ^= uint64(callID[i])
		h *= 1099511628211
	}
	return h
}

// Allowed reports whether ip must not be banned, and why (ReasonStatic or
// ReasonRegistered). It takes no lock and does not allocate. Expiry is
// judged against the whitelist's clock, refreshed by Run every SweepEvery
// and by every write; AllowedAt is exact.
func (w *Whitelist) Allowed(ip netip.Addr) (why string, ok bool) {
	return w.allowedAt(ip, w.clock.Load())
}

// AllowedAt is Allowed at time t, exact to the nanosecond (replay asks with
// the record's own time).
func (w *Whitelist) AllowedAt(ip netip.Addr, t time.Time) (why string, ok bool) {
	return w.allowedAt(ip, t.UnixNano())
}

func (w *Whitelist) allowedAt(ip netip.Addr, now int64) (why string, ok bool) {
	ip = ip.Unmap()
	if s := w.static.Load(); s.n > 0 && s.contains(ip) {
		return ReasonStatic, true
	}
	var until int64
	if ip.Is4() {
		b := ip.As4()
		k := binary.BigEndian.Uint32(b[:])
		if s := w.idx[idx4(k)].Load(); s != nil {
			until = s.get4(k)
		}
	} else if ip.IsValid() {
		k := ip.As16()
		if s := w.idx[idx16(k)].Load(); s != nil {
			until = s.v6[k]
		}
	}
	if until > now {
		return ReasonRegistered, true
	}
	return "", false
}

// Lookup returns what the whitelist holds for ip: its live registrations and
// whether a static prefix covers it. ok is false when ip is not whitelisted.
func (w *Whitelist) Lookup(ip netip.Addr) (Entry, bool) {
	ip = ip.Unmap().WithZone("")
	e := Entry{IP: ip, Registrations: []Registration{}}
	if p, ok := w.static.Load().match(ip); ok {
		e.Static, e.Prefix = true, p
	}
	now := w.tick() // also brings Allowed's clock up to date
	w.mu.RLock()
	if ie := w.data.get(ip); ie != nil {
		for i := range ie.regs {
			if ie.regs[i].expires+w.grace > now {
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
	now := w.tick() // also brings Allowed's clock up to date
	s := w.static.Load()
	out := []Entry{}
	w.mu.RLock()
	for ip, ie := range w.data.all() {
		e := Entry{IP: ip}
		for j := range ie.regs {
			if ie.regs[j].expires+w.grace > now {
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
	return w.data.len(), w.nRegs
}

// Upsert adds a registration or renews the one with the same node and
// call-id (or, without a call-id, the same node, user, realm and contact).
// A registration whose call-id moved to another address (a roaming phone) is
// removed from the old address. Invalid addresses are ignored.
func (w *Whitelist) Upsert(r Registration) {
	r.IP = r.IP.Unmap().WithZone("")
	if !r.IP.IsValid() {
		return
	}
	now := w.tick()
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.publishLocked()
	if r.ExpiresAt.UnixNano()+w.grace <= now {
		// Already dead: treat it as the removal of the same registration.
		w.removeLocked(r.Node, r.IP, r.User, r.Realm, r.Contact, r.CallID)
		return
	}
	if r.CallID != "" {
		k := callKey(r.Node, r.CallID)
		if old, ok := w.byCall[k]; ok && old != r.IP {
			w.removeLocked(r.Node, old, "", "", "", r.CallID)
		}
		w.byCall[k] = r.IP
	}
	nr := newReg(r, w.bump())
	e := w.data.get(r.IP)
	if e == nil {
		e = &ipEntry{regs: make([]reg, 0, 1)}
		w.data.set(r.IP, e)
	}
	if i := e.find(&nr); i >= 0 {
		if e.regs[i].callID() != nr.callID() {
			w.dropCallLocked(&e.regs[i], r.IP)
		}
		e.regs[i] = nr
	} else {
		e.regs = append(e.regs, nr)
		w.nRegs++
	}
	w.minUntil = min(w.minUntil, nr.expires+w.grace)
	w.dirty = append(w.dirty, r.IP)
}

// find returns the registration nr renews: the same node and call-id, or
// else the same node, user, realm and contact (FreeSWITCH's default
// multiple-registrations=contact keys a registration by its contact, and a
// refresh may come with a new call-id).
func (e *ipEntry) find(nr *reg) int {
	cid := nr.callID()
	if cid != "" {
		for i := range e.regs {
			if e.regs[i].node == nr.node && e.regs[i].callID() == cid {
				return i
			}
		}
	}
	for i := range e.regs {
		r := &e.regs[i]
		if r.node == nr.node && r.user() == nr.user() && r.realm == nr.realm && r.contact() == nr.contact() &&
			(nr.contact() != "" || r.callID() == "" && cid == "") {
			return i
		}
	}
	return -1
}

// Remove removes one registration of node at ip: the one with callID when
// callID is given and known, else those of user@realm (realm "" = any).
// node "" matches every node.
func (w *Whitelist) Remove(node string, ip netip.Addr, user, realm, callID string) {
	w.RemoveRegistration(Registration{Node: node, IP: ip, User: user, Realm: realm, CallID: callID})
}

// RemoveRegistration is Remove with the contact as an extra discriminator for
// the fallback match (FreeSWITCH's default multiple-registrations=contact
// deletes by user, host and contact, and an un-REGISTER may carry a new
// call-id). An invalid r.IP with a known call-id finds the address by it.
// It returns how many registrations were removed.
func (w *Whitelist) RemoveRegistration(r Registration) int {
	w.tick()
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.removeLocked(r.Node, r.IP.Unmap().WithZone(""), r.User, r.Realm, r.Contact, r.CallID)
	w.publishLocked()
	return n
}

func (w *Whitelist) removeLocked(node string, ip netip.Addr, user, realm, contact, callID string) int {
	if !ip.IsValid() {
		if callID == "" || node == "" {
			return 0
		}
		old, ok := w.byCall[callKey(node, callID)]
		if !ok {
			return 0
		}
		ip = old
	}
	e := w.data.get(ip)
	if e == nil {
		return 0
	}
	nodeOK := func(r *reg) bool { return node == "" || r.node.Value() == node }
	count := func(m func(*reg) bool) int {
		n := 0
		for i := range e.regs {
			if m(&e.regs[i]) {
				n++
			}
		}
		return n
	}
	byCID := func(r *reg) bool { return nodeOK(r) && r.callID() == callID }
	byUser := func(r *reg) bool {
		return nodeOK(r) && r.user() == user && (realm == "" || r.realm.Value() == realm)
	}
	byContact := func(r *reg) bool { return byUser(r) && r.contact() == contact }
	var match func(*reg) bool
	switch {
	case callID != "" && count(byCID) > 0:
		match = byCID
	case user != "" && contact != "" && count(byContact) > 0:
		match = byContact
	case user != "":
		match = byUser
	default:
		return 0
	}
	removed := 0
	kept := e.regs[:0]
	for i := range e.regs {
		r := e.regs[i]
		if match(&r) {
			removed++
			w.dropCallLocked(&r, ip)
			continue
		}
		kept = append(kept, r)
	}
	clear(e.regs[len(kept):])
	e.regs = kept
	w.nRegs -= removed
	if len(e.regs) == 0 {
		w.data.del(ip)
	}
	if removed > 0 {
		w.dirty = append(w.dirty, ip)
	}
	return removed
}

func (w *Whitelist) dropCallLocked(r *reg, ip netip.Addr) {
	if cid := r.callID(); cid != "" {
		k := callKey(r.node.Value(), cid)
		if w.byCall[k] == ip {
			delete(w.byCall, k)
		}
	}
}

// publishLocked copies the index shards of the addresses changed since the
// last publish, applies the changes and swaps them in, then updates the
// gauges. Each shard is copied once however many of its addresses changed.
func (w *Whitelist) publishLocked() {
	if len(w.dirty) > 0 {
		slices.SortFunc(w.dirty, func(a, b netip.Addr) int { return cmp.Compare(idxOf(a), idxOf(b)) })
		for i := 0; i < len(w.dirty); {
			s := idxOf(w.dirty[i])
			j := i
			for j < len(w.dirty) && idxOf(w.dirty[j]) == s {
				j++
			}
			w.publishShard(s, w.dirty[i:j])
			i = j
		}
		clear(w.dirty)
		w.dirty = w.dirty[:0]
		if cap(w.dirty) > 4096 {
			w.dirty = nil
		}
	}
	w.mRegs.Set(float64(w.nRegs))
	w.mIPs.WithLabelValues("dynamic").Set(float64(w.data.len()))
}

func (w *Whitelist) publishShard(s uint64, ips []netip.Addr) {
	ch4 := make(map[uint32]int64, len(ips))
	var ch6 map[[16]byte]int64
	for _, ip := range ips {
		var until int64
		if e := w.data.get(ip); e != nil {
			until = e.until(w.grace)
		}
		if ip.Is4() {
			b := ip.As4()
			ch4[binary.BigEndian.Uint32(b[:])] = until
			continue
		}
		if ch6 == nil {
			ch6 = make(map[[16]byte]int64)
		}
		ch6[ip.As16()] = until
	}
	w.idx[s].Store(w.idx[s].Load().with(ch4, ch6))
}

// ReplaceNode makes regs the whole set of registrations of node (a resync):
// the node's registrations missing from regs are removed, the others added
// or renewed. A registration in regs without a user agent or contact keeps
// the one an earlier event gave it (FreeSWITCH's listing has no user agent).
func (w *Whitelist) ReplaceNode(node string, regs []Registration) {
	w.replaceNode(node, regs, 0, false)
}

// Mark returns the sequence number of the latest write, for ReplaceNodeAfter.
func (w *Whitelist) Mark() uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.seq
}

// ReplaceNodeAfter is ReplaceNode that keeps the node's registrations
// written after mark (taken with Mark when the listing was requested):
// events that raced with the listing must not be undone by it.
// Lookups see every address either before or after the change.
func (w *Whitelist) ReplaceNodeAfter(node string, regs []Registration, mark uint64) {
	w.replaceNode(node, regs, mark, true)
}

// bump starts a write; w.mu is held.
func (w *Whitelist) bump() uint64 {
	w.seq++
	return w.seq
}

func (w *Whitelist) replaceNode(node string, regs []Registration, mark uint64, keepNewer bool) {
	now := w.tick()
	nodeH := unique.Make(node)
	add := make(map[netip.Addr][]Registration, len(regs))
	for _, r := range regs {
		r.IP = r.IP.Unmap().WithZone("")
		r.Node = node
		if !r.IP.IsValid() || r.ExpiresAt.UnixNano()+w.grace <= now {
			continue
		}
		add[r.IP] = append(add[r.IP], r)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	seq := w.bump()
	if !keepNewer {
		mark = seq
	}
	// Addresses that hold registrations now: renew what the listing still
	// has (in place, the common case), drop the node's others, add the new.
	for ip, e := range w.data.all() {
		rs := add[ip]
		delete(add, ip)
		changed := w.mergeLocked(ip, e, nodeH, rs, mark, seq)
		if !changed {
			continue
		}
		w.dirty = append(w.dirty, ip)
		if len(e.regs) == 0 {
			w.data.del(ip)
		}
	}
	// Addresses new to the whitelist.
	for ip, rs := range add {
		e := &ipEntry{regs: make([]reg, 0, len(rs))}
		w.mergeLocked(ip, e, nodeH, rs, mark, seq)
		if len(e.regs) > 0 {
			w.data.set(ip, e)
			w.dirty = append(w.dirty, ip)
		}
	}
	w.publishLocked()
}

// mergeLocked applies a listing's registrations rs of node at ip to e and
// reports whether e's registrations changed.
func (w *Whitelist) mergeLocked(ip netip.Addr, e *ipEntry, node unique.Handle[string], rs []Registration, mark, seq uint64) bool {
	used := make([]bool, len(rs))
	take := func(cid string) int {
		if cid == "" {
			return -1
		}
		for j := range rs {
			if !used[j] && rs[j].CallID == cid {
				used[j] = true
				return j
			}
		}
		return -1
	}
	changed := false
	kept := e.regs[:0]
	for _, r := range e.regs {
		if r.node != node {
			kept = append(kept, r)
			continue
		}
		if r.updated > mark {
			// An event newer than the listing request: it wins.
			take(r.callID())
			kept = append(kept, r)
			continue
		}
		j := take(r.callID())
		if j < 0 {
			w.dropCallLocked(&r, ip)
			w.nRegs--
			changed = true
			continue
		}
		n := rs[j]
		if n.UserAgent == "" {
			n.UserAgent = r.agent.Value()
		}
		if n.Contact == "" {
			n.Contact = r.contact()
		}
		exp := n.ExpiresAt.UnixNano()
		if exp != r.expires {
			changed = true
		}
		if n.User == r.user() && n.Contact == r.contact() && n.Realm == r.realm.Value() &&
			n.Profile == r.profile.Value() && n.UserAgent == r.agent.Value() {
			r.expires, r.updated = exp, seq
		} else {
			r = newReg(n, seq)
		}
		w.minUntil = min(w.minUntil, r.expires+w.grace)
		kept = append(kept, r)
	}
	clear(e.regs[len(kept):])
	e.regs = kept
	for j := range rs {
		if used[j] {
			continue
		}
		nr := newReg(rs[j], seq)
		if e.find(&nr) >= 0 {
			continue // duplicate in the listing, or a newer event holds it
		}
		e.regs = append(e.regs, nr)
		w.nRegs++
		if rs[j].CallID != "" {
			w.byCall[callKey(rs[j].Node, rs[j].CallID)] = ip
		}
		w.minUntil = min(w.minUntil, nr.expires+w.grace)
		changed = true
	}
	return changed
}

// Sweep drops the registrations whose expiry plus grace has passed and
// returns how many it dropped. Run calls it every SweepEvery.
func (w *Whitelist) Sweep() int {
	now := w.tick()
	w.mu.RLock()
	skip := w.minUntil > now
	w.mu.RUnlock()
	if skip {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	removed := 0
	next := maxInt64
	for ip, e := range w.data.all() {
		kept := e.regs[:0]
		for _, r := range e.regs {
			if r.expires+w.grace <= now {
				removed++
				w.dropCallLocked(&r, ip)
				continue
			}
			kept = append(kept, r)
			next = min(next, r.expires+w.grace)
		}
		if len(kept) == len(e.regs) {
			continue
		}
		clear(e.regs[len(kept):])
		e.regs = kept
		if len(e.regs) == 0 {
			w.data.del(ip)
		}
		w.dirty = append(w.dirty, ip)
	}
	w.minUntil = next
	w.nRegs -= removed
	w.publishLocked()
	return removed
}

// Run sweeps expired registrations every SweepEvery until ctx is done.
func (w *Whitelist) Run(ctx context.Context) error {
	t := time.NewTicker(w.sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.Sweep()
		}
	}
}

// SetStatic replaces the static prefixes (a configuration reload).
// IPv4-mapped prefixes are unmapped and every prefix is masked.
func (w *Whitelist) SetStatic(prefixes []netip.Prefix) {
	s := newStaticSet(prefixes)
	w.static.Store(s)
	w.mIPs.WithLabelValues("static").Set(float64(s.n))
}

// Static returns the static prefixes in force.
func (w *Whitelist) Static() []netip.Prefix {
	return slices.Clone(w.static.Load().prefixes)
}

// staticSet answers prefix membership with one map probe per distinct
// prefix length, so long static lists stay cheap; IPv4 probes use integer
// keys.
type staticSet struct {
	n        int
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
		if !p.IsValid() {
			continue
		}
		a, bits := p.Addr().WithZone(""), p.Bits()
		if a.Is4In6() {
			bits = max(bits-96, 0)
			a = a.Unmap()
		}
		p = netip.PrefixFrom(a, bits).Masked()
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
	s.n = len(s.prefixes)
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
