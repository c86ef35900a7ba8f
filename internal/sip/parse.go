package sip

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	sipmsg "github.com/emiago/sipgo/sip"
)

// msgInfo is what the rules read from one SIP message. Byte slices point into
// the payload (fast path) or into sipgo's strings (slow path); they must be
// copied before they outlive Analyzer.Packet.
type msgInfo struct {
	request    bool
	method     []byte // request method
	status     int    // response status
	ruriUser   []byte
	ruriHost   []byte
	fromDisp   []byte
	fromUser   []byte
	fromHost   []byte
	fromTag    []byte
	toDisp     []byte
	toUser     []byte
	toHost     []byte
	contact    []byte // first Contact URI
	ctUser     []byte
	ctHost     []byte
	ctExpires  int // largest ;expires= of the Contacts, -1 when none
	nContacts  int
	ua         []byte
	callID     []byte
	cseqMethod []byte
	expires    int // Expires header, -1 when absent
	hasAuth    bool
	nonce      []byte // digest nonce of WWW-/Proxy-Authenticate (responses) or [Proxy-]Authorization (requests)
	hasVia     bool
	nFrom      int
	nTo        int
	nCallID    int
	nCSeq      int
}

func (m *msgInfo) reset() {
	*m = msgInfo{ctExpires: -1, expires: -1}
}

// errMissing is the malformed_sip reason for a message sipgo parses but that
// lacks a header RFC 3261 makes mandatory.
var errMissing = errors.New("missing mandatory header")

// checkMandatory reports the first mandatory header missing or repeated.
func (m *msgInfo) checkMandatory() error {
	switch {
	case !m.hasVia:
		return fmt.Errorf("%w: Via", errMissing)
	case m.nFrom != 1:
		return fmt.Errorf("%w: From (%d)", errMissing, m.nFrom)
	case m.nTo != 1:
		return fmt.Errorf("%w: To (%d)", errMissing, m.nTo)
	case m.nCallID != 1:
		return fmt.Errorf("%w: Call-ID (%d)", errMissing, m.nCallID)
	case m.nCSeq != 1:
		return fmt.Errorf("%w: CSeq (%d)", errMissing, m.nCSeq)
	}
	return nil
}

