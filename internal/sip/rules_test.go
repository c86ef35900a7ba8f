package sip

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipwarden/sipwarden/internal/offense"
)

var (
	attacker = netip.MustParseAddrPort("203.0.113.7:5070")
	pbx      = netip.MustParseAddrPort("198.51.100.1:5060")
	t0       = time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)
)

// req builds a CRLF request; hdrs override/add headers ("Name: value").
func req(method, ruri string, hdrs ...string) []byte {
	base := []string{
		"Via: SIP/2.0/UDP 203.0.113.7:5070;branch=z9hG4bK-1",
		"From: <sip:1000@198.51.100.1>;tag=a1",
		"To: <sip:1000@198.51.100.1>",
		"Call-ID: c1@203.0.113.7",
		"CSeq: 1 " + method,
		"Max-Forwards: 70",
	}
	for _, h := range hdrs {
		name := strings.ToLower(h[:strings.IndexByte(h, ':')+1])
		replaced := false
		for i, b := range base {
			if strings.HasPrefix(strings.ToLower(b), name) {
				base[i], replaced = h, true
			}
		}
		if !replaced {
			base = append(base, h)
		}
	}
	var del []string
	for _, b := range base {
		if !strings.HasSuffix(b, ":") { // "Name:" alone deletes
			del = append(del, b)
		}
	}
	return []byte(method + " " + ruri + " SIP/2.0\r\n" + strings.Join(del, "\r\n") + "\r\nContent-Length: 0\r\n\r\n")
}

func resp(status, cseq, to string, extra ...string) []byte {
	h := []string{
		"SIP/2.0 " + status,
		"Via: SIP/2.0/UDP 203.0.113.7:5070;branch=z9hG4bK-1;rport=5070",
		"From: <sip:1000@198.51.100.1>;tag=a1",
		"To: " + to + ";tag=b2",
		"Call-ID: c1@203.0.113.7",
		"CSeq: " + cseq,
		"User-Agent: FreeSWITCH-mod_sofia/1.11.1-release~64bit",
	}
	h = append(h, extra...)
	return []byte(strings.Join(h, "\r\n") + "\r\nContent-Length: 0\r\n\r\n")
}

func TestRequestRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  []byte
		want []offense.Rule
	}{
		{"legit register", req("REGISTER", "sip:198.51.100.1", "User-Agent: Yealink SIP-T46S 66.86.0.15", "Expires: 3600"), nil},
		{"legit options", req("OPTIONS", "sip:198.51.100.1", "User-Agent: Linphone-Desktop/5.2.0 (belle-sip/5.2.0)"), nil},
		{"browser ua with semicolons", req("REGISTER", "sip:198.51.100.1", "User-Agent: Mozilla/5.0 (X11; Linux x86_64) SIP.js/0.21"), nil},
		{"display name O'Brien", req("INVITE", "sip:1001@198.51.100.1", `From: "Pat O'Brien" <sip:1000@198.51.100.1>;tag=a1`), nil},
		{"friendly-scanner", req("OPTIONS", "sip:100@198.51.100.1", "User-Agent: friendly-scanner"), []offense.Rule{offense.ScannerUserAgent}},
		{"sipvicious from", req("OPTIONS", "sip:100@198.51.100.1", `From: "sipvicious"<sip:100@1.1.1.1>;tag=6336`), []offense.Rule{offense.ScannerUserAgent}},
		{"case insensitive", req("OPTIONS", "sip:100@198.51.100.1", "User-Agent: SIPCLI/v1.8"), []offense.Rule{offense.ScannerUserAgent}},
		{"nmap", req("OPTIONS", "sip:nm", "From: <sip:nm@nm>;tag=root", "To: <sip:nm2@nm2>"), []offense.Rule{offense.ScannerUserAgent}},
		{"sippts", req("REGISTER", "sip:198.51.100.1", "User-Agent: pplsip"), []offense.Rule{offense.ScannerUserAgent}},
		{"vax", req("INVITE", "sip:100@198.51.100.1", "User-Agent: VaxSIPUserAgent/3.1"), []offense.Rule{offense.ScannerUserAgent}},
		{"toll 00", req("INVITE", "sip:0097254333222@198.51.100.1"), []offense.Rule{offense.TollFraudInvite}},
		{"toll 011", req("INVITE", "sip:011442079460000@198.51.100.1"), []offense.Rule{offense.TollFraudInvite}},
		{"toll 9011 tech prefix", req("INVITE", "sip:9011442079460000@198.51.100.1"), []offense.Rule{offense.TollFraudInvite}},
		{"toll plus", req("INVITE", "sip:+37256001234@198.51.100.1"), []offense.Rule{offense.TollFraudInvite}},
		{"toll long digits", req("INVITE", "sip:12345678901234567@198.51.100.1"), []offense.Rule{offense.TollFraudInvite}},
		{"toll with auth is fine", req("INVITE", "sip:0097254333222@198.51.100.1", `Proxy-Authorization: Digest username="1000",realm="x",nonce="n",uri="sip:x",response="r"`), nil},
		{"local extension", req("INVITE", "sip:999@198.51.100.1"), nil},
		{"national number", req("INVITE", "sip:0201234567@198.51.100.1"), nil},
		{"sqli in user", req("REGISTER", "sip:198.51.100.1", "To: <sip:1000'or'1'='1@198.51.100.1>"), []offense.Rule{offense.SIPInjection}},
		{"escaped quote in user", req("INVITE", "sip:1%27--@198.51.100.1"), []offense.Rule{offense.SIPInjection}},
		{"shell in user", req("INVITE", "sip:$(reboot)@198.51.100.1"), []offense.Rule{offense.SIPInjection}},
		{"sqli in ua", req("OPTIONS", "sip:198.51.100.1", "User-Agent: x' OR 1=1;--"), []offense.Rule{offense.SIPInjection}},
		{"backtick in display", req("OPTIONS", "sip:198.51.100.1", "From: \"`id`\" <sip:1000@198.51.100.1>;tag=1"), []offense.Rule{offense.SIPInjection}},
		{"scanner and toll", req("INVITE", "sip:00441234567890@198.51.100.1", "User-Agent: friendly-scanner"), []offense.Rule{offense.ScannerUserAgent, offense.TollFraudInvite}},
		{"no via", req("OPTIONS", "sip:198.51.100.1", "Via:"), []offense.Rule{offense.MalformedSIP}},
		{"no call-id", req("OPTIONS", "sip:198.51.100.1", "Call-ID:"), []offense.Rule{offense.MalformedSIP}},
		{"bad cseq", req("OPTIONS", "sip:198.51.100.1", "CSeq: one OPTIONS"), []offense.Rule{offense.MalformedSIP}},
		{"garbage", []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello"), []offense.Rule{offense.MalformedSIP}},
		{"LF only", []byte(strings.ReplaceAll(string(req("OPTIONS", "sip:198.51.100.1")), "\r\n", "\n")), []offense.Rule{offense.MalformedSIP}},
		{"keepalive", []byte("\r\n\r\n"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &collector{}
			a := newTestAnalyzer(t, c, nil)
			a.Packet(Packet{Src: attacker, Dst: pbx, Time: t0, Payload: tc.msg, Source: offense.SourceHEP})
			var got []offense.Rule
			for _, o := range c.offs {
				got = append(got, o.Rule)
				if o.IP != attacker.Addr() || o.Source != offense.SourceHEP || !o.Time.Equal(t0) {
					t.Errorf("offense %+v", o)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v\n%s", got, tc.want, tc.msg)
			}
		})
	}
}

// A flood raises one offense for every FloodRequests requests over the
// limit: its evidence grows with the flood, and one burst is one offense.
func TestFloodGrowsWithTheFlood(t *testing.T) {
	c := &collector{}
	a := newTestAnalyzer(t, c, nil)
	other := netip.MustParseAddrPort("192.0.2.9:5060")
	msg := req("OPTIONS", "sip:198.51.100.1")
	for i := 0; i < 100; i++ { // 100 requests in 1 s (limit 30): floods at 31, 61, 91
		a.Packet(Packet{Src: attacker, Dst: pbx, Time: t0.Add(time.Duration(i) * 10 * time.Millisecond), Payload: msg, Source: offense.SourceCapture})
	}
	a.Packet(Packet{Src: other, Dst: pbx, Time: t0, Payload: msg, Source: offense.SourceCapture})
	// A new window: counted again, fires again (at 31).
	for i := 0; i < 40; i++ {
		a.Packet(Packet{Src: attacker, Dst: pbx, Time: t0.Add(3*time.Second + time.Duration(i)*time.Millisecond), Payload: msg, Source: offense.SourceCapture})
	}
	got := c.count()
	if got[attacker.Addr().String()+" flood"] != 4 || len(got) != 1 {
		t.Errorf("got %v, want 4 floods for the attacker only", got)
	}
	for _, o := range c.offs {
		if o.Verified {
			t.Errorf("a UDP flood proves no round trip: %+v", o)
		}
	}
	if s := testutil.ToFloat64(a.m.skippedVec.WithLabelValues("capture", "flood")); s != 70+10 {
		t.Errorf("skipped{flood} = %v, want 80 (not parsed)", s)
	}
}

func TestExtensionScan(t *testing.T) {
	c := &collector{}
	a := newTestAnalyzer(t, c, func(c *Config) { c.ScanUsers = 5; c.ScanFailures = 3 })
	for i := 0; i < 12; i++ {
		u := fmt.Sprintf("%d", 100+i)
		ts := t0.Add(time.Duration(i) * 500 * time.Millisecond)
		a.Packet(Packet{Src: attacker, Dst: pbx, Time: ts, Source: offense.SourceHEP,
			Payload: req("REGISTER", "sip:198.51.100.1", "To: <sip:"+u+"@198.51.100.1>", "From: <sip:"+u+"@198.51.100.1>;tag=x")})
		a.Packet(Packet{Src: pbx, Dst: attacker, Time: ts, Source: offense.SourceHEP,
			Payload: resp("404 Not Found", "1 REGISTER", "<sip:"+u+"@198.51.100.1>")})
	}
	// The same user over and over is not a scan.
	legit := netip.MustParseAddrPort("192.0.2.10:5060")
	for i := 0; i < 20; i++ {
		a.Packet(Packet{Src: legit, Dst: pbx, Time: t0.Add(time.Duration(i) * time.Second), Payload: req("REGISTER", "sip:198.51.100.1"), Source: offense.SourceHEP})
		a.Packet(Packet{Src: pbx, Dst: legit, Time: t0.Add(time.Duration(i) * time.Second), Payload: resp("403 Forbidden", "2 REGISTER", "<sip:1000@198.51.100.1>"), Source: offense.SourceHEP})
	}
	got := c.count()
	if got[attacker.Addr().String()+" extension_scan"] != 2 { // one from requests, one from 404s
		t.Errorf("got %v", got)
	}
	if got[legit.Addr().String()+" extension_scan"] != 0 || got[legit.Addr().String()+" auth_failure"] != 20 {
		t.Errorf("legit got %v", got)
	}
}

func TestAuthFailureINVITEUser(t *testing.T) {
	c := &collector{}
	a := newTestAnalyzer(t, c, nil)
	a.Packet(Packet{Src: pbx, Dst: attacker, Time: t0, Source: offense.SourcePCAP, Payload: resp("403 Forbidden", "2 INVITE", "<sip:999@198.51.100.1>")})
	a.Packet(Packet{Src: pbx, Dst: attacker, Time: t0, Source: offense.SourcePCAP, Payload: resp("407 Proxy Authentication Required", "1 INVITE", "<sip:999@198.51.100.1>")})
	a.Packet(Packet{Src: pbx, Dst: attacker, Time: t0, Source: offense.SourcePCAP, Payload: resp("403 Forbidden", "1 OPTIONS", "<sip:999@198.51.100.1>")})
	if len(c.offs) != 1 {
		t.Fatalf("%+v", c.offs)
	}
	o := c.offs[0]
	// No digest answer to a nonce of ours was seen: a forged 403 would look
	// the same, so it is not verified.
	if o.Rule != offense.AuthFailure || o.User != "1000" || o.Method != "INVITE" || o.Verified || o.IP != attacker.Addr() {
		t.Errorf("%+v", o)
	}
}

func TestRegistrationLearning(t *testing.T) {
	c := &collector{}
	a := newTestAnalyzer(t, c, nil)
	ph := netip.MustParseAddrPort("[2001:db8::5]:5060")
	send := func(m []byte) {
		a.Packet(Packet{Src: pbx, Dst: ph, Time: t0, Source: offense.SourcePCAP, Payload: m})
	}
	send(resp("200 OK", "2 REGISTER", "<sip:1000@pbx.example>", "Contact: <sip:1000@[2001:db8::5]:5060>;expires=120"))
	send(resp("200 OK", "2 REGISTER", "<sip:1001@pbx.example>", "Contact: <sip:1001@[2001:db8::5]:5060>", "Expires: 300"))
	send(resp("200 OK", "3 REGISTER", "<sip:1000@pbx.example>", "Contact: <sip:1000@[2001:db8::5]:5060>;expires=0"))
	send(resp("200 OK", "4 REGISTER", "<sip:1001@pbx.example>"))
	send(resp("200 OK", "1 INVITE", "<sip:1002@pbx.example>", "Contact: <sip:1002@[2001:db8::5]:5060>;expires=60"))
	if len(c.regs) != 2 {
		t.Fatalf("%+v", c.regs)
	}
	r := c.regs[0]
	if r.IP != ph.Addr() || r.User != "1000" || r.Realm != "pbx.example" || !r.ExpiresAt.Equal(t0.Add(120*time.Second)) || r.CallID != "c1@203.0.113.7" || r.Node != "pcap" {
		t.Errorf("%+v", r)
	}
	if !c.regs[1].ExpiresAt.Equal(t0.Add(300 * time.Second)) {
		t.Errorf("%+v", c.regs[1])
	}
	if fmt.Sprint(c.removed) != "[2001:db8::5 1000@pbx.example 2001:db8::5 1001@pbx.example]" {
		t.Errorf("removed %v", c.removed)
	}
}

func TestTCPSegments(t *testing.T) {
	c := &collector{}
	a := newTestAnalyzer(t, c, nil)
	m1 := req("OPTIONS", "sip:198.51.100.1", "User-Agent: friendly-scanner")
	m2 := req("INVITE", "sip:0097254333222@198.51.100.1")
	both := append(append([]byte{}, m1...), m2...)
	a.Packet(Packet{Src: attacker, Dst: pbx, TCP: true, Verified: true, Time: t0, Payload: both, Source: offense.SourceCapture})
	a.Packet(Packet{Src: attacker, Dst: pbx, TCP: true, Time: t0, Payload: m1[:40], Source: offense.SourceCapture}) // partial
	a.Packet(Packet{Src: attacker, Dst: pbx, TCP: true, Time: t0, Payload: m1[60:], Source: offense.SourceCapture}) // continuation
	got := c.count()
	want := map[string]int{"203.0.113.7 scanner_user_agent": 1, "203.0.113.7 toll_fraud_invite": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v", got)
	}
	for _, o := range c.offs {
		if !o.Verified {
			t.Errorf("offense of a verified TCP flow not verified: %+v", o)
		}
	}
	if testutil.ToFloat64(a.m.skippedVec.WithLabelValues("capture", "tcp_partial")) != 1 ||
		testutil.ToFloat64(a.m.skippedVec.WithLabelValues("capture", "tcp_continuation")) != 1 {
		t.Error("partial/continuation not counted")
	}
}

func TestStateBounded(t *testing.T) {
	c := &collector{}
	a := newTestAnalyzer(t, c, func(c *Config) { c.MaxTrackedIPs = 640 })
	msg := req("OPTIONS", "sip:198.51.100.1")
	for i := 0; i < 20000; i++ {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 5060)
		a.Packet(Packet{Src: src, Dst: pbx, Time: t0, Payload: msg, Source: offense.SourceHEP})
	}
	if n := a.table.size.Load(); n > 640 {
		t.Errorf("tracked %d > cap", n)
	}
	if a.table.evictions.Load() == 0 {
		t.Error("no evictions")
	}
	// Idle state is swept.
	a.Packet(Packet{Src: attacker, Dst: pbx, Time: t0.Add(time.Hour), Payload: msg, Source: offense.SourceHEP})
	a.Packet(Packet{Src: attacker, Dst: pbx, Time: t0.Add(2 * time.Hour), Payload: msg, Source: offense.SourceHEP})
	if n := a.table.size.Load(); n > 2 {
		t.Errorf("after sweep %d", n)
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.TollPatterns = []string{"("}
	c.FloodRequests = 0
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "toll pattern") || !strings.Contains(err.Error(), "flood requests") {
		t.Errorf("Validate: %v", err)
	}
	if _, err := NewAnalyzer(Options{Config: DefaultConfig()}); err == nil {
		t.Error("nil sink accepted")
	}
}
