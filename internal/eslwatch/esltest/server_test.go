package esltest

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestHandshake drives the server by hand, byte for byte.
func TestHandshake(t *testing.T) {
	s := NewServer(t, "ClueCon")
	s.SetRegistrations(`{"row_count":0}`)
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	expect := func(want string) {
		t.Helper()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != want {
			t.Fatalf("got %q (%v), want %q", got, err, want)
		}
	}
	expect(AuthRequest)
	io.WriteString(c, "auth ClueCon\n\n")
	expect(AuthAccepted)
	io.WriteString(c, "event plain CUSTOM sofia::register\n\n")
	expect(ListenerEnabled)
	s.WaitSubscribed(1, 10*time.Second)
	io.WriteString(c, "api show registrations as json\n\n")
	expect(APIResponse(`{"row_count":0}`))
	if err := s.Push(EventPlain("Event-Name: HEARTBEAT\n\n")); err != nil {
		t.Fatal(err)
	}
	expect("Content-Length: 23\nContent-Type: text/event-plain\n\nEvent-Name: HEARTBEAT\n\n")
	io.WriteString(c, "nonsense\n\n")
	expect(CommandNotFound)
	io.WriteString(c, "exit\n\n")
	expect(Bye + DisconnectNotice)
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection not closed after exit: %v", err)
	}
	want := []string{"auth ClueCon", "event plain CUSTOM sofia::register", "api show registrations as json", "nonsense", "exit"}
	if got := s.Commands(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("commands %q", got)
	}
}

func TestWrongPasswordAndRude(t *testing.T) {
	s := NewServer(t, "ClueCon")
	read := func() string {
		c, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "auth nope\n\n")
		b, _ := io.ReadAll(c)
		return string(b)
	}
	if got, want := read(), AuthRequest+AuthInvalid+DisconnectNotice; got != want {
		t.Fatalf("wrong password: %q, want %q", got, want)
	}
	s.SetAuthMode(AuthRude)
	if got := read(); got != RudeRejection {
		t.Fatalf("rude: %q", got)
	}
}

func TestFrames(t *testing.T) {
	raw := Fixture(t, "C_extras_esl_custom_sofia_events.raw.txt")
	frames, err := Frames(raw)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(frames, "") != string(raw) {
		t.Fatal("frames do not add up to the capture")
	}
	ev, err := EventFrames(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 18 || len(ev) != 13 {
		t.Fatalf("%d frames, %d events", len(frames), len(ev))
	}
	if _, err := Frames([]byte("Content-Length: 10\n\nshort")); err == nil {
		t.Fatal("truncated frame accepted")
	}
}

func TestEscapeLikeFreeSWITCH(t *testing.T) {
	// Values exactly as the A_vanilla capture encodes them.
	for raw, enc := range map[string]string{
		`"" <sip:1000@127.0.0.1:15060;transport=UDP>`: "%22%22%20%3Csip%3A1000%40127.0.0.1%3A15060%3Btransport%3DUDP%3E",
		"sofia::register":               "sofia%3A%3Aregister",
		"Wed, 25 Nov 2026 19:46:14 GMT": "Wed,%2025%20Nov%202026%2019%3A46%3A14%20GMT",
		"Registered(UDP)":               "Registered(UDP)",
		"fd00::2":                       "fd00%3A%3A2",
	} {
		if got := Escape(raw); got != enc {
			t.Errorf("Escape(%q) = %q, want %q", raw, got, enc)
		}
	}
	a := string(Fixture(t, "A_vanilla_esl_custom_sofia_events.raw.txt"))
	reg := RegisterEvent(t, "127.0.0.1", "1000", "1-9887@127.0.0.1", 3600)
	if !strings.Contains(a, reg[strings.Index(reg, "\n\n")+2:][:200]) {
		t.Error("RegisterEvent with the capture's own values differs from the capture")
	}
}
