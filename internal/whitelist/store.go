package whitelist

import (
	"hash/maphash"
	"math/bits"
	"net/netip"
	"strings"
	"time"
	"unique"
)

// The store: every address with registrations, and two indexes. All of it
// is guarded by Whitelist.mu.
type store struct {
	byIP   map[netip.Addr]*ipEntry
	byCall map[uint64]netip.Addr // hash of (node, call-id) -> address, for roaming phones
	seed   maphash.Seed
	// nets groups the addresses of byIP by their /24 (IPv4) or /64 (IPv6),
	// so that Registered answers for a prefix without a walk of everything.
	nets       map[netip.Prefix][]netip.Addr
	nRegs      int
	seq        uint64 // write sequence, see Mark
	minExpires int64  // lower bound of the earliest SIP expiry, for Sweep
}

const (
	maxInt64 = int64(^uint64(0) >> 1)
	bucket4  = 24
	bucket6  = 64
)

func newStore() store {
	return store{
		byIP:       make(map[netip.Addr]*ipEntry),
		byCall:     make(map[uint64]netip.Addr),
		seed:       maphash.MakeSeed(),
		nets:       make(map[netip.Prefix][]netip.Addr),
		minExpires: maxInt64,
	}
}

// callKey hashes (node, call-id) for the roaming index. A collision only
// loses the hint: a registration is always matched on its real fields.
func (s *store) callKey(node, callID string) uint64 {
	return maphash.String(s.seed, callID) ^ bits.RotateLeft64(maphash.String(s.seed, node), 17)
}

type ipEntry struct {
	regs  []reg
	first [1]reg // regs' first backing array: one allocation for the common single registration
}

func newEntry() *ipEntry {
	e := &ipEntry{}
	e.regs = e.first[:0]
	return e
}

// live reports whether any registration of e is live at now.
func (e *ipEntry) live(now, grace int64) bool {
	for i := range e.regs {
		if e.regs[i].expires > now-grace {
			return true
		}
	}
	return false
}

// reg is the compact stored form of a Registration: the low-cardinality
// strings are interned, the others share one allocation.
type reg struct {
	blob                        string // user + contact + callID, copied
	userEnd, contactEnd         uint32
	realm, profile, agent, node unique.Handle[string]
	expires                     int64  // SIP expiry, unix ns (wall clock)
	updated                     uint64 // the write (Mark sequence) that last set it
}

func (r *reg) user() string    { return r.blob[:r.userEnd] }
func (r *reg) contact() string { return r.blob[r.userEnd:r.contactEnd] }
func (r *reg) callID() string  { return r.blob[r.contactEnd:] }

func newReg(r *Registration, updated uint64) reg {
	// One copy (a concatenation may return an operand as it is): the
	// caller's strings may be slices of a large body.
	var b strings.Builder
	b.Grow(len(r.User) + len(r.Contact) + len(r.CallID))
	b.WriteString(r.User)
	b.WriteString(r.Contact)
	b.WriteString(r.CallID)
	blob := b.String()
	return reg{
		blob:       blob,
		userEnd:    uint32(len(r.User)),
		contactEnd: uint32(len(r.User) + len(r.Contact)),
		realm:      unique.Make(r.Realm), // unique.Make copies strings
		profile:    unique.Make(r.Profile),
		agent:      unique.Make(r.UserAgent),
		node:       unique.Make(r.Node),
		expires:    r.ExpiresAt.UnixNano(),
		updated:    updated,
	}
}