// fastScan reads b into m without allocating. It returns true only when b is
// plainly well formed in a shape sipgo is known to accept (and m then holds
// everything the rules need); false means "not sure": the caller hands the
// message to sipgo, which decides. FuzzSIP checks fastScan never vouches for a
// message sipgo rejects and that both read the same fields.
func fastScan(b []byte, m *msgInfo) bool {
	m.reset()
	line, rest, ok := crlfLine(b)
	if !ok || !scanStartLine(line, m) {
		return false
	}
	contentLength := -1
	for {
		line, rest, ok = crlfLine(rest)
		if !ok {
			return false
		}
		if len(line) == 0 {
			break
		}
		if len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
			return false // folded header
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isTokenBytes(line[:colon]) {
			return false
		}
		name := line[:colon]
		val := trimSP(line[colon+1:])
		// Values read as free text must be plain (sipgo trims Unicode
		// spaces we would keep); structured ones are checked by class.
		plain := false
		switch {
		case hdrIs(name, "via", "v"):
			if !scanVia(val) {
				return false
			}
			m.hasVia = true
		case hdrIs(name, "from", "f"):
			m.nFrom++
			if !scanAddress(val, &m.fromDisp, &m.fromUser, &m.fromHost, nil, nil) {
				return false
			}
			m.fromTag = paramValue(val, "tag")
		case hdrIs(name, "to", "t"):
			m.nTo++
			if !scanAddress(val, &m.toDisp, &m.toUser, &m.toHost, nil, nil) {
				return false
			}
		case hdrIs(name, "contact", "m"):
			var uri []byte
			exp := -1
			if !scanAddress(val, nil, &m.ctUser, &m.ctHost, &uri, &exp) {
				return false
			}
			if m.nContacts == 0 {
				m.contact = uri
			} else {
				return false // several Contact headers: let sipgo read them
			}
			m.nContacts++
			m.ctExpires = exp
		case hdrIs(name, "call-id", "i"):
			plain = true
			if len(val) == 0 {
				return false
			}
			m.nCallID++
			m.callID = val
		case hdrIs(name, "cseq", ""):
			sp := bytes.IndexByte(val, ' ')
			if sp < 1 || sp > 10 || !isDigits(val[:sp]) || !isUpperAlpha(val[sp+1:]) {
				return false
			}
			if n, _ := strconv.ParseUint(string(val[:sp]), 10, 32); n > 2147483647 {
				return false
			}
			m.nCSeq++
			m.cseqMethod = val[sp+1:]
		case hdrIs(name, "max-forwards", ""):
			if len(val) == 0 || len(val) > 9 || !isDigits(val) {
				return false
			}
		case hdrIs(name, "content-length", "l"):
			if len(val) == 0 || len(val) > 6 || !isDigits(val) || contentLength >= 0 {
				return false
			}
			contentLength, _ = strconv.Atoi(string(val))
		case hdrIs(name, "content-type", "c"):
			plain = true
			if len(val) == 0 {
				return false
			}
		case hdrIs(name, "route", "") || hdrIs(name, "record-route", "") ||
			hdrIs(name, "refer-to", "r") || hdrIs(name, "referred-by", "b"):
			return false // parsed by sipgo; not worth mirroring
		case hdrIs(name, "user-agent", ""):
			plain = true
			m.ua = val
		case hdrIs(name, "authorization", "") || hdrIs(name, "proxy-authorization", ""):
			m.hasAuth = true
			m.nonce = digestNonce(val)
		case hdrIs(name, "www-authenticate", "") || hdrIs(name, "proxy-authenticate", ""):
			m.nonce = digestNonce(val)
		case hdrIs(name, "expires", ""):
			if n, ok := parseSeconds(val); ok {
				m.expires = n
			}
		}
		if plain && !plainValue(val) {
			return false
		}
	}
	// sipgo copies exactly Content-Length bytes (or the rest when absent).
	if contentLength >= 0 && contentLength != len(rest) {
		return false
	}
	if len(b) > sipmsg.ParseMaxMessageLength {
		return false
	}
	return m.checkMandatory() == nil
}

// crlfLine returns the line before the first CR, which must start a CRLF.
func crlfLine(b []byte) (line, rest []byte, ok bool) {
	// Like sipgo: a line ends at the first CR, which must be followed by LF.
	// A bare LF stays inside the line, where the character checks of the
	// values we read reject it (sipgo keeps it in generic headers).
	i := bytes.IndexByte(b, '\r')
	if i < 0 || i+1 >= len(b) || b[i+1] != '\n' {
		return nil, nil, false
	}
	return b[:i], b[i+2:], true
}

func scanStartLine(line []byte, m *msgInfo) bool {
	if bytes.HasPrefix(line, []byte("SIP/2.0 ")) {
		r := line[8:]
		if len(r) < 4 || r[3] != ' ' || !isDigits(r[:3]) || r[0] < '1' || r[0] > '6' {
			return false
		}
		reason := r[4:]
		if len(reason) == 0 || bytes.IndexByte(reason, ' ') < 0 && len(reason) >= 3 && strings.EqualFold(string(reason[:3]), "sip") {
			return false // sipgo would read "SIP/2.0 200 SIPx" as a request
		}
		for _, c := range reason {
			if c < 0x20 || c == 0x7f {
				return false
			}
		}
		m.status = int(r[0]-'0')*100 + int(r[1]-'0')*10 + int(r[2]-'0')
		return true
	}
	sp := bytes.IndexByte(line, ' ')
	if sp < 1 || sp > 16 || !isUpperAlpha(line[:sp]) {
		return false
	}
	r := line[sp+1:]
	sp2 := bytes.IndexByte(r, ' ')
	if sp2 < 0 || string(r[sp2+1:]) != "SIP/2.0" {
		return false
	}
	var host, user []byte
	if !scanURI(r[:sp2], &user, &host, nil) {
		return false
	}
	m.request = true
	m.method = line[:sp]
	m.ruriUser, m.ruriHost = user, host
	return true
}

