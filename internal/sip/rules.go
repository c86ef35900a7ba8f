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
				return s
			}
		}
	}
	return nil
}

// newUAMatcher lower-cases the configured scanner signatures.
func newUAMatcher(list []string) *seqMatcher {
	var l [][]byte
	for _, s := range list {
		s = strings.ToLower(strings.TrimSpace(s))
		if s != "" {
			l = append(l, []byte(s))
		}
	}
	return newSeqMatcher(l)
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
