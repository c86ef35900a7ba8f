// Package esltest is an in-test FreeSWITCH Event Socket server (inbound
// mode) on 127.0.0.1:0, speaking byte for byte what FreeSWITCH 1.11 writes
// in the captures under eslwatch/testdata. Tests of eslwatch and of the
// daemon use it to drive a real socket: authentication, the event
// subscription, `api show registrations as json` with a settable body, and
// raw frames or faults pushed at will.
//
// It is test support only: it must not be imported by non-test code.
package esltest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The server's frames, as the fixtures show them (A_vanilla_esl_custom_sofia_events.raw.txt,
// *_api_show_registrations_as_json*.raw.txt).
const (
	AuthRequest      = "Content-Type: auth/request\n\n"
	AuthAccepted     = "Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
	ListenerEnabled  = "Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n"
	Bye              = "Content-Type: command/reply\nReply-Text: +OK bye\n\n"
	DisconnectNotice = "Content-Type: text/disconnect-notice\nContent-Length: 67\n\nDisconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
	// NoRegistrations is the listing with no rows: note the newline, and no "rows".
	NoRegistrations = "{\"row_count\": 0}\n"
)

// Frames FreeSWITCH writes that the captures do not show, as
// mod_event_socket.c writes them.
const (
	AuthInvalid     = "Content-Type: command/reply\nReply-Text: -ERR invalid\n\n"
	RudeRejection   = "Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n"
	CommandNotFound = "Content-Type: command/reply\nReply-Text: -ERR command not found\n\n"
)

// APIResponse frames an api/response body (Content-Type first, as FreeSWITCH does).
func APIResponse(body string) string {
	return "Content-Type: api/response\nContent-Length: " + strconv.Itoa(len(body)) + "\n\n" + body
}

// EventPlain frames a text/event-plain body (Content-Length first, as
// FreeSWITCH does). body is the URL-encoded header block ending in "\n\n".
func EventPlain(body string) string {
	return "Content-Length: " + strconv.Itoa(len(body)) + "\nContent-Type: text/event-plain\n\n" + body
}

// AuthMode selects how the server answers the auth command.
type AuthMode int

// The auth modes.
const (
	AuthCheck AuthMode = iota // +OK accepted for the right password, -ERR invalid otherwise
	AuthRude                  // text/rude-rejection instead of auth/request (an ACL refusal), then close
)

// Server is an Event Socket server. Its methods are safe for concurrent use.
type Server struct {
	Addr string // host:port to dial

	t        testing.TB
	ln       net.Listener
	password string
	wg       sync.WaitGroup

	mu       sync.Mutex
	mode     AuthMode
	listing  string
	handler  func(cmd string) (reply string, ok bool)
	conns    map[*srvConn]bool
	commands []string
	ready    int           // connections that completed auth + subscription
	changed  chan struct{} // closed and replaced on every state change
}

type srvConn struct {
	nc  net.Conn
	wmu sync.Mutex
	sub bool // subscribed
}

func (c *srvConn) write(s string) error { return c.writeBytes([]byte(s)) }

func (c *srvConn) writeBytes(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

// NewServer starts a server on 127.0.0.1:0 checking password; it is closed
// at the end of the test.
func NewServer(t testing.TB, password string) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("esltest: listen: %v", err)
	}
	s := &Server{
		Addr: ln.Addr().String(), t: t, ln: ln, password: password,
		listing: NoRegistrations, conns: make(map[*srvConn]bool), changed: make(chan struct{}),
	}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.Close)
	return s
}

// Close stops listening, closes every connection and waits for the
// server's goroutines.
func (s *Server) Close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := &srvConn{nc: nc}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
			nc.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.notifyLocked()
			s.mu.Unlock()
		}()
	}
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) serve(c *srvConn) {
	s.mu.Lock()
	mode := s.mode
	s.mu.Unlock()
	if mode == AuthRude {
		c.write(RudeRejection)
		return
	}
	if c.write(AuthRequest) != nil {
		return
	}
	br := bufio.NewReader(c.nc)
	authed := false
	for {
		cmd, err := readCommand(br)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.commands = append(s.commands, cmd)
		handler := s.handler
		s.mu.Unlock()
		if !authed {
			if cmd != "auth "+s.password {
				c.write(AuthInvalid)
				c.write(DisconnectNotice)
				return
			}
			authed = true
			c.write(AuthAccepted)
			continue
		}
		if handler != nil {
			if reply, ok := handler(cmd); ok {
				if reply != "" && c.write(reply) != nil {
					return
				}
				continue
			}
		}
		switch {
		case strings.HasPrefix(cmd, "event plain "):
			c.write(ListenerEnabled)
			s.mu.Lock()
			c.sub = true
			s.ready++
			s.notifyLocked()
			s.mu.Unlock()
		case cmd == "api show registrations as json":
			s.mu.Lock()
			l := s.listing
			s.mu.Unlock()
			c.write(APIResponse(l))
		case cmd == "exit":
			c.write(Bye)
			c.write(DisconnectNotice)
			return
		default:
			c.write(CommandNotFound)
		}
	}
}