// scanURI accepts sip:[user@]host[:port][;params] with conservative character
// sets. expires receives a ;expires= URI parameter when non-nil (unused).
func scanURI(u []byte, user, host *[]byte, _ *int) bool {
	switch {
	case bytes.HasPrefix(u, []byte("sip:")):
		u = u[4:]
	case bytes.HasPrefix(u, []byte("sips:")):
		u = u[5:]
	default:
		return false
	}
	if at := bytes.IndexByte(u, '@'); at >= 0 {
		if at == 0 || !allIn(u[:at], userChars) {
			return false
		}
		*user = u[:at]
		u = u[at+1:]
	}
	end := len(u)
	if i := bytes.IndexByte(u, ';'); i >= 0 {
		end = i
		if !allIn(u[i+1:], paramChars) {
			return false
		}
	}
	hp := u[:end]
	if len(hp) > 0 && hp[0] == '[' {
		cl := bytes.IndexByte(hp, ']')
		if cl < 2 || cl > 40 || !allIn(hp[1:cl], v6Chars) {
			return false
		}
		*host = hp[:cl+1]
		hp = hp[cl+1:]
		if len(hp) > 0 && hp[0] != ':' {
			return false
		}
	} else {
		c := bytes.IndexByte(hp, ':')
		h := hp
		if c >= 0 {
			h = hp[:c]
			hp = hp[c:]
		} else {
			hp = nil
		}
		if len(h) == 0 || !allIn(h, hostChars) {
			return false
		}
		*host = h
	}
	if len(hp) > 0 { // ":port"
		p := hp[1:]
		if len(p) == 0 || len(p) > 5 || !isDigits(p) {
			return false
		}
	}
	return true
}

// scanAddress accepts `["display"|display] <uri>[;params]` or `uri[;params]`.
func scanAddress(v []byte, disp, user, host, uri *[]byte, expires *int) bool {
	var d []byte
	if len(v) == 0 {
		return false
	}
	lt := bytes.IndexByte(v, '<')
	var u, params []byte
	if lt >= 0 {
		d = trimSP(v[:lt])
		if len(d) > 0 && d[0] == '"' {
			if len(d) < 2 || d[len(d)-1] != '"' {
				return false
			}
			d = d[1 : len(d)-1]
			if bytes.IndexByte(d, '"') >= 0 || bytes.IndexByte(d, '\\') >= 0 || !plainValue(d) {
				return false
			}
		} else if !allIn(d, dispChars) {
			return false
		}
		gt := bytes.IndexByte(v[lt:], '>')
		if gt < 0 {
			return false
		}
		u = v[lt+1 : lt+gt]
		params = v[lt+gt+1:]
	} else {
		if bytes.IndexByte(v, '"') >= 0 {
			return false
		}
		u = v
		if i := bytes.IndexByte(v, ';'); i >= 0 {
			u, params = v[:i], v[i:]
		}
	}
	var us, hs []byte
	if !scanURI(u, &us, &hs, nil) {
		return false
	}
	if !scanParams(params, expires) {
		return false
	}
	if disp != nil {
		*disp = d
	}
	*user, *host = us, hs
	if uri != nil {
		*uri = u
	}
	return true
}