// same reports whether r holds exactly the fields of n (the expiry aside):
// a renewal then only moves the expiry, without copying anything.
func (r *reg) same(n *Registration) bool {
	return r.user() == n.User && r.contact() == n.Contact && r.callID() == n.CallID &&
		r.realm.Value() == n.Realm && r.profile.Value() == n.Profile &&
		r.agent.Value() == n.UserAgent && r.node.Value() == n.Node
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

// find returns the registration n renews: the same node and call-id, or
// else the same node, user, realm and contact (FreeSWITCH's default
// multiple-registrations=contact keys a registration by its contact, and a
// refresh may come with a new call-id).
func (e *ipEntry) find(n *Registration) int {
	if n.CallID != "" {
		for i := range e.regs {
			if e.regs[i].callID() == n.CallID && e.regs[i].node.Value() == n.Node {
				return i
			}
		}
	}
	for i := range e.regs {
		r := &e.regs[i]
		if r.node.Value() == n.Node && r.user() == n.User && r.realm.Value() == n.Realm && r.contact() == n.Contact &&
			(n.Contact != "" || r.callID() == "" && n.CallID == "") {
			return i
		}
	}
	return -1
}

func bucketOf(ip netip.Addr) netip.Prefix {
	bits := bucket6
	if ip.Is4() {
		bits = bucket4
	}
	p, _ := ip.Prefix(bits)
	return p
}

func (s *store) addEntry(ip netip.Addr, e *ipEntry) {
	s.byIP[ip] = e
	b := bucketOf(ip)
	s.nets[b] = append(s.nets[b], ip)
}

func (s *store) delEntry(ip netip.Addr) {
	delete(s.byIP, ip)
	b := bucketOf(ip)
	as := s.nets[b]
	for i, a := range as {
		if a == ip {
			as[i] = as[len(as)-1]
			as = as[:len(as)-1]
			break
		}
	}
	if len(as) == 0 {
		delete(s.nets, b)
		return
	}
	s.nets[b] = as
}

func (s *store) bump() uint64 {
	s.seq++
	return s.seq
}

func (s *store) dropCall(r *reg, ip netip.Addr) {
	if r.callID() == "" {
		return
	}
	k := s.callKey(r.node.Value(), r.callID())
	if s.byCall[k] == ip {
		delete(s.byCall, k)
	}
}

func (s *store) setCall(r *reg, ip netip.Addr) {
	if r.callID() != "" {
		s.byCall[s.callKey(r.node.Value(), r.callID())] = ip
	}
}

// Upsert adds a registration or renews the one with the same node and
// call-id (or, without a call-id, the same node, user, realm and contact).
// A registration whose call-id moved to another address (a roaming phone) is
// removed from the old address. Invalid addresses are ignored; an already
// expired registration removes the one it would renew.
func (w *Whitelist) Upsert(r Registration) {
	r.IP = r.IP.Unmap().WithZone("")
	if !r.IP.IsValid() {
		return
	}
	now := w.clock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if r.ExpiresAt.UnixNano() <= now-w.grace {
		w.store.remove(r.Node, r.IP, r.User, r.Realm, r.Contact, r.CallID)
	} else {
		w.store.upsert(&r, w.store.bump())
	}
	w.publishLocked()
}

func (s *store) upsert(r *Registration, seq uint64) {
	if r.CallID != "" {
		if old, ok := s.byCall[s.callKey(r.Node, r.CallID)]; ok && old != r.IP {
			s.remove(r.Node, old, "", "", "", r.CallID)
		}
	}
	e := s.byIP[r.IP]
	if e == nil {
		e = newEntry()
		s.addEntry(r.IP, e)
	}
	exp := r.ExpiresAt.UnixNano()
	switch i := e.find(r); {
	case i < 0:
		e.regs = append(e.regs, newReg(r, seq))
		s.nRegs++
		s.setCall(&e.regs[len(e.regs)-1], r.IP)
	case e.regs[i].same(r):
		e.regs[i].expires, e.regs[i].updated = exp, seq
	default:
		s.dropCall(&e.regs[i], r.IP)
		e.regs[i] = newReg(r, seq)
		s.setCall(&e.regs[i], r.IP)
	}
	s.minExpires = min(s.minExpires, exp)
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
	w.mu.Lock()
	defer w.mu.Unlock()
	w.store.bump()
	n := w.store.remove(r.Node, r.IP.Unmap().WithZone(""), r.User, r.Realm, r.Contact, r.CallID)
	w.publishLocked()
	return n
}

func (s *store) remove(node string, ip netip.Addr, user, realm, contact, callID string) int {
	if !ip.IsValid() {
		if callID == "" || node == "" {
			return 0
		}
		old, ok := s.byCall[s.callKey(node, callID)]
		if !ok {
			return 0
		}
		ip = old
	}
	e := s.byIP[ip]
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
			s.dropCall(&r, ip)
			continue
		}
		kept = append(kept, r)
	}
	clear(e.regs[len(kept):])
	e.regs = kept
	s.nRegs -= removed
	if len(e.regs) == 0 {
		s.delEntry(ip)
	}
	return removed
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
	return w.store.seq
}

// ReplaceNodeAfter is ReplaceNode that keeps the node's registrations
// written after mark (taken with Mark when the listing was requested):
// events that raced with the listing must not be undone by it.
func (w *Whitelist) ReplaceNodeAfter(node string, regs []Registration, mark uint64) {
	w.replaceNode(node, regs, mark, true)
}

