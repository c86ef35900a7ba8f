package sip

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

var (
	phone  = netip.MustParseAddrPort("127.0.0.1:15060")
	server = netip.MustParseAddrPort("127.0.0.1:5060")
)

// Every fixture message is read identically by the fast scanner and sipgo,
// and the fast scanner vouches for all of them (the common case is fast).
func TestFixturesFastAndSlowAgree(t *testing.T) {
	p := sipmsg.NewParser()
	for _, name := range fixtureNames(t) {
		for i, fm := range loadFixture(t, name) {
			var fast, slow msgInfo
			if !fastScan(fm.raw, &fast) {
				t.Errorf("%s #%d: fast scanner did not vouch:\n%s", name, i, fm.raw)
				continue
			}
			if err := slowParse(p, fm.raw, &slow); err != nil {
				t.Errorf("%s #%d: sipgo: %v", name, i, err)
				continue
			}
			if d := diffInfo(&fast, &slow); d != "" {
				t.Errorf("%s #%d: fast and sipgo differ: %s", name, i, d)
			}
		}
	}
}

// diffInfo compares the fields the rules read.
func diffInfo(a, b *msgInfo) string {
	type f struct {
		name string
		x, y []byte
	}
	for _, c := range []f{
		{"method", a.method, b.method}, {"ruriUser", a.ruriUser, b.ruriUser}, {"ruriHost", a.ruriHost, b.ruriHost},
		{"fromDisp", a.fromDisp, b.fromDisp}, {"fromUser", a.fromUser, b.fromUser}, {"fromHost", a.fromHost, b.fromHost},
		{"toDisp", a.toDisp, b.toDisp}, {"toUser", a.toUser, b.toUser}, {"toHost", a.toHost, b.toHost},
		{"ctUser", a.ctUser, b.ctUser}, {"ctHost", a.ctHost, b.ctHost}, {"ua", a.ua, b.ua},
		{"callID", a.callID, b.callID}, {"cseqMethod", a.cseqMethod, b.cseqMethod},
	} {
		if !bytes.Equal(c.x, c.y) {
			return c.name + ": " + string(c.x) + " != " + string(c.y)
		}
	}
	if a.request != b.request || a.status != b.status || a.hasAuth != b.hasAuth || a.expires != b.expires ||
		a.ctExpires != b.ctExpires || a.nContacts != b.nContacts {
		return "flags/numbers differ"
	}
	return ""
}

// The fixtures (legit sipp and FreeSWITCH traffic) through HEP: only the
// 403s raise auth_failure, the 200 OKs teach registrations.
func TestHEPFixtures(t *testing.T) {
	c := &collector{}
	reg := prometheus.NewRegistry()
	a, err := NewAnalyzer(Options{Config: DefaultConfig(), Sink: c, Registrations: c, Registerer: reg,
		Servers: func(ip netip.Addr) bool { return ip == server.Addr() }})
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 11, 25, 19, 46, 0, 0, time.UTC)
	n := 0
	for _, name := range fixtureNames(t) {
		for _, fm := range loadFixture(t, name) {
			src, dst := phone, server
			if !fm.sent {
				src, dst = server, phone
			}
			ts = ts.Add(100 * time.Millisecond)
			pkt := encodeHEP3(src, dst, false, ts, 100, fm.raw)
			var h HEP
			if err := DecodeHEP(pkt, &h); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if h.Src != src || h.Dst != dst || !h.Time.Equal(ts.Truncate(time.Microsecond)) || h.CaptureID != 100 || !bytes.Equal(h.Payload, fm.raw) {
				t.Fatalf("%s: decoded %+v", name, h)
			}
			p, ok := hepPacket(&h, offense.SourceHEP)
			if !ok {
				t.Fatal("not SIP")
			}
			a.Packet(p)
			n++
		}
	}
	rules := c.rules()
	// 403s: A/B register_wrong_password (1 each), C unknown user, C invite wrong password.
	if rules[offense.AuthFailure] != 4 {
		t.Errorf("auth_failure = %d, want 4 (%v)", rules[offense.AuthFailure], c.offs)
	}
	for r, k := range rules {
		if r != offense.AuthFailure {
			t.Errorf("unexpected %s x%d: %+v", r, k, c.offs)
		}
	}
	for _, o := range c.offs {
		if o.IP != phone.Addr() || !o.Verified || o.Source != offense.SourceHEP {
			t.Errorf("offense %+v", o)
		}
	}
	if len(c.regs) == 0 {
		t.Error("no registration learned")
	}
	for _, r := range c.regs {
		if r.IP != phone.Addr() || r.ExpiresAt.Before(ts.Add(-time.Hour)) || r.User == "" {
			t.Errorf("registration %+v", r)
		}
	}
	if len(c.removed) != 2 { // A and B unregister
		t.Errorf("removed %v, want the two unregisters", c.removed)
	}
	if got := testutil.ToFloat64(a.m.messages.WithLabelValues("hep")); int(got) != n {
		t.Errorf("messages_total{hep} = %v, want %d", got, n)
	}
	if got := testutil.ToFloat64(a.m.parseErrors[offense.SourceHEP]); got != 0 {
		t.Errorf("parse errors %v", got)
	}
}