// scanParams accepts ;name[=value] lists (value may be a quoted string
// without quotes or backslashes inside) and no comma outside quotes.
func scanParams(p []byte, expires *int) bool {
	p = trimSP(p)
	for len(p) > 0 {
		if p[0] != ';' {
			return false
		}
		p = p[1:]
		end := 0
		inq := false
		for end < len(p) && (inq || p[end] != ';') {
			c := p[end]
			switch {
			case c == '"':
				inq = !inq
			case c == '\\' || c == ',' && !inq || c < 0x20 || c >= 0x7f:
				return false
			case !inq && (c == '<' || c == '>'):
				return false
			}
			end++
		}
		if inq {
			return false
		}
		kv := p[:end]
		if expires != nil && len(kv) > 8 && string(kv[:8]) == "expires=" {
			if n, ok := parseSeconds(kv[8:]); ok && n > *expires {
				*expires = n
			}
		}
		p = p[end:]
	}
	return true
}

func scanVia(v []byte) bool {
	if !bytes.HasPrefix(v, []byte("SIP/2.0/")) {
		return false
	}
	v = v[8:]
	sp := bytes.IndexByte(v, ' ')
	if sp < 2 || !allIn(v[:sp], alnum) {
		return false
	}
	v = v[sp+1:]
	end := len(v)
	if i := bytes.IndexByte(v, ';'); i >= 0 {
		end = i
		if !allIn(v[i+1:], paramChars) {
			return false
		}
	}
	hp := v[:end]
	if len(hp) == 0 {
		return false
	}
	if hp[0] == '[' {
		cl := bytes.IndexByte(hp, ']')
		if cl < 2 || !allIn(hp[1:cl], v6Chars) {
			return false
		}
		hp = hp[cl+1:]
		if len(hp) == 0 {
			return true
		}
		return hp[0] == ':' && len(hp) > 1 && len(hp) <= 6 && isDigits(hp[1:])
	}
	c := bytes.IndexByte(hp, ':')
	if c < 0 {
		return allIn(hp, hostChars)
	}
	return c > 0 && allIn(hp[:c], hostChars) && len(hp) > c+1 && len(hp)-c-1 <= 5 && isDigits(hp[c+1:])
}

