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
// An event is reused from one frame to the next by the connection's reader,
// and decodes lazily: parsing only splits the lines; a value is URL-decoded
// (into the arena) the first time it is asked for, and most of an event's
// fifty headers never are. Decoding thus allocates nothing once the buffers
// have grown to the size of the largest event. What it returns aliases the
// frame body or the arena and is valid until the next decode.
type event struct {
	src   []byte // names and raw values: the frame body (plain) or the arena (JSON)
	arena []byte
	hdrs  []span
	body  []byte
}

// span is a header: name src[n0:n1]; value src[v0:v1] until decoded,
// then arena[v0:v1].
type span struct {
	n0, n1, v0, v1 uint32
	state          uint8
}

// The states of a span's value.
const (
	valRaw     uint8 = iota // as on the wire, maybe URL-encoded
	valPlain                // needs no decoding: src[v0:v1]
	valDecoded              // decoded: arena[v0:v1]
)

const maxEventHeaders = 1024

func (e *event) reset() {
	if cap(e.arena) > keepBufMax {
		e.arena = nil
	}
	e.arena = e.arena[:0]
	e.hdrs = e.hdrs[:0]
	e.body = nil
	e.src = nil
}

func (e *event) name(i int) []byte { h := &e.hdrs[i]; return e.src[h.n0:h.n1] }

// value returns header i's decoded value.
func (e *event) value(i int) []byte {
	h := &e.hdrs[i]
	switch h.state {
	case valPlain:
		return e.src[h.v0:h.v1]
	case valDecoded:
		return e.arena[h.v0:h.v1]
	}
	v := e.src[h.v0:h.v1]
	if bytes.IndexByte(v, '%') < 0 && bytes.IndexByte(v, '+') < 0 {
		h.state = valPlain
		return v
	}
	a0 := len(e.arena)
	e.arena = appendUnescaped(e.arena, v)
	h.v0, h.v1, h.state = uint32(a0), uint32(len(e.arena)), valDecoded
	return e.arena[h.v0:h.v1]
}

// raw returns the first value of the header name, compared without case
// (nil when absent).
func (e *event) raw(name string) []byte {
	for i := range e.hdrs {
		h := &e.hdrs[i]
		if int(h.n1-h.n0) == len(name) && equalFold(e.src[h.n0:h.n1], name) {
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
	e.src = body
	off := 0
	for off < len(body) {
		end := len(body)
		next := end
		if i := bytes.IndexByte(body[off:], '\n'); i >= 0 {
			end, next = off+i, off+i+1
		}
		for end > off && isSpace(body[end-1]) {
			end--
		}
		line := body[off:end]
		if len(line) == 0 {
			off = next
			break
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			return fmt.Errorf("%w: header line %.40q", errMalformedEvent, line)
		}
		v := off + c + 1
		for v < end && (body[v] == ' ' || body[v] == '\t') {
			v++
		}
		if len(e.hdrs) == maxEventHeaders {
			return fmt.Errorf("%w: more than %d headers", errMalformedEvent, maxEventHeaders)
		}
		e.hdrs = append(e.hdrs, span{n0: uint32(off), n1: uint32(off + c), v0: uint32(v), v1: uint32(end)})
		off = next
	}
	if len(e.hdrs) == 0 {
		return fmt.Errorf("%w: no headers", errMalformedEvent)
	}
	if cl := e.raw("Content-Length"); cl != nil {
		rest := body[off:]
		n, ok := parseLength(cl)
		if !ok || n > len(rest) {
			return fmt.Errorf("%w: inner Content-Length %.20q with %d bytes left", errMalformedEvent, cl, len(rest))
		}
		e.body = rest[:n]
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
	// Everything goes to src (its own buffer, reusing the arena's).
	src := e.arena[:0]
	e.arena = nil
	bodyAt, bodyLen := -1, 0
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
			bodyAt, bodyLen = len(src), len(v)
			src = append(src, v...)
			continue
		}
		if len(e.hdrs) == maxEventHeaders {
			return fmt.Errorf("%w: more than %d headers", errMalformedEvent, maxEventHeaders)
		}
		n0 := len(src)
		src = append(src, name...)
		v0 := len(src)
		src = append(src, v...)
		e.hdrs = append(e.hdrs, span{n0: uint32(n0), n1: uint32(v0), v0: uint32(v0), v1: uint32(len(src)), state: valPlain})
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%w: %w", errMalformedEvent, err)
	}
	e.src = src
	if bodyAt >= 0 {
		e.body = src[bodyAt : bodyAt+bodyLen]
	}
	return nil
}