func readCaptureFile(t *testing.T, name string, c *collector) *Analyzer {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 4)
	if _, err := f.ReadAt(head, 0); err != nil || !IsCapture(head) {
		t.Fatalf("IsCapture(%x) false (%v)", head, err)
	}
	a := newTestAnalyzer(t, c, nil)
	n, err := ReadCapture(context.Background(), f, a, CaptureOptions{HEP: &HEPOptions{Allow: allowAll}})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no packets")
	}
	return a
}

// The lab captures: the office NAT 10.77.0.10 fails 1003's digest 15 times,
// registers 1000-1002; the roaming phone 1005 registers from 10.77.0.20.
func TestLabCaptures(t *testing.T) {
	for _, name := range []string{"office_roam_wire.pcap", "office_roam_hep.pcap"} {
		t.Run(name, func(t *testing.T) {
			c := &collector{}
			a := readCaptureFile(t, name, c)
			got := c.count()
			if got["10.77.0.10 auth_failure"] != 15 {
				t.Errorf("auth_failure at 10.77.0.10 = %d, want 15 (%v)", got["10.77.0.10 auth_failure"], got)
			}
			if len(got) != 1 {
				t.Errorf("unexpected offenses: %v", got)
			}
			for _, o := range c.offs {
				if o.User != "1003" || o.Method != "REGISTER" || !o.Verified || o.Source != offense.SourcePCAP ||
					o.Time.Before(time.Date(2026, 11, 25, 20, 36, 0, 0, time.UTC)) {
					t.Errorf("offense %+v", o)
				}
			}
			users := map[string]string{}
			for _, r := range c.regs {
				users[r.User] = r.IP.String()
				if r.ExpiresAt.Sub(time.Date(2026, 11, 25, 20, 36, 27, 0, time.UTC)) < 59*time.Minute {
					t.Errorf("expiry %v", r)
				}
			}
			want := map[string]string{"1000": "10.77.0.10", "1001": "10.77.0.10", "1002": "10.77.0.10", "1005": "10.77.0.20"}
			for u, ip := range want {
				if users[u] != ip {
					t.Errorf("registration %s at %q, want %s (%v)", u, users[u], ip, users)
				}
			}
			if len(users) != 4 {
				t.Errorf("registrations %v", users)
			}
			if pe := testutil.ToFloat64(a.m.parseErrors[offense.SourcePCAP]); pe != 0 {
				t.Errorf("parse errors %v", pe)
			}
			if m := testutil.ToFloat64(a.m.messages.WithLabelValues("pcap")); m != 76 {
				t.Errorf("messages %v, want 76", m)
			}
		})
	}
}

func TestIsCapture(t *testing.T) {
	for _, tc := range []struct {
		name string
		head []byte
		want bool
	}{
		{"pcap le", []byte{0xd4, 0xc3, 0xb2, 0xa1}, true},
		{"pcap be", []byte{0xa1, 0xb2, 0xc3, 0xd4}, true},
		{"pcap ns", []byte{0x4d, 0x3c, 0xb2, 0xa1}, true},
		{"pcapng", []byte{0x0a, 0x0d, 0x0d, 0x0a}, true},
		{"log", []byte("2026-11-25 19:46"), false},
		{"gzip", []byte{0x1f, 0x8b, 8, 0}, false},
		{"short", []byte{0xd4}, false},
	} {
		if got := IsCapture(tc.head); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
}

// The whitelist satisfies what the analyzer asks of a registrar, including
// the optional removal.
var (
	_ Registrar           = (*whitelist.Whitelist)(nil)
	_ registrationRemover = (*whitelist.Whitelist)(nil)
)

// Packet is safe for concurrent use (run with -race).
func TestConcurrentPackets(t *testing.T) {
	c := &collector{}
	a := newTestAnalyzer(t, c, func(c *Config) { c.MaxTrackedIPs = 64 })
	msgs := [][]byte{
		req("OPTIONS", "sip:1@198.51.100.1", "User-Agent: friendly-scanner"),
		resp("403 Forbidden", "2 REGISTER", "<sip:1000@198.51.100.1>"),
		resp("200 OK", "2 REGISTER", "<sip:1000@198.51.100.1>", "Contact: <sip:1000@192.0.2.1>;expires=60"),
		[]byte("garbage"),
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				ip := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 200)}), 5060)
				m := msgs[(i+g)%len(msgs)]
				p := Packet{Src: ip, Dst: pbx, Time: t0.Add(time.Duration(i) * time.Millisecond), Payload: m, Source: offense.SourceHEP}
				if m[0] == 'S' {
					p.Src, p.Dst = pbx, ip
				}
				a.Packet(p)
			}
		}()
	}
	wg.Wait()
	if len(c.rules()) < 3 {
		t.Errorf("%v", c.rules())
	}
}