// plainValue rejects control characters, and non-ASCII bytes at the ends
// (sipgo trims Unicode spaces there; we do not).
func plainValue(v []byte) bool {
	for _, c := range v {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return len(v) == 0 || v[0] < 0x80 && v[len(v)-1] < 0x80
}

// parseSeconds reads a delta-seconds value: 1 to 9 digits.
func parseSeconds(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 || !isDigits(b) {
		return 0, false
	}
	n := 0
	for _, c := range b {
		n = n*10 + int(c-'0')
	}
	return n, true
}

// Character classes (ASCII bitmaps).
type charClass [256]bool

func class(s string) *charClass {
	var c charClass
	for i := 0; i < len(s); i++ {
		c[s[i]] = true
	}
	return &c
}

const alnumS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

var (
	alnum      = class(alnumS)
	userChars  = class(alnumS + "-_.!~*+%&=$,/")
	hostChars  = class(alnumS + "-.")
	v6Chars    = class("0123456789abcdefABCDEF:.")
	paramChars = class(alnumS + "-_.!~*+%=;:")
	dispChars  = class(alnumS + " -_.!~*+%'")
	tokenChars = class(alnumS + "-.!%*_+`'~")
)

func allIn(b []byte, c *charClass) bool {
	for _, x := range b {
		if !c[x] {
			return false
		}
	}
	return true
}

func isTokenBytes(b []byte) bool { return len(b) > 0 && allIn(b, tokenChars) }

func isDigits(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func isUpperAlpha(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

func trimSP(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// hdrIs reports whether name equals long or short (ASCII case-insensitive).
func hdrIs(name []byte, long, short string) bool {
	if len(name) == len(long) {
		return eqFold(name, long)
	}
	return short != "" && len(name) == 1 && (name[0]|0x20) == short[0]
}

func eqFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// slowParse parses b with sipgo and fills m from the result. An error means
// malformed_sip.
func slowParse(p *sipmsg.Parser, b []byte, m *msgInfo) error {
	m.reset()
	msg, err := p.ParseSIP(b)
	if err != nil {
		return err
	}
	var hs []sipmsg.Header
	switch r := msg.(type) {
	case *sipmsg.Request:
		m.request = true
		m.method = []byte(r.Method)
		m.ruriUser = []byte(r.Recipient.User)
		m.ruriHost = []byte(r.Recipient.Host)
		hs = r.Headers()
	case *sipmsg.Response:
		m.status = r.StatusCode
		hs = r.Headers()
	}
	for _, h := range hs {
		switch h := h.(type) {
		case *sipmsg.ViaHeader:
			m.hasVia = true
		case *sipmsg.FromHeader:
			m.nFrom++
			m.fromDisp, m.fromUser, m.fromHost = []byte(h.DisplayName), []byte(h.Address.User), []byte(h.Address.Host)
			if tag, ok := h.Params.Get("tag"); ok {
				m.fromTag = []byte(tag)
			}
		case *sipmsg.ToHeader:
			m.nTo++
			m.toDisp, m.toUser, m.toHost = []byte(h.DisplayName), []byte(h.Address.User), []byte(h.Address.Host)
		case *sipmsg.ContactHeader:
			if m.nContacts == 0 {
				m.contact = []byte(h.Address.String())
				m.ctUser, m.ctHost = []byte(h.Address.User), []byte(h.Address.Host)
			}
			m.nContacts++
			if v, ok := h.Params.Get("expires"); ok {
				if n, ok := parseSeconds([]byte(v)); ok && n > m.ctExpires {
					m.ctExpires = n
				}
			}
		case *sipmsg.CallIDHeader:
			m.nCallID++
			m.callID = []byte(*h)
		case *sipmsg.CSeqHeader:
			m.nCSeq++
			m.cseqMethod = []byte(h.MethodName)
		default:
			name := h.Name()
			switch {
			case strings.EqualFold(name, "User-Agent"):
				m.ua = []byte(h.Value())
			case strings.EqualFold(name, "Authorization"), strings.EqualFold(name, "Proxy-Authorization"):
				m.hasAuth = true
				m.nonce = digestNonce([]byte(h.Value()))
			case strings.EqualFold(name, "WWW-Authenticate"), strings.EqualFold(name, "Proxy-Authenticate"):
				m.nonce = digestNonce([]byte(h.Value()))
			case strings.EqualFold(name, "Expires"):
				if n, ok := parseSeconds([]byte(h.Value())); ok {
					m.expires = n
				}
			}
		}
	}
	return m.checkMandatory()
}

// digestNonce returns the nonce parameter of a Digest challenge or answer
// (quoted or not), or nil.
func digestNonce(v []byte) []byte {
	for i := 0; i+6 <= len(v); i++ {
		if !eqFold(v[i:i+6], "nonce=") || i > 0 && isTokenBytes(v[i-1:i]) {
			continue
		}
		r := v[i+6:]
		if len(r) > 0 && r[0] == '"' {
			r = r[1:]
			if e := bytes.IndexByte(r, '"'); e >= 0 {
				return r[:e]
			}
			return nil
		}
		e := bytes.IndexAny(r, ", \t")
		if e < 0 {
			e = len(r)
		}
		return r[:e]
	}
	return nil
}

// paramValue returns the value of ;name= in the parameters after a
// name-addr's '>' (or after the URI of an addr-spec), or nil.
func paramValue(v []byte, name string) []byte {
	if gt := bytes.LastIndexByte(v, '>'); gt >= 0 {
		v = v[gt+1:]
	} else if sc := bytes.IndexByte(v, ';'); sc >= 0 {
		v = v[sc:]
	} else {
		return nil
	}
	for len(v) > 0 {
		sc := bytes.IndexByte(v, ';')
		if sc < 0 {
			return nil
		}
		v = v[sc+1:]
		kv := v
		if e := bytes.IndexByte(kv, ';'); e >= 0 {
			kv = kv[:e]
		}
		kv = trimSP(kv)
		if len(kv) > len(name) && kv[len(name)] == '=' && eqFold(kv[:len(name)], name) {
			return trimSP(kv[len(name)+1:])
		}
	}
	return nil
}
