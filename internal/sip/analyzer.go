package sip

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// ErrNotSupported is returned by sources this platform cannot provide
// (live capture outside Linux).
var ErrNotSupported = errors.New("not supported on this platform")

// Packet is one transport payload with its addresses, as seen on the wire or
// reported by HEP. Src and Dst are the packet's, never a header's claim.
type Packet struct {
	Src, Dst netip.AddrPort
	TCP      bool // framed as TCP: the payload may hold several messages
	// Verified: the transport proved a round trip with Src (a TCP flow
	// whose handshake was seen). Offenses from the packet are marked
	// verified; a UDP packet, a TCP segment without its handshake or
	// anything claimed inside HEP never is.
	Verified bool
	Time     time.Time // the packet's own time; zero means Options.Now()
	Payload  []byte    // not retained after Analyzer.Packet returns
	Source   offense.Source
}

// Registrar receives registrations learned from 200 OKs to REGISTER that a
// FreeSWITCH address sent.
// *whitelist.Whitelist satisfies it. If it also has the whitelist's Remove
// method, a 200 OK that leaves no binding (expires=0, no Contact) removes the
// registration.
type Registrar interface {
	Upsert(whitelist.Registration)
}

// RegistrationEvent is one registration a FreeSWITCH 200 OK to REGISTER
// confirmed (or ended, Ended true) at At; Server is the address that sent it.
type RegistrationEvent struct {
	At           time.Time
	Server       netip.Addr
	Registration whitelist.Registration
	Ended        bool
}

// RegistrationObserver, when Options.Registrations implements it, receives
// RegistrationEvents instead of Upsert/Remove calls (replay applies them at
// their own time, never before).
type RegistrationObserver interface {
	Registration(RegistrationEvent)
}

type registrationRemover interface {
	Remove(node string, ip netip.Addr, user, realm, callID string)
}

// Options configure an Analyzer.
type Options struct {
	Config
	Sink          offense.Sink // required
	Registrations Registrar    // may be nil
	Logger        *slog.Logger
	Registerer    prometheus.Registerer // nil: a private registry
	Now           func() time.Time
	// Servers reports whether an address is FreeSWITCH's own: only
	// responses from such an address are evidence (401/403/404, 200 OK to
	// REGISTER). Nil, with InferServers false: no response is evidence.
	Servers func(netip.Addr) bool
	// InferServers (replay of a capture) also takes as FreeSWITCH any
	// address that answered a request sent to it (same Call-ID, the
	// requester's address as destination).
	InferServers bool
	// MaxRegistrationExpiry caps the lifetime of a registration learned
	// from a 200 OK (default DefaultMaxRegistrationExpiry).
	MaxRegistrationExpiry time.Duration
}

// DefaultMaxRegistrationExpiry caps a learned registration's lifetime: a
// forged or odd expires=999999999 cannot protect an address for years.
const DefaultMaxRegistrationExpiry = time.Hour

// Analyzer turns SIP packets into offenses. Packet is safe for concurrent use.
type Analyzer struct {
	cfg    Config
	sink   offense.Sink
	reg    Registrar
	rem    registrationRemover
	log    *slog.Logger
	now    func() time.Time
	parser *sipmsg.Parser
	ua     *seqMatcher // normalised signatures in normalised free text
	uaURI  *seqMatcher // lower-case signatures in the URIs
	toll   *tollMatcher
	table  *table
	m      *metrics
	seed   maphash.Seed

	floodWin, scanWin int64
	lastSweep         atomic.Int64

	servers   func(netip.Addr) bool
	infer     *inference // nil unless Options.InferServers
	maxRegExp time.Duration

	bufs sync.Pool // *scratch
}

type scratch struct {
	info msgInfo
	hay  []byte
	norm []byte
}

