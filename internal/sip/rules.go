package sip

import (
	"net/netip"
	"regexp"
	"strings"
)

// seqMatcher finds any of a set of byte sequences in a haystack in one pass:
// sequences are bucketed by their first byte, so most positions cost one
// table lookup.
type seqMatcher struct {
	has   [256]bool  // some sequence starts with this byte
	first [256][]int // sequence indexes by first byte
	seqs  [][]byte
	names [][]byte // what match returns for each sequence
}

func newSeqMatcher(list [][]byte) *seqMatcher {
	m := &seqMatcher{}
	for _, s := range list {
		if len(s) == 0 {
			continue
		}
		m.has[s[0]] = true
		m.first[s[0]] = append(m.first[s[0]], len(m.seqs))
		m.seqs = append(m.seqs, s)
		m.names = append(m.names, s)
	}
	return m
}

// match returns the first sequence found in hay, or nil.
func (m *seqMatcher) match(hay []byte) []byte {
	for i, c := range hay {
		if !m.has[c] {
			continue
		}
		for _, k := range m.first[c] {
			s := m.seqs[k]
			if len(hay)-i >= len(s) && string(hay[i:i+len(s)]) == string(s) {
				return m.names[k]
			}
		}
	}
	return nil
}

// newUAMatcher lower-cases the configured scanner signatures, and with
// normalize keeps only their letters and digits (see appendNormal).
func newUAMatcher(list []string, normalize bool) *seqMatcher {
	var l, names [][]byte
	for _, s := range list {
		name := []byte(strings.ToLower(strings.TrimSpace(s)))
		b := name
		if normalize {
			b = appendNormal(nil, b, len(b))
		}
		if len(b) > 0 {
			l = append(l, b)
			names = append(names, name)
		}
	}
	m := newSeqMatcher(l)
	m.names = names
	return m
}

// appendNormal appends the ASCII letters (lower-cased) and digits of b to
// dst, up to limit bytes in total: "Friendly_Scanner", "friendly scanner"
// and "FRIENDLY-SCANNER\u200b" all read "friendlyscanner".
func appendNormal(dst, b []byte, limit int) []byte {
	for _, c := range b {
		if len(dst) >= limit {
			break
		}
		switch {
		case 'A' <= c && c <= 'Z':
			dst = append(dst, c+'a'-'A')
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
			dst = append(dst, c)
		}
	}
	return dst
}

// scannerText builds the normalised free text a scanner names itself in:
// User-Agent and the From/To display names, NUL-separated.
func scannerText(dst []byte, m *msgInfo) []byte {
	const limit = 1024
	dst = appendNormal(dst, m.ua, limit)
	dst = append(dst, 0)
	dst = appendNormal(dst, m.fromDisp, limit)
	dst = append(dst, 0)
	return appendNormal(dst, m.toDisp, limit)
}

