package eslwatch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
)

func TestFrameReader(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       string
		max      int
		wantType []string // content types of the frames read
		wantErr  error    // error after them (io.EOF for a clean end)
	}{
		{name: "greeting and replies", in: esltest.AuthRequest + esltest.AuthAccepted + esltest.ListenerEnabled,
			wantType: []string{"auth/request", "command/reply", "command/reply"}, wantErr: io.EOF},
		{name: "api body without trailing newline, then a frame", in: esltest.APIResponse(`{"row_count":1,"rows":[]}`) + esltest.Bye,
			wantType: []string{"api/response", "command/reply"}, wantErr: io.EOF},
		{name: "CRLF tolerated", in: "Content-Type: command/reply\r\nReply-Text: +OK\r\n\r\n",
			wantType: []string{"command/reply"}, wantErr: io.EOF},
		{name: "stray blank lines between frames", in: "\n\n" + esltest.AuthRequest + "\n" + esltest.Bye,
			wantType: []string{"auth/request", "command/reply"}, wantErr: io.EOF},
		{name: "disconnect notice", in: esltest.DisconnectNotice, wantType: []string{"text/disconnect-notice"}, wantErr: io.EOF},
		{name: "malformed header line", in: "this is not a header\n\n", wantErr: ErrProtocol},
		{name: "header without name", in: ": value\n\n", wantErr: ErrProtocol},
		{name: "bad Content-Length", in: "Content-Type: api/response\nContent-Length: -5\n\n", wantErr: ErrProtocol},
		{name: "Content-Length with 11 digits", in: "Content-Length: 99999999999\n\n", wantErr: ErrProtocol},
		// Over the limit: the body is discarded unread, the stream goes on.
		{name: "Content-Length over the limit, body never sent", in: "Content-Length: 4000000000\nContent-Type: text/event-plain\n\n", max: 1 << 20, wantErr: io.ErrUnexpectedEOF},
		{name: "one over the limit", in: "Content-Length: 101\n\n" + strings.Repeat("x", 101), max: 100,
			wantType: []string{"(oversize 101)"}, wantErr: io.EOF},
		{name: "oversized event, then a reply", in: esltest.EventPlain(strings.Repeat("User-Agent: x\n", 20)+"\n") + esltest.AuthAccepted, max: 100,
			wantType: []string{"text/event-plain(oversize 281)", "command/reply"}, wantErr: io.EOF},
		{name: "oversized reply, then an event", in: esltest.APIResponse(strings.Repeat("[", 300)) + esltest.EventPlain("A: b\n\n"), max: 100,
			wantType: []string{"api/response(oversize 300)", "text/event-plain"}, wantErr: io.EOF},
		{name: "exactly the limit", in: "Content-Length: 100\nContent-Type: x/y\n\n" + strings.Repeat("x", 100), max: 100,
			wantType: []string{"other"}, wantErr: io.EOF},
		{name: "truncated body", in: "Content-Length: 10\n\nabc", wantErr: io.ErrUnexpectedEOF},
		{name: "truncated headers", in: "Content-Type: command/reply\nReply-Te", wantErr: io.ErrUnexpectedEOF},
		{name: "too many header lines", in: strings.Repeat("X-A: b\n", maxHeaderLines+1) + "\n", wantErr: ErrProtocol},
		{name: "header line too long", in: "X-A: " + strings.Repeat("b", maxHeaderLine) + "\n\n", wantErr: ErrProtocol},
		{name: "line longer than the read buffer", in: "X-A: " + strings.Repeat("b", readBufSize+10) + "\n\n", wantErr: ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			max := tc.max
			if max == 0 {
				max = 1 << 20
			}
			for _, r := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
				fr := newFrameReader(r, max)
				var got []string
				var err error
				for {
					var f *frame
					if f, err = fr.next(); err != nil {
						break
					}
					ct := f.contentType()
					if f.oversize > 0 {
						if len(f.body) > 0 {
							t.Fatalf("oversized frame with a body of %d bytes", len(f.body))
						}
						ct += fmt.Sprintf("(oversize %d)", f.oversize)
					}
					got = append(got, ct)
				}
				if strings.Join(got, ",") != strings.Join(tc.wantType, ",") {
					t.Errorf("frames %q, want %q", got, tc.wantType)
				}
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("err = %v, want %v", err, tc.wantErr)
				}
			}
		})
	}
}

// TestFrameTooLargeAllocatesNothing: a Content-Length far over the limit is
// discarded without any of it being allocated.
func TestFrameTooLargeAllocatesNothing(t *testing.T) {
	in := "Content-Length: 4294967295\nContent-Type: text/event-plain\n\n" + strings.Repeat("x", 100)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := newFrameReader(strings.NewReader(in), 1<<20).next()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 256<<10 {
		t.Fatalf("allocated %d bytes for a refused frame", got)
	}
}

// TestFrameBodyGrowsWithData: a body within the limit that never arrives
// costs what arrived, not what was announced.
func TestFrameBodyGrowsWithData(t *testing.T) {
	in := "Content-Length: 60000000\nContent-Type: api/response\n\n" + strings.Repeat("x", 1000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := newFrameReader(strings.NewReader(in), 64<<20).next()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("allocated %d bytes for 1000 received", got)
	}
}

