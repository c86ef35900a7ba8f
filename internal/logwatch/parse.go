package logwatch

import (
	"bytes"
	"net/netip"
	"time"
	"unsafe"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// Parser recognises offense lines in FreeSWITCH logs. Lines that are not
// offenses cost no allocation; the time of a line is parsed only when it
// matches a rule.
//
// A Parser keeps a little state (the source address of recent sessions, for
// no_route, and an intern table for user and detail strings), so it is not
// safe for concurrent use: use one Parser per log stream.
type Parser struct {
	now    func() time.Time
	loc    *time.Location
	public []string

	errors int64

	strs    [internSlots]string
	scratch []byte

	// The last "YYYY-MM-DD HH:MM:SS" converted, and its time.
	sec     [19]byte
	secTime time.Time
	secOK   bool

	sess [sessionSlots]session
}

// sessionSlots bounds the no_route session table; a collision only forgets
// an older session.
const sessionSlots = 1024

// internSlots sizes the direct-mapped intern cache of user and detail
// strings: a repeated attacker costs no allocation, a miss one.
const internSlots = 2048

type session struct {
	id       [36]byte
	ip       netip.Addr
	poisoned bool // its channel line was split or repeated: a client wrote line ends into it
	public   bool
	routed   bool // a "Processing ... in context" line was seen
	ctx      string
	destLen  uint8
	dest     [64]byte
}

// NewParser returns a Parser. now is used only to infer the year of lines
// that carry none (nil means time.Now). Times without a zone are read in
// time.Local; see SetLocation.
func NewParser(now func() time.Time) *Parser {
	if now == nil {
		now = time.Now
	}
	return &Parser{
		now:    now,
		loc:    time.Local,
		public: []string{DefaultPublicContext},
	}
}

// SetLocation sets the zone of the log's timestamps (FreeSWITCH writes local
// time). nil means time.Local.
func (p *Parser) SetLocation(loc *time.Location) {
	if loc == nil {
		loc = time.Local
	}
	p.loc = loc
	p.secOK = false
}

// SetPublicContexts sets the dialplan contexts whose unrouted calls are
// no_route offenses (default "public"). No context disables the rule.
func (p *Parser) SetPublicContexts(contexts ...string) {
	p.public = append([]string(nil), contexts...)
}

// Errors returns how many lines started like an offense but could not be
// read (a bad address, a broken layout). They are skipped.
func (p *Parser) Errors() int64 { return p.errors }

// Literals that start the message part of the lines we read.
var (
	litAuth        = []byte("SIP auth ")
	litFailure     = []byte("failure (")
	litChallenge   = []byte("challenge (")
	litOnProfile   = []byte(") on sofia profile '")
	litForBracket  = []byte("' for [")
	litFromIP      = []byte("] from ip ")
	litCantFind    = []byte("Can't find user [")
	litFrom        = []byte("] from ")
	litIP          = []byte("IP ")
	litRejACL      = []byte(" Rejected by acl \"")
	litRejRegACL   = []byte(" Rejected by register acl \"")
	litNoRoute     = []byte("No Route, Aborting")
	litProcessing  = []byte("Processing ")
	litInContext   = []byte(" in context ")
	litArrow       = []byte("->")
	litSofia       = []byte("sofia/")
	litReceiving   = []byte("receiving invite from ")
	litEventSocket = []byte("mod_event_socket")
)

// Parse reads one line (without its newline). It returns the offense the
// line proves, if any. The offense's Source is offense.SourceLog.
func (p *Parser) Parse(line []byte) (offense.Offense, bool) {
	// Prefilter: a handful of fixed-offset checks find the level, then the
	// message, whose first byte picks the rule. Noise lines stop here,
	// before any time or address parsing.
	h, i, ok := cutHead(line)
	// Every line we read is logged at WARNING or INFO (WARN in the
	// year-less layout): DEBUG, NOTICE and the others stop here.
	if !ok || (h.level[0] != 'W' && h.level[0] != 'I') {
		return offense.Offense{}, false
	}
	if h, ok = cutTail(h, line, i); !ok || len(h.msg) < 15 {
		return offense.Offense{}, false
	}
	msg := h.msg
	// FreeSWITCH writes the auth, unknown-user and ACL lines outside any
	// session: one that starts with a session UUID was written by a
	// client, through a line end (%0A) sofia unescaped in a channel name.
	switch msg[0] {
	case 'S':
		if h.uuid == nil && bytes.HasPrefix(msg, litAuth) {
			return p.authLine(&h)
		}
	case 'C':
		if h.uuid == nil && bytes.HasPrefix(msg, litCantFind) {
			return p.unknownUser(&h)
		}
	case 'I':
		if h.uuid == nil && bytes.HasPrefix(msg, litIP) {
			return p.aclLine(&h)
		}
	case 'N':
		if h.uuid != nil && bytes.Equal(msg, litNoRoute) {
			return p.noRoute(&h)
		}
	case 'P':
		if h.uuid != nil && bytes.HasPrefix(msg, litProcessing) {
			p.processing(&h)
		}
	case 's':
		if h.uuid != nil && bytes.HasPrefix(msg, litSofia) {
			p.receiving(&h)
		}
	}
	return offense.Offense{}, false
}

// authLine reads
//
//	SIP auth failure (REGISTER) on sofia profile 'internal' for [1001@127.0.0.1] from ip 127.0.0.1
//	SIP auth challenge (INVITE) on sofia profile 'internal' for [999@127.0.0.1] from ip 127.0.0.1
func (p *Parser) authLine(h *header) (offense.Offense, bool) {
	rest := h.msg[len(litAuth):]
	var o offense.Offense
	switch {
	case bytes.HasPrefix(rest, litFailure):
		o.Rule = offense.AuthFailure
		o.Verified = true // the 403 follows a challenge: the source answered it
		rest = rest[len(litFailure):]
	case bytes.HasPrefix(rest, litChallenge):
		o.Rule = offense.AuthChallenge
		rest = rest[len(litChallenge):]
	default:
		return o, false
	}
	switch {
	case bytes.HasPrefix(rest, []byte("REGISTER")):
		o.Method = "REGISTER"
	case bytes.HasPrefix(rest, []byte("INVITE")):
		o.Method = "INVITE"
	default:
		return p.fail()
	}
	rest = rest[len(o.Method):]
	if !bytes.HasPrefix(rest, litOnProfile) {
		return p.fail()
	}
	rest = rest[len(litOnProfile):]
	q := bytes.Index(rest, litForBracket)
	if q < 0 {
		return p.fail()
	}
	profile := rest[:q]
	rest = rest[q+len(litForBracket):]
	// The address is the last word; the bracket, which a client fills,
	// cannot push anything after it.
	f, ok := lastWord(rest, litFromIP)
	if !ok {
		return p.fail()
	}
	ip, ok := parseIP(rest[f+len(litFromIP):])
	if !ok {
		return p.fail()
	}
	o.IP = ip
	o.User = p.intern(userPart(rest[:f]))
	o.Detail = p.intern2("profile ", profile)
	return p.finish(h, o)
}

// unknownUser reads
//
//	Can't find user [5555@127.0.0.1] from 127.0.0.1
//
// (the two continuation lines that follow carry no date and are ignored).
func (p *Parser) unknownUser(h *header) (offense.Offense, bool) {
	rest := h.msg[len(litCantFind):]
	f, ok := lastWord(rest, litFrom)
	if !ok {
		return p.fail()
	}
	ip, ok := parseIP(rest[f+len(litFrom):])
	if !ok {
		return p.fail()
	}
	o := offense.Offense{Rule: offense.UnknownUser, IP: ip}
	in := rest[:f]
	o.User = p.intern(userPart(in))
	if at := bytes.LastIndexByte(in, '@'); at >= 0 {
		o.Detail = p.intern2("domain ", in[at+1:])
	}
	return p.finish(h, o)
}

// aclLine reads the WARNING lines
//
//	IP 192.0.2.7 Rejected by acl "domains"
//	IP 192.0.2.7 Rejected by register acl "trusted"
//
// and not the DEBUG "IP X Rejected by acl "domains". Falling back to Digest
// auth." that every call from outside the ACL logs before its challenge.
// (Behind a proxy listed in a proxy ACL, FreeSWITCH names the X-AUTH-IP the
// trusted proxy vouched for.)
func (p *Parser) aclLine(h *header) (offense.Offense, bool) {
	rest := h.msg[len(litIP):]
	sp := bytes.IndexByte(rest, ' ')
	if sp < 0 {
		return offense.Offense{}, false
	}
	ipText, rest := rest[:sp], rest[sp:]
	o := offense.Offense{Rule: offense.ACLReject}
	prefix := "acl "
	switch {
	case bytes.HasPrefix(rest, litRejACL):
		rest = rest[len(litRejACL):]
		if bytes.HasPrefix(h.file, litEventSocket) {
			prefix = "event socket acl "
			o.Verified = true // a TCP connection
		} else {
			o.Method = "INVITE"
		}
	case bytes.HasPrefix(rest, litRejRegACL):
		rest = rest[len(litRejRegACL):]
		prefix = "register acl "
		o.Method = "REGISTER"
	default:
		return offense.Offense{}, false
	}
	// The name must close the line: the DEBUG variant goes on.
	if len(rest) == 0 || rest[len(rest)-1] != '"' || bytes.IndexByte(rest, '"') != len(rest)-1 {
		return offense.Offense{}, false
	}
	ip, ok := parseIP(ipText)
	if !ok {
		return p.fail()
	}
	o.IP = ip
	o.Detail = p.intern2(prefix, rest[:len(rest)-1])
	return p.finish(h, o)
}

// receiving reads the session line
//
//	sofia/internal/sipp@127.0.0.1:15062 receiving invite from 127.0.0.1:15062 version: 1.11.1-release ...
//
// and remembers the address the INVITE came from, for no_route.
//
// The channel name before and the Call-ID after are the client's: a line
// with the phrase more than once is ambiguous and read as nothing, and a
// session whose channel line was split by a line end the client wrote (the
// "sofia/..." head without the phrase) or that reports a second receiving
// line is poisoned: no_route never charges an address a client could have
// written.
func (p *Parser) receiving(h *header) {
	msg := h.msg
	s := p.slot(h.uuid)
	mine := string(s.id[:]) == string(h.uuid)
	i := bytes.Index(msg, litReceiving[:len(litReceiving)-1])
	if i < 1 || msg[i-1] != ' ' {
		// A session's "sofia/..." line without the phrase: not every
		// sofia/ line receives an invite, but one that breaks off at a
		// line end is the head of a split channel line.
		if bytes.IndexByte(msg, ' ') < 0 {
			p.poison(s, h.uuid)
		}
		return
	}
	if bytes.Count(msg, litReceiving) != 1 {
		p.poison(s, h.uuid)
		p.errors++
		return
	}
	rest := msg[i+len(litReceiving):]
	if e := bytes.IndexByte(rest, ' '); e >= 0 {
		rest = rest[:e]
	}
	ip, ok := parseIPPort(rest)
	if !ok {
		p.errors++
		return
	}
	if mine && (s.poisoned || s.ip.IsValid()) {
		p.poison(s, h.uuid) // a second receiving line for one session
		return
	}
	*s = session{ip: ip}
	copy(s.id[:], h.uuid)
}

// poison marks the session id as one whose lines a client wrote into.
func (p *Parser) poison(s *session, id []byte) {
	*s = session{poisoned: true}
	copy(s.id[:], id)
}

// processing reads "Processing NAME <NUMBER>->DEST in context CTX".
func (p *Parser) processing(h *header) {
	s := p.lookup(h.uuid)
	if s == nil {
		return
	}
	msg := h.msg
	c := bytes.LastIndex(msg, litInContext)
	if c < 0 {
		return
	}
	ctx := msg[c+len(litInContext):]
	s.routed = true
	s.public = false
	for _, pc := range p.public {
		if string(ctx) == pc {
			s.public = true
			s.ctx = p.intern2("context ", ctx)
			break
		}
	}
	s.destLen = 0
	if a := bytes.LastIndex(msg[:c], litArrow); a >= 0 {
		s.destLen = uint8(copy(s.dest[:], msg[a+len(litArrow):c]))
	}
}

// noRoute reads the session's "No Route, Aborting".
func (p *Parser) noRoute(h *header) (offense.Offense, bool) {
	s := p.lookup(h.uuid)
	if s == nil || !s.routed || !s.public {
		return offense.Offense{}, false
	}
	o := offense.Offense{
		Rule:   offense.NoRoute,
		IP:     s.ip,
		Method: "INVITE",
		User:   p.intern(s.dest[:s.destLen]),
		Detail: s.ctx,
	}
	*s = session{}
	return p.finish(h, o)
}

func (p *Parser) slot(id []byte) *session {
	// FNV-1a over the UUID text.
	var x uint32 = 2166136261
	for _, b := range id {
		x ^= uint32(b)
		x *= 16777619
	}
	return &p.sess[x%sessionSlots]
}

func (p *Parser) lookup(id []byte) *session {
	s := p.slot(id)
	if s.poisoned || !s.ip.IsValid() || string(s.id[:]) != string(id) {
		return nil
	}
	return s
}

// finish stamps the offense with the line's time.
func (p *Parser) finish(h *header, o offense.Offense) (offense.Offense, bool) {
	t, ok := p.lineTime(h)
	if !ok {
		return p.fail()
	}
	o.Time = t
	o.Source = offense.SourceLog
	return o, true
}

func (p *Parser) fail() (offense.Offense, bool) {
	p.errors++
	return offense.Offense{}, false
}

// intern returns b as a string, allocating only when it is not cached.
func (p *Parser) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	var x uint32 = 2166136261
	for _, c := range b {
		x ^= uint32(c)
		x *= 16777619
	}
	slot := &p.strs[x%internSlots]
	if *slot == string(b) {
		return *slot
	}
	*slot = string(b)
	return *slot
}