// sipviciousTag recognises the From tag SIPVicious (svmap, svwar, svcrack)
// writes whatever its User-Agent says: hex of "<printable text>\x01<digits>"
// (svhelper.createTag).
func sipviciousTag(tag []byte) bool {
	if len(tag) < 6 || len(tag) > 256 || len(tag)%2 != 0 {
		return false
	}
	sep := -1
	for i := 0; i < len(tag); i += 2 {
		hi, ok1 := unhex(tag[i])
		lo, ok2 := unhex(tag[i+1])
		if !ok1 || !ok2 {
			return false
		}
		c := hi<<4 | lo
		switch {
		case c == 1:
			if sep >= 0 || i == 0 {
				return false
			}
			sep = i / 2
		case sep < 0:
			if c < 0x20 || c > 0x7e {
				return false
			}
		default:
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	digits := len(tag)/2 - sep - 1
	return sep > 0 && digits >= 1 && digits <= 10
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// appendLower appends the ASCII lower-case of b to dst, up to limit bytes in
// total.
func appendLower(dst, b []byte, limit int) []byte {
	for _, c := range b {
		if len(dst) >= limit {
			break
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// scannerHay builds "ua\x00display\x00display\x00sip:user@host..." for the
// scanner matcher; the first text bytes (UA and display names) are also what
// the injection text check reads.
func scannerHay(dst []byte, m *msgInfo) (hay []byte, text int) {
	const limit = 1024
	dst = appendLower(dst, m.ua, limit)
	dst = append(dst, 0)
	dst = appendLower(dst, m.fromDisp, limit)
	dst = append(dst, 0)
	dst = appendLower(dst, m.toDisp, limit)
	text = len(dst)
	for _, u := range [...][2][]byte{{m.fromUser, m.fromHost}, {m.toUser, m.toHost}, {m.ctUser, m.ctHost}} {
		if len(dst)+8 >= limit {
			break
		}
		dst = append(dst, 0, 's', 'i', 'p', ':')
		dst = appendLower(dst, u[0], limit)
		dst = append(dst, '@')
		dst = appendLower(dst, u[1], limit)
	}
	return dst, text
}

// tollMatcher holds the compiled toll-fraud patterns.
type tollMatcher struct {
	res []*regexp.Regexp
}

func newTollMatcher(list []string) (*tollMatcher, error) {
	t := &tollMatcher{}
	for _, p := range list {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, err
		}
		t.res = append(t.res, re)
	}
	return t, nil
}

func (t *tollMatcher) match(user []byte) bool {
	if len(user) == 0 {
		return false
	}
	// Cheap gate: every default pattern needs digits; skip names like
	// "alice" without running the regexps.
	digits := 0
	for _, c := range user {
		if c >= '0' && c <= '9' {
			digits++
		}
	}
	if digits < 6 {
		return false
	}
	for _, re := range t.res {
		if re.Match(user) {
			return true
		}
	}
	return false
}

// hostIsIP reports whether a URI host is a literal address.
func hostIsIP(h []byte) bool {
	s := string(h)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	_, err := netip.ParseAddr(s)
	return err == nil
}

// Injection signatures. User parts of SIP URIs are identifiers: SQL/shell
// metacharacters there (raw or %-escaped) have no business in a dial string
// or an extension. Display names and User-Agent are free text where an
// apostrophe ("O'Brien") or a semicolon ("Mozilla/5.0 (X11; Linux)") is
// normal, so only unmistakable payloads count there.
var (
	userBadBytes = class("'\"`;|<>$(){}\\")
	userBadSeqs  = newSeqMatcher([][]byte{[]byte("--"), []byte("%27"), []byte("%22"), []byte("%60"), []byte("%3b"), []byte("%24"), []byte("%7c"), []byte("/*")})
	textBadSeqs  = newSeqMatcher([][]byte{
		[]byte("'--"), []byte("';"), []byte("' or "), []byte("\" or "), []byte("or 1=1"), []byte("' or'"),
		[]byte("union select"), []byte("union all select"), []byte("%27"), []byte("%22"), []byte("`"),
		[]byte("$("), []byte("${"), []byte(";--"), []byte("/*"), []byte("sleep("), []byte("benchmark("),
		[]byte("<script"), []byte("; drop "), []byte(";drop "), []byte("xp_cmdshell"), []byte("| sh"), []byte("|sh"),
		[]byte("&& "), []byte("; rm "), []byte(";rm "), []byte("wget "), []byte("curl "),
	})
)

// injectedUser reports whether a URI user part carries an injection payload.
func injectedUser(u []byte) bool {
	if len(u) == 0 {
		return false
	}
	plain := true
	for _, c := range u {
		if userBadBytes[c] {
			return true
		}
		if c == '-' || c == '%' || c == '/' {
			plain = false
		}
	}
	if plain {
		return false
	}
	var buf [256]byte
	return userBadSeqs.match(appendLower(buf[:0], u, len(buf))) != nil
}

// injectedText reports whether lower-cased free text carries an injection
// payload.
func injectedText(lower []byte) bool {
	return textBadSeqs.match(lower) != nil
}