// NewAnalyzer validates the config and builds an Analyzer.
func NewAnalyzer(o Options) (*Analyzer, error) {
	d := DefaultConfig()
	c := o.Config
	if c.ScanFailures == 0 {
		c.ScanFailures = d.ScanFailures
	}
	if len(c.SIPPorts) == 0 {
		c.SIPPorts = d.SIPPorts
	}
	if c.MaxTrackedIPs == 0 {
		c.MaxTrackedIPs = d.MaxTrackedIPs
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("sip config: %w", err)
	}
	if o.Sink == nil {
		return nil, errors.New("sip: Options.Sink is required")
	}
	toll, err := newTollMatcher(c.TollPatterns)
	if err != nil {
		return nil, fmt.Errorf("sip toll patterns: %w", err)
	}
	a := &Analyzer{
		cfg:      c,
		sink:     o.Sink,
		reg:      o.Registrations,
		log:      o.Logger,
		now:      o.Now,
		parser:   sipmsg.NewParser(),
		ua:       newUAMatcher(c.ScannerUserAgents, true),
		uaURI:    newUAMatcher(c.ScannerUserAgents, false),
		toll:     toll,
		table:    newTable(c.MaxTrackedIPs),
		seed:     maphash.MakeSeed(),
		floodWin: int64(c.FloodWindow),
		scanWin:  int64(c.ScanWindow),
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With("component", "sip")
	if a.now == nil {
		a.now = time.Now
	}
	a.servers = o.Servers
	if o.InferServers {
		a.infer = newInference()
	}
	a.maxRegExp = o.MaxRegistrationExpiry
	if a.maxRegExp <= 0 {
		a.maxRegExp = DefaultMaxRegistrationExpiry
	}
	if rem, ok := o.Registrations.(registrationRemover); ok {
		a.rem = rem
	}
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	a.m = newMetrics(reg, a.table)
	a.bufs.New = func() any { return &scratch{hay: make([]byte, 0, 1100), norm: make([]byte, 0, 1100)} }
	return a, nil
}

// payload kinds seen before parsing
const (
	kindRequest = iota
	kindResponse
	kindKeepalive
	kindSTUN
)

func classify(b []byte) int {
	if len(b) >= 8 && string(b[:8]) == "SIP/2.0 " {
		return kindResponse
	}
	if len(b) >= 20 && b[0]&0xC0 == 0 && b[4] == 0x21 && b[5] == 0x12 && b[6] == 0xA4 && b[7] == 0x42 {
		return kindSTUN
	}
	for _, c := range b {
		if c != '\r' && c != '\n' && c != ' ' && c != 0 && c != '\t' {
			return kindRequest
		}
	}
	return kindKeepalive // empty, CRLF keep-alives, NUL pings
}

// Packet analyses one payload. It never blocks for long and never panics on
// bad input: bad input is counted and, when it is SIP's fault, reported as
// malformed_sip.
func (a *Analyzer) Packet(p Packet) {
	sm := a.m.source(p.Source)
	t := p.Time
	if t.IsZero() {
		t = a.now()
	}
	now := t.UnixNano()
	a.maybeSweep(now)
	if !p.TCP {
		a.message(p, p.Payload, t, now, sm)
		return
	}
	// TCP (reassembled by the capture, or whole messages from HEP): it
	// must start at a message boundary.
	b := skipLeadingSpace(p.Payload)
	if len(b) == 0 {
		return
	}
	if !looksLikeStartLine(b) {
		sm.skipped("tcp_continuation")
		return
	}
	for first := true; len(b) > 0; first = false {
		n := tcpMessageLen(b)
		if n < 0 {
			sm.skipped("tcp_partial")
			return
		}
		// Without a proven round trip the payload is one packet's worth
		// of evidence: its first message.
		if first || p.Verified {
			a.message(p, b[:n], t, now, sm)
		} else {
			sm.skipped("tcp_unverified_extra")
		}
		b = skipLeadingSpace(b[n:])
	}
}

// skipLeadingSpace drops the CR, LF, space and tab bytes sofia-sip skips
// before a start line (RFC 3261 7.5 allows CRLFs; sofia takes blanks too),
// so that a scanner cannot hide behind them.
func skipLeadingSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == '\r' || b[0] == '\n' || b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// looksLikeStartLine reports whether b starts like a request or status line.
func looksLikeStartLine(b []byte) bool {
	if bytes.HasPrefix(b, []byte("SIP/2.0 ")) {
		return true
	}
	sp := bytes.IndexByte(b[:min(len(b), 24)], ' ')
	if sp < 2 || !isUpperAlpha(b[:sp]) {
		return false
	}
	r := b[sp+1:]
	return len(r) >= 4 && (eqFold(r[:4], "sip:") || len(r) >= 5 && eqFold(r[:5], "sips:") || len(r) >= 4 && eqFold(r[:4], "tel:"))
}

// tcpMessageLen returns the length of the first whole message in b, or -1
// when b holds only part of one. A missing Content-Length means no body.
func tcpMessageLen(b []byte) int {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return -1
	}
	hdr := b[:end+2]
	cl := 0
	for len(hdr) > 0 {
		i := bytes.IndexByte(hdr, '\n')
		if i < 0 {
			break
		}
		line := trimSP(bytes.TrimRight(hdr[:i], "\r"))
		hdr = hdr[i+1:]
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			continue
		}
		if name := trimSP(line[:c]); hdrIs(name, "content-length", "l") {
			if n, err := strconv.Atoi(string(trimSP(line[c+1:]))); err == nil && n >= 0 && n <= 1<<16 {
				cl = n
			}
		}
	}
	total := end + 4 + cl
	if total > len(b) {
		return -1
	}
	return total
}