// TestFixtureStreamsFrame reads every capture whole and checks each frame
// against the independent splitter of esltest.
func TestFixtureStreamsFrame(t *testing.T) {
	for _, name := range fixtureStreams {
		t.Run(name, func(t *testing.T) {
			raw := esltest.Fixture(t, name)
			want, err := esltest.Frames(raw)
			if err != nil {
				t.Fatal(err)
			}
			fr := newFrameReader(bytes.NewReader(raw), DefaultMaxFrame)
			for i := 0; ; i++ {
				f, err := fr.next()
				if errors.Is(err, io.EOF) {
					if i != len(want) {
						t.Fatalf("read %d frames, want %d", i, len(want))
					}
					return
				}
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if !strings.HasSuffix(want[i], string(f.body)) || !strings.Contains(want[i], "Content-Type: "+string(f.get("Content-Type"))+"\n") {
					t.Fatalf("frame %d differs: %q", i, want[i])
				}
			}
		})
	}
}

// TestServerSpeaksLikeTheFixtures: esltest's frames are the captures' bytes.
func TestServerSpeaksLikeTheFixtures(t *testing.T) {
	a := string(esltest.Fixture(t, "A_vanilla_esl_custom_sofia_events.raw.txt"))
	if want := esltest.AuthRequest + esltest.AuthAccepted + esltest.ListenerEnabled; !strings.HasPrefix(a, want) {
		t.Errorf("capture does not start with the server's greeting, accept and subscribe replies")
	}
	if want := esltest.Bye + esltest.DisconnectNotice; !strings.HasSuffix(a, want) {
		t.Errorf("capture does not end with the server's bye and disconnect notice")
	}
	for _, tc := range []struct{ file, body string }{
		{"A_vanilla_api_show_registrations_as_json_after_unregister.raw.txt", esltest.NoRegistrations},
		{"A_vanilla_api_show_registrations_as_json.raw.txt", listingA},
	} {
		raw := string(esltest.Fixture(t, tc.file))
		if want := esltest.AuthRequest + esltest.AuthAccepted + esltest.APIResponse(tc.body) + esltest.Bye; raw != want {
			t.Errorf("%s:\n got %q\nwant %q", tc.file, want, raw)
		}
	}
}

// listingA is the A_vanilla listing body (no trailing newline).
const listingA = `{"row_count":1,"rows":[{"reg_user":"1000","realm":"127.0.0.1","token":"1-9887@127.0.0.1","url":"sofia/internal/sip:1000@127.0.0.1:15060;transport=UDP","expires":"1795639634","network_ip":"127.0.0.1","network_port":"15060","network_proto":"udp","hostname":"vm","metadata":""}]}`

var fixtureStreams = []string{
	"A_vanilla_esl_custom_sofia_events.raw.txt",
	"B_logauthfail_true_esl_custom_sofia_events.raw.txt",
	"C_extras_esl_custom_sofia_events.raw.txt",
	"D_esl_event_json_custom_sofia_events.raw.txt",
	"A_vanilla_invite_unauth_esl_event_plain_ALL.raw.txt",
	"A_vanilla_register_ok_esl_event_plain_ALL.raw.txt",
	"A_vanilla_register_wrong_password_esl_event_plain_ALL.raw.txt",
	"A_vanilla_unregister_esl_event_plain_ALL.raw.txt",
	"B_logauthfail_true_invite_unauth_esl_event_plain_ALL.raw.txt",
	"B_logauthfail_true_register_ok_esl_event_plain_ALL.raw.txt",
	"B_logauthfail_true_register_wrong_password_esl_event_plain_ALL.raw.txt",
	"B_logauthfail_true_unregister_esl_event_plain_ALL.raw.txt",
	"C_extras_invite_wrong_password_esl_event_plain_ALL.raw.txt",
	"E_raw_esl_api_status_and_final_registrations.raw.txt",
	"A_vanilla_api_show_registrations_as_json.raw.txt",
	"A_vanilla_api_show_registrations_as_json_after_unregister.raw.txt",
	"C_extras_api_show_registrations_as_json_multi.raw.txt",
}

// FuzzFrame feeds arbitrary bytes to the frame reader and the event
// decoders: they may refuse input, never panic, loop or over-allocate.
func FuzzFrame(f *testing.F) {
	// Single frames as seeds: whole captures make the fuzzer's input
	// minimisation crawl.
	f.Add([]byte(esltest.AuthRequest + esltest.AuthAccepted + esltest.ListenerEnabled))
	for _, name := range []string{"A_vanilla_esl_custom_sofia_events.raw.txt", "D_esl_event_json_custom_sofia_events.raw.txt"} {
		frames, err := esltest.Frames(esltest.Fixture(f, name))
		if err != nil {
			f.Fatal(err)
		}
		for _, fr := range frames[3:8] {
			f.Add([]byte(fr))
		}
	}
	f.Add([]byte("Content-Length: 4000000000\n\n"))
	f.Add([]byte("Content-Type: text/event-plain\nContent-Length: 12\n\nA: b\nContent-Length: 99\n\n"))
	f.Add([]byte("Content-Type: text/event-json\nContent-Length: 9\n\n{\"a\":[1]}"))
	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 1 << 16
		fr := newFrameReader(bytes.NewReader(in), max)
		d := newDecoder()
		for i := 0; i < 1000; i++ {
			fm, err := fr.next()
			if err != nil {
				return
			}
			if len(fm.body) > max {
				t.Fatalf("body of %d bytes over the limit", len(fm.body))
			}
			switch fm.contentType() {
			case ctEventPlain:
				err = d.ev.parsePlain(fm.body)
			case ctEventJSON:
				err = d.ev.parseJSON(fm.body)
			default:
				continue
			}
			if err == nil {
				d.ev.kind()
				d.registerEvent("n", fixedNow)
				d.goneEvent("n")
				eventTime(&d.ev)
			}
		}
	})
}
