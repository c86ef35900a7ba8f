package eslwatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

var errMalformedEvent = errors.New("malformed event")

// Event is one decoded FreeSWITCH event: its headers in wire order, values
// URL-decoded, repeated headers kept (register_failure carries profile-name
// twice), and its body when it has one.
type Event struct {
	Headers []Header
	Body    string
}

// Header is one event header.
type Header struct{ Name, Value string }

// Get returns the first value of the header name, compared without case.
func (e *Event) Get(name string) string {
	for _, h := range e.Headers {
		if strings.EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return ""
}

// Values returns every value of the header name, in wire order.
func (e *Event) Values(name string) []string {
	var vs []string
	for _, h := range e.Headers {
		if strings.EqualFold(h.Name, name) {
			vs = append(vs, h.Value)
		}
	}
	return vs
}

// Name is the subclass of a CUSTOM event (sofia::register), else its
// Event-Name.
func (e *Event) Name() string {
	if n := e.Get("Event-Name"); n != "CUSTOM" {
		return n
	}
	return e.Get("Event-Subclass")
}

// parsePlainEvent decodes a text/event-plain body: "Name: value" lines with
// URL-encoded values up to a blank line, then Content-Length bytes of body
// if the event has a Content-Length header. One string copy of the body
// backs every header name and every value that needs no decoding.
func parsePlainEvent(body []byte) (*Event, error) {
	s := string(body)
	ev := &Event{Headers: make([]Header, 0, 48)}
	for len(s) > 0 {
		line := s
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			line, s = s[:i], s[i+1:]
		} else {
			s = ""
		}
		line = strings.TrimRight(line, " \t\r")
		if line == "" {
			break
		}
		c := strings.IndexByte(line, ':')
		if c <= 0 {
			return nil, fmt.Errorf("%w: header line %.40q", errMalformedEvent, line)
		}
		ev.Headers = append(ev.Headers, Header{Name: line[:c], Value: unescape(strings.TrimLeft(line[c+1:], " \t"))})
	}
	if len(ev.Headers) == 0 {
		return nil, fmt.Errorf("%w: no headers", errMalformedEvent)
	}
	if cl := ev.Get("Content-Length"); cl != "" {
		n, ok := parseLength(cl)
		if !ok || n > len(s) {
			return nil, fmt.Errorf("%w: inner Content-Length %.20q with %d bytes left", errMalformedEvent, cl, len(s))
		}
		ev.Body = s[:n]
	}
	return ev, nil
}

// unescape decodes FreeSWITCH's URL encoding (switch_url_encode writes
// %XX for every unsafe byte, '+' included, so query unescaping is exact).
// A value that does not decode is kept as it came, like go-eventsocket does.
func unescape(v string) string {
	if strings.IndexByte(v, '%') < 0 && strings.IndexByte(v, '+') < 0 {
		return v
	}
	d, err := url.QueryUnescape(v)
	if err != nil {
		return v
	}
	return d
}

// parseJSONEvent decodes a text/event-json body: one object of string
// values, read in order with duplicates kept; "_body" is the body.
func parseJSONEvent(body []byte) (*Event, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("%w: not a JSON object", errMalformedEvent)
	}
	ev := &Event{Headers: make([]Header, 0, 48)}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errMalformedEvent, err)
		}
		name, _ := t.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("%w: %w", errMalformedEvent, err)
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			v = string(raw) // a number or an array: keep its JSON text
		}
		if name == "_body" {
			ev.Body = v
			continue
		}
		ev.Headers = append(ev.Headers, Header{Name: name, Value: v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformedEvent, err)
	}
	return ev, nil
}
