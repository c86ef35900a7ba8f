package eslwatch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fiorix/go-eventsocket/eventsocket"

	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// fixedNow is the time of the A_vanilla register (Event-Date-Timestamp 1795635974439690).
var fixedNow = time.Date(2026, 11, 25, 19, 46, 14, 0, time.UTC)

// decodeStream returns every event of a capture as eslwatch decodes it.
// Each event gets its own decoder (production reuses one per connection:
// TestDecoderReuse checks that reuse changes nothing).
func decodeStream(t testing.TB, raw []byte) []*event {
	t.Helper()
	fr := newFrameReader(bytes.NewReader(raw), DefaultMaxFrame)
	var evs []*event
	for {
		f, err := fr.next()
		if errors.Is(err, io.EOF) {
			return evs
		}
		if err != nil {
			t.Fatal(err)
		}
		ev := &event{}
		body := bytes.Clone(f.body) // the frame body is the reader's, and the event aliases it
		switch f.contentType() {
		case ctEventPlain:
			err = ev.parsePlain(body)
		case ctEventJSON:
			err = ev.parseJSON(body)
		default:
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
}

// decoderOf returns a decoder holding ev.
func decoderOf(ev *event) *decoder {
	d := newDecoder()
	d.ev = *ev
	return d
}

func TestDecodeFixtureEvents(t *testing.T) {
	evs := decodeStream(t, esltest.Fixture(t, "A_vanilla_esl_custom_sofia_events.raw.txt"))
	var names []string
	for _, ev := range evs {
		names = append(names, ev.Name())
	}
	want := "sofia::pre_register sofia::register_attempt sofia::register sofia::pre_register sofia::register_attempt " +
		"sofia::register_failure sofia::pre_register sofia::pre_register sofia::register_attempt sofia::unregister"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("events\n got %s\nwant %s", got, want)
	}
	reg := evs[2]
	for _, tc := range []struct{ name, want string }{
		{"contact", `"" <sip:1000@127.0.0.1:15060;transport=UDP>`}, // URL-decoded
		{"call-id", "1-9887@127.0.0.1"},
		{"FreeSWITCH-IPv6", "fd00::2"},
		{"Event-Date-GMT", "Wed, 25 Nov 2026 19:46:14 GMT"},
		{"effective_caller_id_name", "Extension 1000"},
		{"EVENT-NAME", "CUSTOM"}, // names compare without case
		{"expires", "3600"},      // relative in sofia::register
	} {
		if got := reg.Get(tc.name); got != tc.want {
			t.Errorf("Get(%s) = %q, want %q", tc.name, got, tc.want)
		}
	}
	fail := evs[5]
	if got := fail.Values("profile-name"); len(got) != 2 || got[0] != "internal" || got[1] != "internal" {
		t.Errorf("repeated profile-name = %q", got)
	}
	// pre_register swaps the users: from-user is the To user.
	if got := evs[6].Get("from-user") + "/" + evs[6].Get("to-user"); got != "999/sipp" {
		t.Errorf("pre_register of the INVITE from/to = %s", got)
	}
}

func TestEventMapping(t *testing.T) {
	a := decodeStream(t, esltest.Fixture(t, "A_vanilla_esl_custom_sofia_events.raw.txt"))
	c := decodeStream(t, esltest.Fixture(t, "C_extras_esl_custom_sofia_events.raw.txt"))

	r, exp, ok := decoderOf(a[2]).registerEvent("fs1", fixedNow)
	want := whitelist.Registration{
		IP: netip.MustParseAddr("127.0.0.1"), User: "1000", Realm: "127.0.0.1", Profile: "internal",
		Contact: "sip:1000@127.0.0.1:15060;transport=UDP", CallID: "1-9887@127.0.0.1",
		UserAgent: "SIPp-reg-test", Node: "fs1", ExpiresAt: fixedNow.Add(time.Hour),
	}
	if !ok || exp != 3600 || r != want {
		t.Fatalf("register:\n got %+v %d %v\nwant %+v", r, exp, ok, want)
	}
	// The same registration from the listing names the same expiry.
	regs, _, err := ParseRegistrations([]byte(listingA), "fs1")
	if err != nil || len(regs) != 1 {
		t.Fatal(regs, err)
	}
	want.UserAgent = "" // the listing has none
	if regs[0] != want {
		t.Fatalf("listing:\n got %+v\nwant %+v", regs[0], want)
	}

	// sofia::unregister: a new call-id (1-10333), same user and contact.
	g, ok := decoderOf(a[9]).goneEvent("fs1")
	if !ok || g.CallID != "1-10333@127.0.0.1" || g.User != "1000" || g.Realm != "127.0.0.1" || g.Contact != want.Contact {
		t.Fatalf("unregister = %+v", g)
	}
	// sofia::expire names the user in "user" and has an absolute expires.
	exp1002 := c[len(c)-1]
	if exp1002.Name() != "sofia::expire" || exp1002.Get("expires") != "1795636193" {
		t.Fatalf("last C event = %s %s", exp1002.Name(), exp1002.Get("expires"))
	}
	g, ok = decoderOf(exp1002).goneEvent("fs1")
	if !ok || g.User != "1002" || g.CallID != "1-12722@127.0.0.1" || g.IP != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("expire = %+v", g)
	}
}