func (a *Analyzer) message(p Packet, b []byte, t time.Time, now int64, sm *srcMetrics) {
	src := p.Src.Addr().Unmap()
	dst := p.Dst.Addr().Unmap()
	if t := skipLeadingSpace(b); len(t) > 0 {
		b = t
	}
	kind := classify(b)
	switch kind {
	case kindKeepalive:
		sm.skipped("keepalive")
		return
	case kindSTUN:
		sm.skipped("stun")
		return
	}
	sm.messages.Inc()

	var fired [2]offense.Offense
	nf := 0
	var sh *shard
	var st *ipState
	if kind == kindRequest {
		// Pike: count before parsing; over the limit, stop parsing.
		sh = a.table.shard(src)
		sh.mu.Lock()
		st = a.table.get(sh, src, now)
		if now-st.floodStart >= a.floodWin || now < st.floodStart-a.floodWin {
			st.floodStart, st.floodCount, st.floodFired = now, 0, false
		}
		st.floodCount++
		over := int(st.floodCount) > a.cfg.FloodRequests
		// One offense for every FloodRequests requests over the limit: a
		// flood is many packets, and its evidence grows with it (one
		// forged burst is one offense, a sustained flood many).
		fire := over && (int(st.floodCount)-1)%a.cfg.FloodRequests == 0
		if over {
			st.floodFired = true
		}
		count := st.floodCount
		sh.mu.Unlock()
		if fire {
			a.emit(withMapping(offense.Offense{IP: src, Rule: offense.Flood, Source: p.Source, Time: t, Verified: p.Verified,
				Detail: fmt.Sprintf("more than %d requests in %s", count-1, a.cfg.FloodWindow)}, p, true))
		}
		if over {
			sm.skipped("flood")
			return
		}
	} else if a.flooded(dst, now) {
		sm.skipped("flood")
		return // answers to a flooding address: not worth parsing
	}

	sc := a.bufs.Get().(*scratch)
	defer a.bufs.Put(sc)
	m := &sc.info
	if !fastScan(b, m) {
		if err := slowParse(a.parser, b, m); err != nil {
			sm.parseErrors.Inc()
			a.emit(withMapping(offense.Offense{IP: src, Rule: offense.MalformedSIP, Source: p.Source, Time: t, Verified: p.Verified,
				Detail: truncate(err.Error(), 120)}, p, true))
			return
		}
	}
	if m.request {
		nf = a.requestRules(p, src, dst, t, now, m, sc, sh, st, fired[:])
	} else {
		if !a.fromServer(src, dst, m.callID) {
			sm.skipped("response_not_from_server")
			return
		}
		nf = a.responseRules(p, dst, t, now, m, fired[:])
	}
	for i := 0; i < nf; i++ {
		if !m.request {
			fired[i] = withMapping(fired[i], p, false)
		}
		a.emit(fired[i])
	}
}

