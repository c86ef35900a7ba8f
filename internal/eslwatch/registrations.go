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
	var l listing
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&l); err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrListing, err)
	}
	if dec.More() {
		return nil, 0, fmt.Errorf("%w: data after the object", ErrListing)
	}
	if l.RowCount == nil {
		return nil, 0, fmt.Errorf("%w: no row_count", ErrListing)
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
func contactURI(c string) string {
	if i := strings.IndexByte(c, '<'); i >= 0 {
		if j := strings.IndexByte(c[i:], '>'); j > 0 {
			return c[i+1 : i+j]
		}
	}
	return strings.TrimSpace(c)
}

// eventAddr is the source address FreeSWITCH saw: network-ip
// (sofia::wrong_call_state writes network_ip).
func eventAddr(ev *Event) (netip.Addr, bool) {
	s := ev.Get("network-ip")
	if s == "" {
		s = ev.Get("network_ip")
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap().WithZone(""), true
}

// eventPort is network-port, the source port FreeSWITCH saw (the NAT
// mapping); 0 when absent or not a port.
func eventPort(ev *Event) uint16 {
	s := ev.Get("network-port")
	if s == "" {
		s = ev.Get("network_port")
	}
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0
	}
	return uint16(p)
}

// eventTime is Event-Date-Timestamp (microseconds since the epoch).
func eventTime(ev *Event) (time.Time, bool) {
	us, err := strconv.ParseInt(ev.Get("Event-Date-Timestamp"), 10, 64)
	if err != nil || us <= 0 {
		return time.Time{}, false
	}
	return time.UnixMicro(us).UTC(), true
}

func firstOf(ev *Event, names ...string) string {
	for _, n := range names {
		if v := ev.Get(n); v != "" {
			return v
		}
	}
	return ""
}

// registerEvent maps sofia::register, whose expires is relative seconds.
// In it from-user is the registered (To) user, like reg_user in the listing.
func registerEvent(ev *Event, node string, now time.Time) (r whitelist.Registration, expires int64, ok bool) {
	ip, ok := eventAddr(ev)
	if !ok {
		return r, 0, false
	}
	expires, err := strconv.ParseInt(ev.Get("expires"), 10, 64)
	if err != nil {
		return r, 0, false
	}
	return whitelist.Registration{
		IP:        ip,
		User:      firstOf(ev, "from-user", "username", "to-user"),
		Realm:     firstOf(ev, "realm", "from-host", "to-host"),
		Profile:   ev.Get("profile-name"),
		Contact:   contactURI(ev.Get("contact")),
		CallID:    ev.Get("call-id"),
		UserAgent: ev.Get("user-agent"),
		Node:      node,
		ExpiresAt: now.Add(time.Duration(expires) * time.Second).UTC(),
	}, expires, true
}

// goneEvent maps sofia::unregister and sofia::expire (which names the user
// in "user" and carries an absolute expires) to the registration to remove.
func goneEvent(ev *Event, node string) (whitelist.Registration, bool) {
	ip, ok := eventAddr(ev)
	cid := ev.Get("call-id")
	if !ok && cid == "" {
		return whitelist.Registration{}, false
	}
	return whitelist.Registration{
		IP:      ip,
		User:    firstOf(ev, "user", "from-user", "username"),
		Realm:   firstOf(ev, "realm", "host", "from-host"),
		Profile: ev.Get("profile-name"),
		Contact: contactURI(ev.Get("contact")),
		CallID:  cid,
		Node:    node,
	}, true
}
