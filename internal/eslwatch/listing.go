package eslwatch

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// parseListingFast decodes the listing FreeSWITCH writes (an object with
// row_count and rows, each row an object of string values) by scanning
// it, about ten times faster than encoding/json and with no allocation per
// field: every value is a substring of s. It gives up (ok false) on
// anything it does not expect: nulls, numbers in rows, nested values,
// unknown top-level keys, keys that differ from a field name only in case,
// duplicated top-level keys, control bytes or invalid UTF-8 in strings,
// data after the object. ParseRegistrations then uses encoding/json, whose
// answer is authoritative; FuzzListingFast holds the two equal.
func parseListingFast(s string) (l listing, ok bool) {
	p := scanner{s: s}
	p.ws()
	if !p.eat('{') {
		return listing{}, false
	}
	var seenCount, seenRows bool
	p.ws()
	if p.eat('}') {
		return listing{}, false // no row_count: let the slow path say so
	}
	for {
		p.ws()
		key, ok := p.str()
		if !ok {
			return listing{}, false
		}
		p.ws()
		if !p.eat(':') {
			return listing{}, false
		}
		p.ws()
		switch key {
		case "row_count":
			n, ok := p.count()
			if !ok || seenCount {
				return listing{}, false
			}
			seenCount = true
			l.RowCount = &n
		case "rows":
			if seenRows || !p.rows(&l) {
				return listing{}, false
			}
			seenRows = true
		default:
			return listing{}, false
		}
		p.ws()
		if p.eat(',') {
			continue
		}
		if !p.eat('}') {
			return listing{}, false
		}
		break
	}
	p.ws()
	if p.i != len(p.s) || !seenCount {
		return listing{}, false
	}
	return l, true
}

type scanner struct {
	s string
	i int
}

func (p *scanner) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *scanner) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// count reads a non-negative JSON integer that fits an int.
func (p *scanner) count() (int, bool) {
	j := p.i
	for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
		j++
	}
	d := p.s[p.i:j]
	if len(d) == 0 || len(d) > 18 || len(d) > 1 && d[0] == '0' {
		return 0, false
	}
	if j < len(p.s) {
		switch p.s[j] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	n := 0
	for i := 0; i < len(d); i++ {
		n = n*10 + int(d[i]-'0')
	}
	p.i = j
	return n, true
}

// str reads a JSON string. One without escapes is a substring of s; one
// with escapes is decoded by encoding/json.
func (p *scanner) str() (string, bool) {
	if !p.eat('"') {
		return "", false
	}
	start := p.i
	escaped := false
	for {
		j := strings.IndexByte(p.s[p.i:], '"')
		if j < 0 {
			return "", false
		}
		k := strings.IndexByte(p.s[p.i:p.i+j], '\\')
		if k < 0 {
			p.i += j
			break
		}
		escaped = true
		p.i += k + 2 // the backslash and the byte it escapes (checked by json below)
		if p.i > len(p.s) {
			return "", false
		}
	}
	raw := p.s[start:p.i]
	p.i++ // the closing quote
	ascii := true
	for k := 0; k < len(raw); k++ {
		c := raw[k]
		if c < 0x20 {
			return "", false
		}
		ascii = ascii && c < utf8.RuneSelf
	}
	if !ascii && !utf8.ValidString(raw) {
		return "", false // encoding/json would replace the bad bytes
	}
	if !escaped {
		return raw, true
	}
	var v string
	if err := json.Unmarshal([]byte(p.s[start-1:p.i]), &v); err != nil {
		return "", false
	}
	return v, true
}

func (p *scanner) rows(l *listing) bool {
	if !p.eat('[') {
		return false
	}
	p.ws()
	if p.eat(']') {
		l.Rows = []listingRow{}
		return true
	}
	// A real row is about 280 bytes: the first allocation follows the
	// body's size, so that a hostile row_count cannot inflate it.
	l.Rows = make([]listingRow, 0, min((len(p.s)-p.i)/128, max(0, derefOr(l.RowCount, 0))))
	for {
		p.ws()
		var r listingRow
		if !p.row(&r) {
			return false
		}
		l.Rows = append(l.Rows, r)
		p.ws()
		if p.eat(',') {
			continue
		}
		return p.eat(']')
	}
}

func derefOr(p *int, d int) int {
	if p == nil {
		return d
	}
	return *p
}

// rowFields maps the listing's keys to listingRow fields.
var rowFields = [...]string{"reg_user", "realm", "token", "url", "expires", "network_ip",
	"network_port", "network_proto", "hostname", "metadata"}

func (r *listingRow) field(i int) *string {
	switch i {
	case 0:
		return &r.RegUser
	case 1:
		return &r.Realm
	case 2:
		return &r.Token
	case 3:
		return &r.URL
	case 4:
		return &r.Expires
	case 5:
		return &r.NetworkIP
	case 6:
		return &r.NetworkPort
	case 7:
		return &r.NetworkProto
	case 8:
		return &r.Hostname
	}
	return &r.Metadata
}

func (p *scanner) row(r *listingRow) bool {
	if !p.eat('{') {
		return false
	}
	p.ws()
	if p.eat('}') {
		return true
	}
	for {
		p.ws()
		key, ok := p.str()
		if !ok {
			return false
		}
		p.ws()
		if !p.eat(':') {
			return false
		}
		p.ws()
		v, ok := p.str()
		if !ok {
			return false // a null, a number, an object: the slow path decides
		}
		known := false
		for i, f := range rowFields {
			if key == f {
				*r.field(i) = v
				known = true
				break
			}
		}
		if !known {
			for _, f := range rowFields {
				if strings.EqualFold(key, f) {
					return false // encoding/json would match it without case
				}
			}
		}
		p.ws()
		if p.eat(',') {
			continue
		}
		return p.eat('}')
	}
}
