package eslwatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// FreeSWITCH stores a registration's expiry as registration time + Expires +
// the profile's sip-expires-late-margin, 60 s by default (the fixtures:
// REGISTER at 19:46:14 with Expires 3600, listed with expires 20:47:14).
// The whitelist wants the SIP expiry and adds its own grace, so the
// listing's absolute times are taken back by this margin.
const fsExpiryMargin = 60 * time.Second

// ErrListing reports a `show registrations as json` body that does not
// decode; the node's registrations are then left as they were.
var ErrListing = errors.New("malformed registration listing")

// listing is FreeSWITCH's `show registrations as json`: every value is a
// string, and with no rows the body is {"row_count": 0} without "rows".
type listing struct {
	RowCount *int         `json:"row_count"`
	Rows     []listingRow `json:"rows"`
}

type listingRow struct {
	RegUser      string `json:"reg_user"`
	Realm        string `json:"realm"`
	Token        string `json:"token"` // the Call-ID
	URL          string `json:"url"`   // sofia/<profile>/<contact URI>
	Expires      string `json:"expires"`
	NetworkIP    string `json:"network_ip"`
	NetworkPort  string `json:"network_port"`
	NetworkProto string `json:"network_proto"`
	Hostname     string `json:"hostname"`
	Metadata     string `json:"metadata"`
}

// ParseRegistrations decodes the body of FreeSWITCH's
// `show registrations as json` into registrations of node. Rows without a
// usable address or expiry are skipped and counted in skipped; a body that
// is not such a listing is an error wrapping ErrListing.
func ParseRegistrations(body []byte, node string) (regs []whitelist.Registration, skipped int, err error) {
	body = bytes.TrimSpace(body)
	l, ok := parseListingFast(string(body))
	if !ok {
		var err error
		if l, err = parseListingJSON(body); err != nil {
			return nil, 0, err
		}
	}
	regs = make([]whitelist.Registration, 0, len(l.Rows))
	for _, row := range l.Rows {
		r, ok := row.registration(node)
		if !ok {
			skipped++
			continue
		}
		regs = append(regs, r)
	}
	return regs, skipped, nil
}

// parseListingJSON is the authoritative decoder of a listing.
func parseListingJSON(body []byte) (listing, error) {
	var l listing
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&l); err != nil {
		return listing{}, fmt.Errorf("%w: %w", ErrListing, err)
	}
	if dec.More() {
		return listing{}, fmt.Errorf("%w: data after the object", ErrListing)
	}
	if l.RowCount == nil {
		return listing{}, fmt.Errorf("%w: no row_count", ErrListing)
	}
	return l, nil
}

func (row *listingRow) registration(node string) (whitelist.Registration, bool) {
	ip, err := netip.ParseAddr(row.NetworkIP)
	if err != nil {
		return whitelist.Registration{}, false
	}
	exp, err := strconv.ParseInt(row.Expires, 10, 64)
	if err != nil || exp <= 0 {
		return whitelist.Registration{}, false
	}
	profile, contact := splitURL(row.URL)
	return whitelist.Registration{
		IP:        ip.Unmap().WithZone(""),
		User:      row.RegUser,
		Realm:     row.Realm,
		Profile:   profile,
		Contact:   contact,
		CallID:    row.Token,
		Node:      node,
		ExpiresAt: time.Unix(exp, 0).Add(-fsExpiryMargin).UTC(),
	}, true
}

// splitURL splits "sofia/internal/sip:1000@127.0.0.1:15060;transport=UDP"
// into the profile and the contact URI.
func splitURL(u string) (profile, contact string) {
	rest, ok := strings.CutPrefix(u, "sofia/")
	if !ok {
		return "", u
	}
	profile, contact, ok = strings.Cut(rest, "/")
	if !ok {
		return "", u
	}
	return profile, contact
}

// contactURI returns the URI of a Contact header value
// (`"" <sip:1000@127.0.0.1:15060;transport=UDP>` -> the part in brackets), so
// that events and the listing name a contact the same way.
func contactURI(c []byte) []byte {
	if i := bytes.IndexByte(c, '<'); i >= 0 {
		if j := bytes.IndexByte(c[i:], '>'); j > 0 {
			return c[i+1 : i+j]
		}
	}
	return bytes.TrimSpace(c)
}

// eventAddr is the source address FreeSWITCH saw: network-ip
// (sofia::wrong_call_state writes network_ip).
func eventAddr(ev *event) (netip.Addr, bool) {
	s := ev.raw("network-ip")
	if s == nil {
		s = ev.raw("network_ip")
	}
	return parseAddr(s)
}

// eventPort is network-port, the source port FreeSWITCH saw (the NAT
// mapping); 0 when absent or not a port.
func eventPort(ev *event) uint16 {
	s := ev.raw("network-port")
	if s == nil {
		s = ev.raw("network_port")
	}
	p, ok := parseInt(s)
	if !ok || p < 0 || p > 65535 || s[0] == '+' || s[0] == '-' {
		return 0
	}
	return uint16(p)
}