func (a *Analyzer) flooded(ip netip.Addr, now int64) bool {
	sh := a.table.shard(ip)
	sh.mu.Lock()
	st := a.table.peek(sh, ip)
	f := st != nil && st.floodFired && now-st.floodStart < a.floodWin && now >= st.floodStart
	sh.mu.Unlock()
	return f
}

// requestRules runs the rules on a request from src to dst. Offenses beyond
// the two slots are emitted directly (rare).
// st is src's state from the flood count (sh its shard, unlocked): if it was
// evicted meanwhile, the update is lost, which is harmless.
func (a *Analyzer) requestRules(p Packet, src, dst netip.Addr, t time.Time, now int64, m *msgInfo, sc *scratch, sh *shard, st *ipState, out []offense.Offense) int {
	n := 0
	add := func(o offense.Offense) {
		o.IP, o.Source, o.Time, o.Method = src, p.Source, t, string(m.method)
		o = withMapping(o, p, true)
		o.Verified = o.Verified || p.Verified
		if n < len(out) {
			out[n] = o
			n++
		} else {
			a.emit(o)
		}
	}
	if a.infer != nil && len(m.callID) > 0 {
		a.infer.asked(m.callID, src, dst)
	}
	call := maphash.Bytes(a.seed, m.callID)
	// A digest answer to a nonce FreeSWITCH gave this address proves the
	// address received FreeSWITCH's challenge: the call's outcome is
	// verified evidence.
	digest := false
	if len(m.nonce) > 0 {
		nh := maphash.Bytes(a.seed, m.nonce)
		sh.mu.Lock()
		if containsHash(st.nonces, nh) {
			st.digestCalls = pushHash(st.digestCalls, call, 8)
			digest = true
		}
		sh.mu.Unlock()
	}
	// scanner_user_agent: the normalised User-Agent and display names, the
	// URIs, or a SIPVicious From tag (whatever the User-Agent says).
	var text int
	sc.hay, text = scannerHay(sc.hay[:0], m)
	sc.norm = scannerText(sc.norm[:0], m)
	if sig := a.ua.match(sc.norm); sig != nil {
		add(offense.Offense{Rule: offense.ScannerUserAgent, User: string(m.toUser),
			Detail: truncate(string(sig)+": "+string(m.ua), 120)})
	} else if sig := a.uaURI.match(sc.hay[text:]); sig != nil {
		add(offense.Offense{Rule: offense.ScannerUserAgent, User: string(m.toUser),
			Detail: truncate(string(sig)+": "+string(m.ua), 120)})
	} else if sipviciousTag(m.fromTag) {
		add(offense.Offense{Rule: offense.ScannerUserAgent, User: string(m.toUser),
			Detail: truncate("sipvicious From tag: "+string(m.ua), 120)})
	}
	// sip_injection
	if injectedUser(m.ruriUser) || injectedUser(m.fromUser) || injectedUser(m.toUser) || injectedUser(m.ctUser) ||
		injectedText(sc.hay[:text]) {
		add(offense.Offense{Rule: offense.SIPInjection, User: string(m.toUser),
			Detail: truncate("from "+string(m.fromUser)+" to "+string(m.ruriUser)+" ua "+string(m.ua), 120)})
	}
	method := m.method
	// toll_fraud_invite: judged on whether authentication succeeded. An
	// INVITE with no credentials is an offense at once; one with
	// credentials (real or a dummy header) is one when FreeSWITCH answers
	// it 401, 407 or 403.
	if string(method) == "INVITE" && a.toll.match(m.ruriUser) {
		d := "to " + string(m.ruriUser) + "@" + string(m.ruriHost)
		if hostIsIP(m.ruriHost) {
			d += " (raw IP host)"
		}
		if !m.hasAuth {
			add(offense.Offense{Rule: offense.TollFraudInvite, User: string(m.ruriUser), Detail: truncate(d, 120)})
		} else {
			sh.mu.Lock()
			st.toll = pushToll(st.toll, pendingToll{call: call, at: now, user: string(m.ruriUser), detail: truncate(d, 100), digest: digest})
			sh.mu.Unlock()
		}
	}
	// extension_scan: distinct To users from one address
	switch string(method) {
	case "ACK", "BYE", "CANCEL", "PRACK", "UPDATE", "INFO":
	default:
		if len(m.toUser) > 0 {
			h := maphash.Bytes(a.seed, m.toUser)
			sh.mu.Lock()
			if now-st.scanStart >= a.scanWin || now < st.scanStart-a.scanWin {
				st.scanStart, st.scanFired, st.scanUsers = now, false, st.scanUsers[:0]
			}
			var k int
			st.scanUsers, k = addDistinct(st.scanUsers, h, a.cfg.ScanUsers)
			fire := k >= a.cfg.ScanUsers && !st.scanFired
			if fire {
				st.scanFired = true
			}
			sh.mu.Unlock()
			if fire {
				add(offense.Offense{Rule: offense.ExtensionScan, User: string(m.toUser),
					Detail: fmt.Sprintf("%d distinct To users within %s", k, a.cfg.ScanWindow)})
			}
		}
	}
	return n
}

