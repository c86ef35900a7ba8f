package sip

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// fixtureMsg is one SIP message from a sipp log, with its direction.
type fixtureMsg struct {
	sent bool // sent by sipp (the phone), received otherwise
	raw  []byte
}

var sippHeader = regexp.MustCompile(`^(UDP message sent|UDP message received|Unexpected UDP message received|>>> sent|<<< received)`)

// loadFixture splits a sipp message log (or a *_sip_exchange.txt) into wire
// messages: LF is turned into CRLF and the body cut at Content-Length, as on
// the wire.
func loadFixture(t testing.TB, name string) []fixtureMsg {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var out []fixtureMsg
	lines := strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		m := sippHeader.FindString(lines[i])
		if m == "" || strings.HasPrefix(lines[i], "Unexpected") { // the "unexpected" copy repeats the previous message
			continue
		}
		sent := strings.Contains(m, "sent")
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		var msg []string
		for ; j < len(lines); j++ {
			if strings.HasPrefix(lines[j], "-----") || sippHeader.MatchString(lines[j]) || strings.HasPrefix(lines[j], "FINAL:") {
				break
			}
			msg = append(msg, lines[j])
		}
		i = j - 1
		text := strings.Join(msg, "\r\n")
		hdrEnd := strings.Index(text, "\r\n\r\n")
		if hdrEnd < 0 {
			t.Fatalf("%s: message without header end", name)
		}
		cl := 0
		if m := regexp.MustCompile(`(?mi)^Content-Length:\s*(\d+)`).FindStringSubmatch(text[:hdrEnd]); m != nil {
			cl, _ = strconv.Atoi(m[1])
		}
		body := text[hdrEnd+4:]
		if len(body) < cl {
			t.Fatalf("%s: body %d < Content-Length %d", name, len(body), cl)
		}
		out = append(out, fixtureMsg{sent: sent, raw: []byte(text[:hdrEnd+4] + body[:cl])})
	}
	if len(out) == 0 {
		t.Fatalf("%s: no messages", name)
	}
	return out
}

func fixtureNames(t testing.TB) []string {
	t.Helper()
	m, _ := filepath.Glob("testdata/*_sipp_messages.txt")
	m2, _ := filepath.Glob("testdata/*_sip_exchange.txt")
	var out []string
	for _, p := range append(m, m2...) {
		out = append(out, filepath.Base(p))
	}
	if len(out) < 10 {
		t.Fatalf("fixtures missing: %v", out)
	}
	return out
}

// encodeHEP3 is the test's own HEPv3 encoder, written from the HEP spec
// (not from DecodeHEP).
func encodeHEP3(src, dst netip.AddrPort, tcp bool, ts time.Time, captureID uint32, payload []byte) []byte {
	var body bytes.Buffer
	chunk := func(typ uint16, data []byte) {
		var h [6]byte
		binary.BigEndian.PutUint16(h[0:], 0)
		binary.BigEndian.PutUint16(h[2:], typ)
		binary.BigEndian.PutUint16(h[4:], uint16(6+len(data)))
		body.Write(h[:])
		body.Write(data)
	}
	u16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	v4 := src.Addr().Is4() && dst.Addr().Is4()
	if v4 {
		chunk(1, []byte{2})
	} else {
		chunk(1, []byte{10})
	}
	proto := byte(17)
	if tcp {
		proto = 6
	}
	chunk(2, []byte{proto})
	if v4 {
		s, d := src.Addr().As4(), dst.Addr().As4()
		chunk(3, s[:])
		chunk(4, d[:])
	} else {
		s, d := src.Addr().As16(), dst.Addr().As16()
		chunk(5, s[:])
		chunk(6, d[:])
	}
	chunk(7, u16(src.Port()))
	chunk(8, u16(dst.Port()))
	chunk(9, u32(uint32(ts.Unix())))
	chunk(10, u32(uint32(ts.Nanosecond()/1000)))
	chunk(11, []byte{1})
	chunk(12, u32(captureID))
	chunk(15, payload)
	out := []byte("HEP3")
	out = binary.BigEndian.AppendUint16(out, uint16(6+body.Len()))
	return append(out, body.Bytes()...)
}

// collector is a Sink and a registrar that records everything.
type collector struct {
	mu      sync.Mutex
	offs    []offense.Offense
	regs    []whitelist.Registration
	removed []string
}

func (c *collector) Offend(o offense.Offense) {
	c.mu.Lock()
	c.offs = append(c.offs, o)
	c.mu.Unlock()
}

func (c *collector) Upsert(r whitelist.Registration) {
	c.mu.Lock()
	c.regs = append(c.regs, r)
	c.mu.Unlock()
}

func (c *collector) Remove(node string, ip netip.Addr, user, realm, callID string) {
	c.mu.Lock()
	c.removed = append(c.removed, ip.String()+" "+user+"@"+realm)
	c.mu.Unlock()
}

// count returns offenses per "ip rule".
func (c *collector) count() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]int{}
	for _, o := range c.offs {
		m[o.IP.String()+" "+string(o.Rule)]++
	}
	return m
}

func (c *collector) rules() map[offense.Rule]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[offense.Rule]int{}
	for _, o := range c.offs {
		m[o.Rule]++
	}
	return m
}

func newTestAnalyzer(t testing.TB, c *collector, mod func(*Config)) *Analyzer {
	t.Helper()
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	a, err := NewAnalyzer(Options{Config: cfg, Sink: c, Registrations: c,
		Servers: func(ip netip.Addr) bool { return ip == pbx.Addr() }, InferServers: true})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// waitFor polls cond until it holds or the deadline passes (the capture runs
// asynchronously; there is nothing to block on).
func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("condition not met within %s", d)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