// readCommand reads one client command: lines up to a blank line.
func readCommand(br *bufio.Reader) (string, error) {
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if len(lines) == 0 {
				continue
			}
			return strings.Join(lines, "\n"), nil
		}
		lines = append(lines, line)
	}
}

// SetAuthMode changes how later connections are greeted.
func (s *Server) SetAuthMode(m AuthMode) {
	s.mu.Lock()
	s.mode = m
	s.mu.Unlock()
}

// SetRegistrations sets the body answered to `api show registrations as
// json` (default NoRegistrations).
func (s *Server) SetRegistrations(body string) {
	s.mu.Lock()
	s.listing = body
	s.mu.Unlock()
}

// SetHandler installs a hook that sees every command after auth first:
// when it returns ok, the server writes reply (nothing if "") and goes on
// with the next command. Use it to stall or garble replies.
func (s *Server) SetHandler(h func(cmd string) (reply string, ok bool)) {
	s.mu.Lock()
	s.handler = h
	s.mu.Unlock()
}

// Commands returns every command received so far, in order.
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.commands...)
}

// Subscribed returns how many connections have completed auth and the
// event subscription since the server started.
func (s *Server) Subscribed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

// WaitSubscribed waits until Subscribed() >= n.
func (s *Server) WaitSubscribed(n int, timeout time.Duration) {
	s.t.Helper()
	s.wait(timeout, fmt.Sprintf("%d subscribed connections", n), func() bool { return s.ready >= n })
}

// WaitConns waits until exactly n connections are open.
func (s *Server) WaitConns(n int, timeout time.Duration) {
	s.t.Helper()
	s.wait(timeout, fmt.Sprintf("%d open connections", n), func() bool { return len(s.conns) == n })
}

func (s *Server) wait(timeout time.Duration, what string, cond func() bool) {
	s.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		ok, ch := cond(), s.changed
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			s.t.Fatalf("esltest: timed out after %v waiting for %s", timeout, what)
		}
	}
}

// Push writes raw bytes to every subscribed connection.
func (s *Server) Push(raw string) error { return s.PushBytes([]byte(raw)) }

// PushBytes is Push without a copy of raw (benchmarks push megabytes).
func (s *Server) PushBytes(raw []byte) error {
	s.mu.Lock()
	var cs []*srvConn
	for c := range s.conns {
		if c.sub {
			cs = append(cs, c)
		}
	}
	s.mu.Unlock()
	if len(cs) == 0 {
		return errors.New("esltest: no subscribed connection")
	}
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.writeBytes(raw))
	}
	return errors.Join(errs...)
}

// Disconnect sends FreeSWITCH's disconnect notice to every connection and
// closes them.
func (s *Server) Disconnect() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.write(DisconnectNotice)
		c.nc.Close()
	}
}

// Drop closes every connection without a word (a crash, a cut cable).
func (s *Server) Drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.nc.Close()
	}
}

// Frames splits a raw Event Socket capture into its frames (headers,
// blank line, Content-Length bytes of body), each returned whole.
func Frames(stream []byte) ([]string, error) {
	var out []string
	for len(stream) > 0 {
		end := bytes.Index(stream, []byte("\n\n"))
		if end < 0 {
			return out, fmt.Errorf("esltest: %d trailing bytes without a blank line", len(stream))
		}
		n := 0
		for _, line := range strings.Split(string(stream[:end]), "\n") {
			if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
				var err error
				if n, err = strconv.Atoi(v); err != nil {
					return out, fmt.Errorf("esltest: Content-Length %q: %w", v, err)
				}
			}
		}
		size := end + 2 + n
		if size > len(stream) {
			return out, fmt.Errorf("esltest: frame of %d bytes, %d left", size, len(stream))
		}
		out = append(out, string(stream[:size]))
		stream = stream[size:]
	}
	return out, nil
}