// fromServer reports whether a response from src to dst was sent by
// FreeSWITCH: src is a configured server address, or (replay) an address
// that was asked something by dst in this call.
func (a *Analyzer) fromServer(src, dst netip.Addr, callID []byte) bool {
	if a.servers != nil && a.servers(src) {
		return true
	}
	return a.infer != nil && a.infer.answered(callID, dst, src)
}

// responseRules runs the rules on a response FreeSWITCH sent to dst.
func (a *Analyzer) responseRules(p Packet, dst netip.Addr, t time.Time, now int64, m *msgInfo, out []offense.Offense) int {
	n := 0
	cseq := string(m.cseqMethod)
	call := maphash.Bytes(a.seed, m.callID)
	sh := a.table.shard(dst)
	sh.mu.Lock()
	st := a.table.get(sh, dst, now)
	if (m.status == 401 || m.status == 407) && len(m.nonce) > 0 {
		st.nonces = pushHash(st.nonces, maphash.Bytes(a.seed, m.nonce), 8)
	}
	digest := containsHash(st.digestCalls, call)
	var toll pendingToll
	if cseq == "INVITE" && m.status > 100 {
		toll, st.toll = takeToll(st.toll, call)
	}
	sh.mu.Unlock()
	verified := digest || p.Verified
	switch {
	case m.status == 403 && (cseq == "REGISTER" || cseq == "INVITE"):
		user := m.toUser
		if cseq == "INVITE" {
			user = m.fromUser // the caller; To is the dialled number
		}
		out[n] = offense.Offense{IP: dst, Rule: offense.AuthFailure, Source: p.Source, Time: t, Method: cseq,
			User: string(user), Detail: "403 " + cseq, Verified: verified}
		n++
	case m.status >= 200 && m.status < 300 && cseq == "REGISTER":
		a.learn(p, dst, t, m)
	}
	if toll.call != 0 && (m.status == 401 || m.status == 407 || m.status == 403) {
		out[n] = offense.Offense{IP: dst, Rule: offense.TollFraudInvite, Source: p.Source, Time: t, Method: "INVITE",
			User: toll.user, Detail: truncate(toll.detail+fmt.Sprintf(" (credentials refused: %d)", m.status), 120),
			Verified: verified || toll.digest}
		n++
	}
	if (m.status == 404 || m.status == 403) && len(m.toUser) > 0 {
		h := maphash.Bytes(a.seed, m.toUser)
		sh.mu.Lock()
		st := a.table.get(sh, dst, now)
		if now-st.failStart >= a.scanWin || now < st.failStart-a.scanWin {
			st.failStart, st.failFired, st.failUsers = now, false, st.failUsers[:0]
		}
		var k int
		st.failUsers, k = addDistinct(st.failUsers, h, a.cfg.ScanFailures)
		fire := k >= a.cfg.ScanFailures && !st.failFired
		if fire {
			st.failFired = true
		}
		sh.mu.Unlock()
		if fire && n < len(out) {
			out[n] = offense.Offense{IP: dst, Rule: offense.ExtensionScan, Source: p.Source, Time: t, Method: cseq,
				User: string(m.toUser), Detail: fmt.Sprintf("%d distinct users answered 404/403 within %s", k, a.cfg.ScanWindow),
				Verified: p.Verified}
			n++
		}
	}
	return n
}