func (p *Parser) intern2(prefix string, b []byte) string {
	p.scratch = append(append(p.scratch[:0], prefix...), b...)
	return p.intern(p.scratch)
}

// lastWord finds the last word of b, which must follow sep (ending with a
// space): it returns where sep starts.
func lastWord(b, sep []byte) (int, bool) {
	sp := bytes.LastIndexByte(b, ' ')
	if sp < 0 || !bytes.HasSuffix(b[:sp+1], sep) {
		return 0, false
	}
	return sp + 1 - len(sep), true
}

// userPart returns the user of "user@host" (the whole text without '@').
func userPart(b []byte) []byte {
	if at := bytes.LastIndexByte(b, '@'); at >= 0 {
		return b[:at]
	}
	return b
}

// parseIP reads an address as FreeSWITCH prints it: IPv4, IPv6 (maybe in
// brackets, maybe with a zone, which is dropped), IPv4-mapped IPv6
// unmapped.
func parseIP(b []byte) (netip.Addr, bool) {
	if len(b) > 1 && b[0] == '[' && b[len(b)-1] == ']' {
		b = b[1 : len(b)-1]
	}
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, false
	}
	var a netip.Addr
	var err error
	if bytes.IndexByte(b, '%') >= 0 {
		a, err = netip.ParseAddr(string(b))
	} else {
		// ParseAddr keeps nothing of its argument when there is no zone.
		a, err = netip.ParseAddr(unsafe.String(&b[0], len(b)))
	}
	if err != nil {
		return netip.Addr{}, false
	}
	return a.WithZone("").Unmap(), true
}

// parseIPPort reads "ip:port", "[ipv6]:port" or FreeSWITCH's "ipv6:port".
func parseIPPort(b []byte) (netip.Addr, bool) {
	c := bytes.LastIndexByte(b, ':')
	if c <= 0 {
		return netip.Addr{}, false
	}
	for _, d := range b[c+1:] {
		if d < '0' || d > '9' {
			return netip.Addr{}, false
		}
	}
	return parseIP(b[:c])
}