func (w *Whitelist) replaceNode(node string, regs []Registration, mark uint64, keepNewer bool) {
	now := w.clock()
	nodeH := unique.Make(node)
	w.mu.Lock()
	defer w.mu.Unlock()
	s := &w.store
	seq := s.bump()
	if !keepNewer {
		mark = seq - 1
	}
	// Pass 1: add or renew every live registration of the listing; each
	// one touched is stamped seq (> mark).
	limit := now - w.grace
	if len(s.byIP) == 0 && len(regs) > 0 {
		// The first resync after a start: size the maps once.
		s.byIP = make(map[netip.Addr]*ipEntry, len(regs))
		s.nets = make(map[netip.Prefix][]netip.Addr, len(regs)/4)
	}
	for i := range regs {
		r := regs[i]
		r.IP = r.IP.Unmap().WithZone("")
		r.Node = node
		if !r.IP.IsValid() || r.ExpiresAt.UnixNano() <= limit {
			continue
		}
		s.renew(&r, mark, seq)
	}
	// Pass 2: the node's registrations that the listing did not name and
	// no event renewed since mark are gone.
	for ip, e := range s.byIP {
		kept := e.regs[:0]
		for _, r := range e.regs {
			if r.node == nodeH && r.updated <= mark {
				s.dropCall(&r, ip)
				s.nRegs--
				continue
			}
			kept = append(kept, r)
		}
		if len(kept) == len(e.regs) {
			continue
		}
		clear(e.regs[len(kept):])
		e.regs = kept
		if len(e.regs) == 0 {
			s.delEntry(ip)
		}
	}
	w.publishLocked()
}

// renew applies one listed registration r: a registration written after
// mark (an event newer than the listing request) wins over it; otherwise
// it is renewed or added, stamped seq. A listing has no user agent, and may
// lack a contact: those of the registration it renews are kept.
func (s *store) renew(r *Registration, mark, seq uint64) {
	if r.CallID != "" {
		if old, ok := s.byCall[s.callKey(r.Node, r.CallID)]; ok && old != r.IP {
			if e := s.byIP[old]; e != nil {
				if i := e.find(r); i >= 0 && e.regs[i].updated > mark {
					return // a newer event moved it: the event wins
				}
			}
			s.remove(r.Node, old, "", "", "", r.CallID)
		}
	}
	e := s.byIP[r.IP]
	if e == nil {
		e = newEntry()
		s.addEntry(r.IP, e)
	}
	i := e.find(r)
	if i < 0 {
		e.regs = append(e.regs, newReg(r, seq))
		s.nRegs++
		s.setCall(&e.regs[len(e.regs)-1], r.IP)
		s.minExpires = min(s.minExpires, r.ExpiresAt.UnixNano())
		return
	}
	cur := &e.regs[i]
	if cur.updated > mark {
		return
	}
	if cur.updated == seq {
		return // listed twice: the first row stands
	}
	if r.UserAgent == "" {
		r.UserAgent = cur.agent.Value()
	}
	if r.Contact == "" {
		r.Contact = cur.contact()
	}
	if cur.same(r) {
		cur.expires, cur.updated = r.ExpiresAt.UnixNano(), seq
	} else {
		s.dropCall(cur, r.IP)
		*cur = newReg(r, seq)
		s.setCall(cur, r.IP)
	}
	s.minExpires = min(s.minExpires, cur.expires)
}

// Sweep drops the registrations whose expiry plus grace has passed and
// returns how many it dropped. Run calls it every SweepEvery.
func (w *Whitelist) Sweep() int {
	now := w.clock()
	w.mu.RLock()
	skip := w.store.minExpires > now-w.grace
	w.mu.RUnlock()
	if skip {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	s := &w.store
	limit := now - w.grace
	removed := 0
	next := maxInt64
	for ip, e := range s.byIP {
		kept := e.regs[:0]
		for _, r := range e.regs {
			if r.expires <= limit {
				removed++
				s.dropCall(&r, ip)
				continue
			}
			kept = append(kept, r)
			next = min(next, r.expires)
		}
		if len(kept) == len(e.regs) {
			continue
		}
		clear(e.regs[len(kept):])
		e.regs = kept
		if len(e.regs) == 0 {
			s.delEntry(ip)
		}
	}
	s.minExpires = next
	s.nRegs -= removed
	w.publishLocked()
	return removed
}