// EventFrames returns the text/event-plain and text/event-json frames of a
// capture, in order.
func EventFrames(stream []byte) ([]string, error) {
	all, err := Frames(stream)
	var ev []string
	for _, f := range all {
		if strings.Contains(f[:strings.Index(f, "\n\n")], "Content-Type: text/event-") {
			ev = append(ev, f)
		}
	}
	return ev, err
}

// Fixture reads a capture from eslwatch/testdata (verbatim copies of
// shared/fixtures/freeswitch-1.11), found from this source file's location
// or, failing that, by walking up from the working directory.
func Fixture(t testing.TB, name string) []byte {
	t.Helper()
	var dirs []string
	if _, file, _, ok := runtime.Caller(0); ok {
		dirs = append(dirs, filepath.Join(filepath.Dir(file), "..", "testdata"))
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			dirs = append(dirs, filepath.Join(d, "eslwatch", "testdata"), filepath.Join(d, "testdata"))
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, name)); err == nil {
			return b
		}
	}
	t.Fatalf("esltest: fixture %s not found (looked in %s)", name, strings.Join(dirs, ", "))
	return nil
}

// Rewrite returns an event frame with the named event headers set to new
// values (URL-encoded here, as FreeSWITCH writes them), reframed with the
// right Content-Length. Headers the frame lacks are not added.
func Rewrite(frame string, set map[string]string) string {
	body := frame[strings.Index(frame, "\n\n")+2:]
	lines := strings.Split(body, "\n")
	for i, l := range lines {
		name, _, ok := strings.Cut(l, ": ")
		if v, hit := set[name]; ok && hit {
			lines[i] = name + ": " + Escape(v)
		}
	}
	return EventPlain(strings.Join(lines, "\n"))
}

// fixtureEvent is the n-th event frame of the A_vanilla capture.
func fixtureEvent(t testing.TB, n int) string {
	t.Helper()
	evs, err := EventFrames(Fixture(t, "A_vanilla_esl_custom_sofia_events.raw.txt"))
	if err != nil || len(evs) <= n {
		t.Fatalf("esltest: A_vanilla capture: %d events, %v", len(evs), err)
	}
	return evs[n]
}

// RegisterEvent is the capture's sofia::register for user from ip with
// callID and a relative expires in seconds.
func RegisterEvent(t testing.TB, ip, user, callID string, expires int) string {
	return Rewrite(fixtureEvent(t, 2), map[string]string{
		"network-ip": ip, "from-user": user, "to-user": user, "username": user,
		"contact": `"" <sip:` + user + "@" + ip + `:5060>`, "call-id": callID,
		"expires": strconv.Itoa(expires),
	})
}

// UnregisterEvent is the capture's sofia::unregister for user from ip
// (FreeSWITCH matches it by user and contact; its call-id may be new).
func UnregisterEvent(t testing.TB, ip, user, callID string) string {
	return Rewrite(fixtureEvent(t, 9), map[string]string{
		"network-ip": ip, "from-user": user, "username": user,
		"contact": `"" <sip:` + user + "@" + ip + `:5060>`, "call-id": callID,
	})
}

// RegisterFailureEvent is the capture's sofia::register_failure (a 403
// after a challenge) for user from ip; method is REGISTER or INVITE.
func RegisterFailureEvent(t testing.TB, ip, user, method string) string {
	return Rewrite(fixtureEvent(t, 5), map[string]string{
		"network-ip": ip, "to-user": user, "registration-type": method,
	})
}

// Escape URL-encodes an event header value as the captures show
// FreeSWITCH doing it: control bytes, bytes over '~' and the unsafe set
// (space, the double quote and #%&+:;<=>?@[\]^`{|}) become %XX; the rest
// (letters, digits, ",.()-_/!*'$~") stay as they are.
func Escape(v string) string {
	const hex = "0123456789ABCDEF"
	const unsafe = " \"#%&+:;<=>?@[\\]^`{|}"
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c > ' ' && c <= '~' && strings.IndexByte(unsafe, c) < 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
