package eslwatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

var errMalformedEvent = errors.New("malformed event")

// event is one decoded FreeSWITCH event: its headers in wire order, values
// URL-decoded, repeated headers kept (register_failure carries profile-name
// twice), and its body when it has one.
//
// An event is reused from one frame to the next by the connection's reader:
// every name and value lives in one arena, so decoding allocates nothing
// once the arena has grown to the size of the largest event. What it
// returns aliases the arena and is valid until the next decode.
type event struct {
	arena []byte
	hdrs  []span // name, value pairs into arena
	body  []byte // into the frame body
}

// span is a header: name arena[n0:n1], value arena[v0:v1].
type span struct{ n0, n1, v0, v1 uint32 }

const maxEventHeaders = 1024

func (e *event) reset() {
	e.arena = e.arena[:0]
	e.hdrs = e.hdrs[:0]
	e.body = nil
	if cap(e.arena) > keepBufMax {
		e.arena = nil
	}
}

func (e *event) add(name, value []byte, unescapeValue bool) error {
	if len(e.hdrs) == maxEventHeaders {
		return fmt.Errorf("%w: more than %d headers", errMalformedEvent, maxEventHeaders)
	}
	n0 := len(e.arena)
	e.arena = append(e.arena, name...)
	v0 := len(e.arena)
	if unescapeValue {
		e.arena = appendUnescaped(e.arena, value)
	} else {
		e.arena = append(e.arena, value...)
	}
	e.hdrs = append(e.hdrs, span{uint32(n0), uint32(v0), uint32(v0), uint32(len(e.arena))})
	return nil
}

func (e *event) name(i int) []byte  { h := e.hdrs[i]; return e.arena[h.n0:h.n1] }
func (e *event) value(i int) []byte { h := e.hdrs[i]; return e.arena[h.v0:h.v1] }

// raw returns the first value of the header name, compared without case
// (nil when absent). It aliases the arena.
func (e *event) raw(name string) []byte {
	for i, h := range e.hdrs {
		if int(h.n1-h.n0) == len(name) && equalFold(e.arena[h.n0:h.n1], name) {
			return e.value(i)
		}
	}
	return nil
}

// Get returns the first value of the header name as a new string.
func (e *event) Get(name string) string { return string(e.raw(name)) }

// Values returns every value of the header name, in wire order.
func (e *event) Values(name string) []string {
	var vs []string
	for i := range e.hdrs {
		if equalFold(e.name(i), name) {
			vs = append(vs, string(e.value(i)))
		}
	}
	return vs
}

// kind is the subclass of a CUSTOM event (sofia::register), else its
// Event-Name.
func (e *event) kind() []byte {
	if n := e.raw("Event-Name"); string(n) != "CUSTOM" {
		return n
	}
	return e.raw("Event-Subclass")
}

// Name is kind as a string (tests).
func (e *event) Name() string { return string(e.kind()) }

// equalFold compares ASCII without case, as FreeSWITCH's header lookups do.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if x|0x20 != y|0x20 || x|0x20 < 'a' || x|0x20 > 'z' {
			return false
		}
	}
	return true
}

// parsePlain decodes a text/event-plain body into e: "Name: value" lines
// with URL-encoded values up to a blank line, then Content-Length bytes of
// body if the event has a Content-Length header.
func (e *event) parsePlain(body []byte) error {
	e.reset()
	s := body
	for len(s) > 0 {
		line := s
		if i := bytes.IndexByte(s, '\n'); i >= 0 {
			line, s = s[:i], s[i+1:]
		} else {
			s = nil
		}
		for len(line) > 0 && isSpace(line[len(line)-1]) {
			line = line[:len(line)-1]
		}
		if len(line) == 0 {
			break
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			return fmt.Errorf("%w: header line %.40q", errMalformedEvent, line)
		}
		v := line[c+1:]
		for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
			v = v[1:]
		}
		if err := e.add(line[:c], v, true); err != nil {
			return err
		}
	}
	if len(e.hdrs) == 0 {
		return fmt.Errorf("%w: no headers", errMalformedEvent)
	}
	if cl := e.raw("Content-Length"); cl != nil {
		n, ok := parseLength(cl)
		if !ok || n > len(s) {
			return fmt.Errorf("%w: inner Content-Length %.20q with %d bytes left", errMalformedEvent, cl, len(s))
		}
		e.body = s[:n]
	}
	return nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' }

// appendUnescaped appends v decoded as url.QueryUnescape does ('+' is a
// space, %XX a byte): FreeSWITCH's switch_url_encode writes %XX for every
// unsafe byte, '+' included, so this is exact. A value that does not
// decode (a '%' without two hex digits) is appended as it came, like
// go-eventsocket does.
func appendUnescaped(dst, v []byte) []byte {
	i := 0
	for i < len(v) && v[i] != '%' && v[i] != '+' {
		i++
	}
	start := len(dst)
	dst = append(dst, v[:i]...)
	for ; i < len(v); i++ {
		switch c := v[i]; c {
		case '+':
			dst = append(dst, ' ')
		case '%':
			if i+2 >= len(v) || !isHex(v[i+1]) || !isHex(v[i+2]) {
				return append(dst[:start], v...)
			}
			dst = append(dst, unhex(v[i+1])<<4|unhex(v[i+2]))
			i += 2
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// parseJSON decodes a text/event-json body into e: one object of string
// values, read in order with duplicates kept; "_body" is the body.
// (FreeSWITCH sends JSON only when asked; the plain path is the fast one.)
func (e *event) parseJSON(body []byte) error {
	e.reset()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("%w: not a JSON object", errMalformedEvent)
	}
	var bodyAt = -1
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %w", errMalformedEvent, err)
		}
		name, _ := t.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("%w: %w", errMalformedEvent, err)
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			v = string(raw) // a number or an array: keep its JSON text
		}
		if name == "_body" {
			bodyAt = len(e.arena)
			e.arena = append(e.arena, v...)
			e.body = e.arena[bodyAt:] // fixed below, the arena may move
			continue
		}
		if err := e.add([]byte(name), []byte(v), false); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%w: %w", errMalformedEvent, err)
	}
	if bodyAt >= 0 {
		e.body = e.arena[bodyAt : bodyAt+len(e.body)]
	}
	return nil
}