func TestParseRegistrations(t *testing.T) {
	body := func(file string) []byte {
		frames, err := esltest.Frames(esltest.Fixture(t, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames {
			if strings.HasPrefix(f, "Content-Type: api/response\n") && strings.Contains(f, "row_count") {
				return []byte(f[strings.Index(f, "\n\n")+2:])
			}
		}
		t.Fatalf("%s: no listing", file)
		return nil
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		want    []string // user@ip callid expires
		skipped int
		err     bool
	}{
		{name: "one row", in: body("A_vanilla_api_show_registrations_as_json.raw.txt"),
			want: []string{"1000@127.0.0.1 1-9887@127.0.0.1 2026-11-25T20:46:14Z internal"}},
		{name: "row_count 0 without rows", in: body("A_vanilla_api_show_registrations_as_json_after_unregister.raw.txt")},
		{name: "two rows", in: body("E_raw_esl_api_status_and_final_registrations.raw.txt"), want: []string{
			"1003@127.0.0.1 228ec2f4bc03@127.0.0.1 2026-11-25T20:48:22Z internal",
			"1000@127.0.0.1 1-13246@127.0.0.1 2026-11-25T20:50:57Z internal"}},
		{name: "bad rows skipped", in: []byte(`{"row_count":3,"rows":[{"network_ip":"nope","expires":"1"},{"network_ip":"::ffff:192.0.2.1","expires":"x"},{"reg_user":"7","network_ip":"::ffff:192.0.2.1","expires":"1795639634","url":"odd"}]}`),
			want: []string{"7@192.0.2.1  2026-11-25T20:46:14Z "}, skipped: 2},
		{name: "not JSON", in: []byte("-ERR no reply\n"), err: true},
		{name: "no row_count", in: []byte(`{"rows":[]}`), err: true},
		{name: "number where a string is", in: []byte(`{"row_count":1,"rows":[{"expires":1795639634}]}`), err: true},
		{name: "trailing data", in: []byte(`{"row_count":0}{}`), err: true},
		{name: "empty", in: nil, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			regs, skipped, err := ParseRegistrations(tc.in, "fs1")
			if (err != nil) != tc.err {
				t.Fatalf("err = %v", err)
			}
			if err != nil && !errors.Is(err, ErrListing) {
				t.Fatalf("err %v is not ErrListing", err)
			}
			var got []string
			for _, r := range regs {
				got = append(got, fmt.Sprintf("%s@%s %s %s %s", r.User, r.IP, r.CallID, r.ExpiresAt.Format(time.RFC3339), r.Profile))
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") || skipped != tc.skipped {
				t.Fatalf("got %q skipped %d\nwant %q skipped %d", got, skipped, tc.want, tc.skipped)
			}
		})
	}
}

func FuzzRegistrations(f *testing.F) {
	f.Add([]byte(listingA))
	f.Add([]byte(esltest.NoRegistrations))
	f.Add([]byte(`{"row_count":1,"rows":[{"network_ip":"fe80::1%eth0","expires":"9999999999","url":"sofia/x"}]}`))
	f.Add([]byte(`{"row_count":1,"rows":null}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		regs, _, err := ParseRegistrations(in, "n")
		if err != nil {
			if !errors.Is(err, ErrListing) {
				t.Fatalf("error %v does not wrap ErrListing", err)
			}
			return
		}
		for _, r := range regs {
			if !r.IP.IsValid() || r.IP.Is4In6() || r.IP.Zone() != "" || r.Node != "n" {
				t.Fatalf("bad registration %+v", r)
			}
		}
	})
}

func TestParseJSONEventFixture(t *testing.T) {
	plain := decodeStream(t, esltest.Fixture(t, "A_vanilla_esl_custom_sofia_events.raw.txt"))
	js := decodeStream(t, esltest.Fixture(t, "D_esl_event_json_custom_sofia_events.raw.txt"))
	if len(js) == 0 {
		t.Fatal("no JSON events")
	}
	for _, ev := range js {
		if !strings.HasPrefix(ev.Name(), "sofia::") {
			t.Errorf("json event name %q", ev.Name())
		}
	}
	// The same kind of event decodes to the same values in both encodings.
	if got, want := js[0].Get("contact"), plain[0].Get("contact"); got != want {
		t.Errorf("json contact %q, plain %q", got, want)
	}
	if got := js[0].Get("FreeSWITCH-IPv6"); got != "fd00::2" {
		t.Errorf("json FreeSWITCH-IPv6 %q", got)
	}
}

// TestDifferentialGoEventsocket replays each capture to go-eventsocket (the
// library the design card named, kept as the oracle) and to eslwatch's
// decoder, and requires the same headers and values for every event.
// go-eventsocket keeps the first value of a repeated header and
// re-capitalises names, so names compare without case.
func TestDifferentialGoEventsocket(t *testing.T) {
	for _, name := range fixtureStreams[:13] {
		t.Run(name, func(t *testing.T) {
			raw := esltest.Fixture(t, name)
			ours := decodeStream(t, raw)
			theirs := oracleEvents(t, raw, len(ours))
			if len(theirs) != len(ours) {
				t.Fatalf("oracle decoded %d events, eslwatch %d", len(theirs), len(ours))
			}
			for i, oe := range theirs {
				ev := ours[i]
				names := map[string]bool{}
				for i := range ev.hdrs {
					names[strings.ToLower(string(ev.name(i)))] = true
				}
				if len(names) != len(oe.Header) {
					t.Errorf("event %d (%s): %d distinct headers, oracle %d", i, ev.Name(), len(names), len(oe.Header))
				}
				for k, v := range oe.Header {
					s, _ := v.(string)
					if got := ev.Get(k); got != s {
						t.Errorf("event %d (%s) header %s = %q, oracle %q", i, ev.Name(), k, got, s)
					}
				}
				if string(ev.body) != oe.Body {
					t.Errorf("event %d body %q, oracle %q", i, ev.body, oe.Body)
				}
			}
		})
	}
}

// oracleEvents serves the capture verbatim on a socket and reads it with
// go-eventsocket, answering its command replies the way it expects.
func oracleEvents(t *testing.T, raw []byte, n int) []*eventsocket.Event {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(raw)
		io.Copy(io.Discard, c) // until the client closes
	}()
	defer func() { <-served }()
	conn, err := eventsocket.Dial(ln.Addr().String(), "ClueCon")
	if err != nil {
		t.Fatalf("oracle dial: %v", err)
	}
	defer conn.Close()
	// The capture's subscription reply is queued next: Send collects it.
	if _, err := conn.Send("event plain ALL"); err != nil {
		t.Fatalf("oracle subscribe: %v", err)
	}
	var evs []*eventsocket.Event
	for len(evs) < n {
		ev, err := conn.ReadEvent()
		if err != nil {
			t.Fatalf("oracle read after %d events: %v", len(evs), err)
		}
		evs = append(evs, ev)
	}
	// Collect the capture's "+OK bye" so that go-eventsocket's reader is
	// not left blocked on its unbuffered reply channel.
	if _, err := conn.Send("exit"); err != nil {
		t.Fatalf("oracle exit: %v", err)
	}
	return evs
}

func TestDifferentialCoverage(t *testing.T) {
	total := 0
	for _, name := range fixtureStreams[:13] {
		total += len(decodeStream(t, esltest.Fixture(t, name)))
	}
	if total < 80 {
		t.Fatalf("only %d events in the differential set", total)
	}
	t.Logf("%d events compared", total)
}

// FuzzListingFast holds the fast listing scanner to encoding/json: when it
// accepts a body, it decodes exactly what encoding/json decodes.
func FuzzListingFast(f *testing.F) {
	f.Add([]byte(listingA))
	f.Add([]byte(esltest.NoRegistrations))
	f.Add([]byte(generateListing(3)))
	f.Add([]byte(`{"row_count":1,"rows":[{"reg_user":"a\"b\u00e9\ud800","REALM":"x","extra":"y","expires":"1"}]}`))
	f.Add([]byte(`{"rows":[{}],"row_count":01}`))
	f.Add([]byte("{\"row_count\":1,\"rows\":[{\"realm\":\"\xff\"}]}"))
	f.Add([]byte(`{"row_count":2,"rows":[{"token":"a","token":"b"}]} `))
	f.Fuzz(func(t *testing.T, in []byte) {
		fast, ok := parseListingFast(string(in))
		if !ok {
			return
		}
		slow, err := parseListingJSON(in)
		if err != nil {
			t.Fatalf("fast path accepted what encoding/json refuses (%v)", err)
		}
		if *fast.RowCount != *slow.RowCount || len(fast.Rows) != len(slow.Rows) {
			t.Fatalf("row_count %d/%d rows %d/%d", *fast.RowCount, *slow.RowCount, len(fast.Rows), len(slow.Rows))
		}
		for i := range fast.Rows {
			if fast.Rows[i] != slow.Rows[i] {
				t.Fatalf("row %d:\nfast %+v\nslow %+v", i, fast.Rows[i], slow.Rows[i])
			}
		}
	})
}

// TestListingFastCoversFixtures: the fixtures' listings take the fast path.
func TestListingFastCoversFixtures(t *testing.T) {
	for _, body := range []string{listingA, esltest.NoRegistrations, generateListing(10)} {
		if _, ok := parseListingFast(strings.TrimSpace(body)); !ok {
			t.Errorf("fast path refused %.60q", body)
		}
	}
}

// TestDecoderReuse: one event reused across every frame of every capture
// (as a connection's reader does) decodes each exactly as a fresh one.
func TestDecoderReuse(t *testing.T) {
	var reused event
	for _, name := range fixtureStreams {
		raw := esltest.Fixture(t, name)
		fresh := decodeStream(t, raw)
		fr := newFrameReader(bytes.NewReader(raw), DefaultMaxFrame)
		k := 0
		for {
			f, err := fr.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			switch f.contentType() {
			case ctEventPlain:
				err = reused.parsePlain(f.body)
			case ctEventJSON:
				err = reused.parseJSON(f.body)
			default:
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			want := fresh[k]
			k++
			if len(reused.hdrs) != len(want.hdrs) || string(reused.body) != string(want.body) {
				t.Fatalf("%s event %d: %d headers, want %d", name, k, len(reused.hdrs), len(want.hdrs))
			}
			for i := range want.hdrs {
				if string(reused.name(i)) != string(want.name(i)) || string(reused.value(i)) != string(want.value(i)) {
					t.Fatalf("%s event %d header %d: %s=%q, want %s=%q", name, k, i,
						reused.name(i), reused.value(i), want.name(i), want.value(i))
				}
			}
		}
		if k != len(fresh) {
			t.Fatalf("%s: %d events, want %d", name, k, len(fresh))
		}
	}
}

// FuzzUnescape holds appendUnescaped to url.QueryUnescape (a value that
// does not decode is kept as it came).
func FuzzUnescape(f *testing.F) {
	for _, s := range []string{"", "a+b", "%22%22%20%3Csip", "%zz", "%4", "100%", "%E2%82%AC+%2B", "plain"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := url.QueryUnescape(s)
		if err != nil {
			want = s
		}
		if got := string(appendUnescaped([]byte("x"), []byte(s))); got != "x"+want {
			t.Fatalf("appendUnescaped(%q) = %q, want %q", s, got[1:], want)
		}
	})
}

// FuzzParseAddr holds parseAddr to netip.ParseAddr (unmapped, no zone).
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.",
		"::ffff:192.0.2.1", "fe80::1%eth0", "2001:db8::1", "", "1..2.3", "1.2.3.4 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := netip.ParseAddr(s)
		got, ok := parseAddr([]byte(s))
		if ok != (err == nil) || ok && got != want.Unmap().WithZone("") {
			t.Fatalf("parseAddr(%q) = %v,%v; netip: %v,%v", s, got, ok, want, err)
		}
	})
}

// TestRegisterPathAllocations: a renewing sofia::register costs at most
// one allocation from frame bytes to whitelist (issue 11: <= 4).
func TestRegisterPathAllocations(t *testing.T) {
	frame := []byte(fixtureEvents(t, "A_vanilla_esl_custom_sofia_events.raw.txt")[2])
	stream := bytes.Repeat(frame, 200)
	r := bytes.NewReader(stream)
	fr := newFrameReader(r, DefaultMaxFrame)
	wl := whitelist.New(whitelist.Options{Now: func() time.Time { return fixedNow }})
	w, err := New(Options{Addresses: []string{"127.0.0.1:8021"}, Whitelist: wl, Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatal(err)
	}
	n, d := w.nodes[0], newDecoder()
	step := func() {
		f, err := fr.next()
		if errors.Is(err, io.EOF) {
			r.Reset(stream)
			f, err = fr.next()
		}
		if err != nil {
			t.Fatal(err)
		}
		w.handle(n, d, ctEventPlain, f.body)
	}
	step()
	if got := testing.AllocsPerRun(100, step); got > 1 {
		t.Fatalf("%v allocations per renewing register", got)
	}
	if _, ok := wl.Allowed(netip.MustParseAddr("127.0.0.1")); !ok {
		t.Fatal("the register did not reach the whitelist")
	}
}