// learn records (or removes) the registration a 2xx to REGISTER from
// FreeSWITCH confirms, from the response's time on, for at most maxRegExp.
func (a *Analyzer) learn(p Packet, phone netip.Addr, t time.Time, m *msgInfo) {
	if a.reg == nil || !phone.IsValid() {
		return
	}
	exp := m.ctExpires
	if exp < 0 && m.nContacts > 0 {
		exp = m.expires
	}
	user, realm := string(m.toUser), string(m.toHost)
	obs, _ := a.reg.(RegistrationObserver)
	if exp <= 0 {
		// No binding left (Contact;expires=0, or no Contact at all: RFC
		// 3261 10.3 lists every current binding in the 200 OK).
		if user == "" {
			return
		}
		if obs != nil {
			obs.Registration(RegistrationEvent{At: t, Server: p.Src.Addr().Unmap(), Ended: true,
				Registration: whitelist.Registration{IP: phone, User: user, Realm: realm, CallID: string(m.callID), Node: string(p.Source)}})
		} else if a.rem != nil {
			a.rem.Remove(string(p.Source), phone, user, realm, string(m.callID))
		}
		return
	}
	life := min(time.Duration(exp)*time.Second, a.maxRegExp)
	r := whitelist.Registration{
		IP:        phone,
		User:      user,
		Realm:     realm,
		Contact:   string(m.contact),
		CallID:    string(m.callID),
		Node:      string(p.Source),
		ExpiresAt: t.Add(life),
	}
	if obs != nil {
		obs.Registration(RegistrationEvent{At: t, Server: p.Src.Addr().Unmap(), Registration: r})
		return
	}
	a.reg.Upsert(r)
}

// InferredServers lists the addresses learned as FreeSWITCH (InferServers).
func (a *Analyzer) InferredServers() []netip.Addr {
	if a.infer == nil {
		return nil
	}
	return a.infer.list()
}

func (a *Analyzer) emit(o offense.Offense) {
	a.sink.Offend(o)
}

// maybeSweep drops idle per-address state about every few windows, inline
// (no goroutine), at most once per period.
func (a *Analyzer) maybeSweep(now int64) {
	period := 4 * max(a.floodWin, a.scanWin)
	last := a.lastSweep.Load()
	if last == 0 {
		a.lastSweep.CompareAndSwap(0, now)
		return
	}
	if now-last < period || !a.lastSweep.CompareAndSwap(last, now) {
		return
	}
	a.table.sweep(now, period)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
