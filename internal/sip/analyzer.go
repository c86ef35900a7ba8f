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
	TCP      bool
	Time     time.Time // the packet's own time; zero means Options.Now()
	Payload  []byte    // not retained after Analyzer.Packet returns
	Source   offense.Source
}

// Registrar receives registrations learned from 200 OKs to REGISTER.
// *whitelist.Whitelist satisfies it. If it also has the whitelist's Remove
// method, a 200 OK that leaves no binding (expires=0, no Contact) removes the
// registration.
type Registrar interface {
	Upsert(whitelist.Registration)
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
}

// Analyzer turns SIP packets into offenses. Packet is safe for concurrent use.
type Analyzer struct {
	cfg    Config
	sink   offense.Sink
	reg    Registrar
	rem    registrationRemover
	log    *slog.Logger
	now    func() time.Time
	parser *sipmsg.Parser
	ua     *seqMatcher
	toll   *tollMatcher
	table  *table
	m      *metrics
	seed   maphash.Seed

	floodWin, scanWin int64
	lastSweep         atomic.Int64

	bufs sync.Pool // *scratch
}

type scratch struct {
	info msgInfo
	hay  []byte
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
		ua:       newUAMatcher(c.ScannerUserAgents),
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
	if rem, ok := o.Registrations.(registrationRemover); ok {
		a.rem = rem
	}
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	a.m = newMetrics(reg, a.table)
	a.bufs.New = func() any { return &scratch{hay: make([]byte, 0, 1100)} }
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
	// TCP: one segment at a time; it must start at a message boundary.
	b := p.Payload
	for len(b) >= 2 && b[0] == '\r' && b[1] == '\n' {
		b = b[2:]
	}
	if len(b) == 0 {
		return
	}
	if !looksLikeStartLine(b) {
		sm.skipped("tcp_continuation")
		return
	}
	for len(b) > 0 {
		n := tcpMessageLen(b)
		if n < 0 {
			sm.skipped("tcp_partial")
			return
		}
		a.message(p, b[:n], t, now, sm)
		b = b[n:]
		for len(b) >= 2 && b[0] == '\r' && b[1] == '\n' {
			b = b[2:]
		}
	}
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
		fire := over && !st.floodFired
		if fire {
			st.floodFired = true
		}
		count := st.floodCount
		sh.mu.Unlock()
		if fire {
			a.emit(withMapping(offense.Offense{IP: src, Rule: offense.Flood, Source: p.Source, Time: t, Verified: p.TCP,
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
			a.emit(withMapping(offense.Offense{IP: src, Rule: offense.MalformedSIP, Source: p.Source, Time: t, Verified: p.TCP,
				Detail: truncate(err.Error(), 120)}, p, true))
			return
		}
	}
	if m.request {
		nf = a.requestRules(p, src, t, now, m, sc, sh, st, fired[:])
	} else {
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

// requestRules runs the rules on a request from src. Offenses beyond the
// two slots are emitted directly (rare).
// st is src's state from the flood count (sh its shard, unlocked): if it was
// evicted meanwhile, the update is lost, which is harmless.
func (a *Analyzer) requestRules(p Packet, src netip.Addr, t time.Time, now int64, m *msgInfo, sc *scratch, sh *shard, st *ipState, out []offense.Offense) int {
	n := 0
	add := func(o offense.Offense) {
		o.IP, o.Source, o.Time, o.Method = src, p.Source, t, string(m.method)
		o = withMapping(o, p, true)
		if o.Verified == false {
			o.Verified = p.TCP
		}
		if n < len(out) {
			out[n] = o
			n++
		} else {
			a.emit(o)
		}
	}
	// scanner_user_agent
	var text int
	sc.hay, text = scannerHay(sc.hay[:0], m)
	if sig := a.ua.match(sc.hay); sig != nil {
		add(offense.Offense{Rule: offense.ScannerUserAgent, User: string(m.toUser),
			Detail: truncate(string(sig)+": "+string(m.ua), 120)})
	}
	// sip_injection
	if injectedUser(m.ruriUser) || injectedUser(m.fromUser) || injectedUser(m.toUser) || injectedUser(m.ctUser) ||
		injectedText(sc.hay[:text]) {
		add(offense.Offense{Rule: offense.SIPInjection, User: string(m.toUser),
			Detail: truncate("from "+string(m.fromUser)+" to "+string(m.ruriUser)+" ua "+string(m.ua), 120)})
	}
	method := m.method
	// toll_fraud_invite
	if string(method) == "INVITE" && !m.hasAuth && a.toll.match(m.ruriUser) {
		d := "to " + string(m.ruriUser) + "@" + string(m.ruriHost)
		if hostIsIP(m.ruriHost) {
			d += " (raw IP host)"
		}
		add(offense.Offense{Rule: offense.TollFraudInvite, User: string(m.ruriUser), Detail: truncate(d, 120)})
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

// responseRules runs the rules on a response sent to dst.
func (a *Analyzer) responseRules(p Packet, dst netip.Addr, t time.Time, now int64, m *msgInfo, out []offense.Offense) int {
	n := 0
	cseq := string(m.cseqMethod)
	switch {
	case m.status == 403 && (cseq == "REGISTER" || cseq == "INVITE"):
		user := m.toUser
		if cseq == "INVITE" {
			user = m.fromUser // the caller; To is the dialled number
		}
		out[n] = offense.Offense{IP: dst, Rule: offense.AuthFailure, Source: p.Source, Time: t, Method: cseq,
			User: string(user), Detail: "403 " + cseq, Verified: true}
		n++
	case m.status >= 200 && m.status < 300 && cseq == "REGISTER":
		a.learn(p, dst, t, m)
	}
	if (m.status == 404 || m.status == 403) && len(m.toUser) > 0 {
		h := maphash.Bytes(a.seed, m.toUser)
		sh := a.table.shard(dst)
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
				Verified: p.TCP}
			n++
		}
	}
	return n
}

// learn records (or removes) the registration a 2xx to REGISTER confirms.
func (a *Analyzer) learn(p Packet, phone netip.Addr, t time.Time, m *msgInfo) {
	if a.reg == nil || !phone.IsValid() {
		return
	}
	exp := m.ctExpires
	if exp < 0 && m.nContacts > 0 {
		exp = m.expires
	}
	user, realm := string(m.toUser), string(m.toHost)
	if exp <= 0 {
		// No binding left (Contact;expires=0, or no Contact at all: RFC
		// 3261 10.3 lists every current binding in the 200 OK).
		if a.rem != nil && user != "" {
			a.rem.Remove(string(p.Source), phone, user, realm, string(m.callID))
		}
		return
	}
	a.reg.Upsert(whitelist.Registration{
		IP:        phone,
		User:      user,
		Realm:     realm,
		Contact:   string(m.contact),
		CallID:    string(m.callID),
		Node:      string(p.Source),
		ExpiresAt: t.Add(time.Duration(exp) * time.Second),
	})
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