// parseAddr parses an address, IPv4 without allocating, unmapped and
// without zone.
func parseAddr(b []byte) (netip.Addr, bool) {
	if a, ok := parseIPv4(b); ok {
		return a, true
	}
	if bytes.IndexByte(b, ':') < 0 {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(string(b))
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap().WithZone(""), true
}

// parseIPv4 accepts exactly what netip.ParseAddr accepts for IPv4: four
// decimal fields of 1 to 3 digits, at most 255, no leading zeros.
func parseIPv4(b []byte) (netip.Addr, bool) {
	var a [4]byte
	field, digits, v := 0, 0, 0
	for i := 0; i <= len(b); i++ {
		if i == len(b) || b[i] == '.' {
			if digits == 0 || field == 4 {
				return netip.Addr{}, false
			}
			a[field] = byte(v)
			field, digits, v = field+1, 0, 0
			continue
		}
		c := b[i]
		if c < '0' || c > '9' || digits == 3 || digits == 1 && v == 0 {
			return netip.Addr{}, false
		}
		v = v*10 + int(c-'0')
		if v > 255 {
			return netip.Addr{}, false
		}
		digits++
	}
	if field != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4(a), true
}

// parseInt parses an optionally signed decimal int64 without allocating.
func parseInt(b []byte) (int64, bool) {
	neg := false
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		neg, b = b[0] == '-', b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// eventTime is Event-Date-Timestamp (microseconds since the epoch).
func eventTime(ev *event) (time.Time, bool) {
	us, ok := parseInt(ev.raw("Event-Date-Timestamp"))
	if !ok || us <= 0 {
		return time.Time{}, false
	}
	return time.UnixMicro(us).UTC(), true
}

func firstOf(ev *event, names ...string) []byte {
	for _, n := range names {
		if v := ev.raw(n); len(v) > 0 {
			return v
		}
	}
	return nil
}

// decoder turns events into registrations. It belongs to one reader
// goroutine: the event, the scratch buffer and the intern table are reused
// from event to event.
type decoder struct {
	ev      event
	scratch []byte
	intern  map[string]string
}

// maxInterned bounds the intern table (realms, profiles, user agents: a
// PBX has few); beyond it strings are simply allocated.
const (
	maxInterned    = 4096
	maxInternedLen = 256
)

func newDecoder() *decoder { return &decoder{intern: make(map[string]string)} }

// str returns b as a string, shared with every earlier equal one.
func (d *decoder) str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := d.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(d.intern) < maxInterned && len(b) <= maxInternedLen {
		d.intern[s] = s
	}
	return s
}

// str3 returns three byte slices as strings backed by one allocation.
func (d *decoder) str3(a, b, c []byte) (string, string, string) {
	d.scratch = append(append(append(d.scratch[:0], a...), b...), c...)
	if cap(d.scratch) > keepBufMax {
		defer func() { d.scratch = nil }()
	}
	s := string(d.scratch)
	return s[:len(a)], s[len(a) : len(a)+len(b)], s[len(a)+len(b):]
}

// registerEvent maps sofia::register, whose expires is relative seconds.
// In it from-user is the registered (To) user, like reg_user in the listing.
func (d *decoder) registerEvent(node string, now time.Time) (r whitelist.Registration, expires int64, ok bool) {
	ev := &d.ev
	ip, ok := eventAddr(ev)
	if !ok {
		return r, 0, false
	}
	expires, ok = parseInt(ev.raw("expires"))
	if !ok {
		return r, 0, false
	}
	user, contact, callID := d.str3(firstOf(ev, "from-user", "username", "to-user"),
		contactURI(ev.raw("contact")), ev.raw("call-id"))
	return whitelist.Registration{
		IP:        ip,
		User:      user,
		Realm:     d.str(firstOf(ev, "realm", "from-host", "to-host")),
		Profile:   d.str(ev.raw("profile-name")),
		Contact:   contact,
		CallID:    callID,
		UserAgent: d.str(ev.raw("user-agent")),
		Node:      node,
		ExpiresAt: now.Add(time.Duration(expires) * time.Second).UTC(),
	}, expires, true
}

// goneEvent maps sofia::unregister and sofia::expire (which names the user
// in "user" and carries an absolute expires) to the registration to remove.
func (d *decoder) goneEvent(node string) (whitelist.Registration, bool) {
	ev := &d.ev
	ip, ok := eventAddr(ev)
	cid := ev.raw("call-id")
	if !ok && len(cid) == 0 {
		return whitelist.Registration{}, false
	}
	user, contact, callID := d.str3(firstOf(ev, "user", "from-user", "username"), contactURI(ev.raw("contact")), cid)
	return whitelist.Registration{
		IP:      ip,
		User:    user,
		Realm:   d.str(firstOf(ev, "realm", "host", "from-host")),
		Profile: d.str(ev.raw("profile-name")),
		Contact: contact,
		CallID:  callID,
		Node:    node,
	}, true
}
