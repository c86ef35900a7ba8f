package sip

import (
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// trustAnalyzer knows FreeSWITCH as pbx only.
func trustAnalyzer(t *testing.T, c *collector) *Analyzer {
	t.Helper()
	a, err := NewAnalyzer(Options{Config: DefaultConfig(), Sink: c, Registrations: c, Registerer: prometheus.NewRegistry(),
		Servers: func(ip netip.Addr) bool { return ip == pbx.Addr() }})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Finding 3/6: responses charge or protect only when FreeSWITCH sent them.
func TestResponsesOnlyFromFreeSWITCH(t *testing.T) {
	c := &collector{}
	a := trustAnalyzer(t, c)
	forger := netip.MustParseAddrPort("192.0.2.200:5060")
	victim := netip.MustParseAddrPort("203.0.113.50:5060")
	for i := 0; i < 20; i++ {
		a.Packet(Packet{Src: forger, Dst: victim, Time: t0, Source: offense.SourceCapture,
			Payload: resp("403 Forbidden", "2 REGISTER", "<sip:1000@pbx.example>")})
		a.Packet(Packet{Src: forger, Dst: victim, Time: t0, Source: offense.SourceCapture,
			Payload: resp("404 Not Found", "2 REGISTER", "<sip:"+string(rune('a'+i))+"@pbx.example>")})
	}
	a.Packet(Packet{Src: forger, Dst: attacker, Time: t0, Source: offense.SourceCapture,
		Payload: resp("200 OK", "2 REGISTER", "<sip:1000@pbx.example>", "Contact: <sip:1000@203.0.113.7>;expires=999999999")})
	if len(c.offs) != 0 || len(c.regs) != 0 {
		t.Fatalf("forged responses counted: offenses %+v, registrations %+v", c.offs, c.regs)
	}
	// The same 200 OK from FreeSWITCH registers, for at most an hour.
	a.Packet(Packet{Src: pbx, Dst: attacker, Time: t0, Source: offense.SourceCapture,
		Payload: resp("200 OK", "2 REGISTER", "<sip:1000@pbx.example>", "Contact: <sip:1000@203.0.113.7>;expires=999999999")})
	if len(c.regs) != 1 || !c.regs[0].ExpiresAt.Equal(t0.Add(DefaultMaxRegistrationExpiry)) {
		t.Fatalf("registration %+v, want one expiring after %s", c.regs, DefaultMaxRegistrationExpiry)
	}
}

// Finding 3/4: a 403 is verified only after a digest answer to the nonce
// FreeSWITCH gave that very address; HEP's claimed TCP never verifies.
func TestDigestRoundTripVerifies(t *testing.T) {
	c := &collector{}
	a := trustAnalyzer(t, c)
	other := netip.MustParseAddrPort("198.51.100.9:5060")
	challenge := resp("401 Unauthorized", "1 REGISTER", "<sip:1000@pbx.example>",
		`WWW-Authenticate: Digest realm="pbx.example", nonce="n-1234", algorithm=MD5`)
	answer := func(nonce string) []byte {
		return req("REGISTER", "sip:pbx.example", "CSeq: 2 REGISTER",
			`Authorization: Digest username="1000", realm="pbx.example", nonce="`+nonce+`", uri="sip:pbx.example", response="0"`)
	}
	forbidden := resp("403 Forbidden", "2 REGISTER", "<sip:1000@pbx.example>")
	at := func(d int) time.Time { return t0.Add(time.Duration(d) * time.Millisecond) }
	// The attacker gets the nonce and answers it: verified.
	a.Packet(Packet{Src: pbx, Dst: attacker, Time: at(1), Source: offense.SourceHEP, Payload: challenge})
	a.Packet(Packet{Src: attacker, Dst: pbx, Time: at(2), Source: offense.SourceHEP, Payload: answer("n-1234")})
	a.Packet(Packet{Src: pbx, Dst: attacker, Time: at(3), Source: offense.SourceHEP, Payload: forbidden})
	// Another address answers a nonce it was never given (the attacker's,
	// forged in its name): the 403 counts, unverified.
	a.Packet(Packet{Src: other, Dst: pbx, Time: at(4), Source: offense.SourceHEP, Payload: answer("n-1234")})
	a.Packet(Packet{Src: pbx, Dst: other, Time: at(5), Source: offense.SourceHEP, Payload: forbidden})
	// HEP claiming TCP proves nothing.
	var hp HEP
	if err := DecodeHEP(encodeHEP3(pbx, other, true, at(6), 1, forbidden), &hp); err != nil {
		t.Fatal(err)
	}
	p, _ := hepPacket(&hp, offense.SourceHEP)
	a.Packet(p)
	var got []bool
	for _, o := range c.offs {
		if o.Rule != offense.AuthFailure {
			t.Fatalf("%+v", o)
		}
		got = append(got, o.Verified)
	}
	if len(got) != 3 || !got[0] || got[1] || got[2] {
		t.Errorf("verified = %v, want [true false false]", got)
	}
}

// Finding 9: toll fraud is judged on whether authentication succeeded; a
// User-Agent is matched after normalisation; SIPVicious' From tag alone is
// a scanner; leading blanks are skipped as sofia does.
func TestEvasionsAnalyzer(t *testing.T) {
	c := &collector{}
	a := trustAnalyzer(t, c)
	send := func(src netip.AddrPort, b []byte) {
		a.Packet(Packet{Src: src, Dst: pbx, Time: t0, Source: offense.SourceCapture, Payload: b})
	}
	ip := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s + ":5060") }
	dummy := `Proxy-Authorization: Digest username="x", nonce="x", response="0"`
	send(ip("192.0.2.1"), req("INVITE", "sip:0097254333222@198.51.100.1", dummy))
	a.Packet(Packet{Src: pbx, Dst: ip("192.0.2.1"), Time: t0, Source: offense.SourceCapture,
		Payload: resp("407 Proxy Authentication Required", "1 INVITE", "<sip:0097254333222@198.51.100.1>")})
	send(ip("192.0.2.2"), req("INVITE", "sip:0097254333222@198.51.100.1", dummy)) // accepted: not fraud
	a.Packet(Packet{Src: pbx, Dst: ip("192.0.2.2"), Time: t0, Source: offense.SourceCapture,
		Payload: resp("183 Session Progress", "1 INVITE", "<sip:0097254333222@198.51.100.1>")})
	send(ip("192.0.2.3"), req("OPTIONS", "sip:100@198.51.100.1", "User-Agent: FRIENDLY_Scanner"))
	send(ip("192.0.2.4"), req("OPTIONS", "sip:100@198.51.100.1", "User-Agent: Zoiper", "From: <sip:100@x>;tag=3139322e302e322e3130013132333435"))
	send(ip("192.0.2.5"), append([]byte("\r\n \t"), req("OPTIONS", "sip:100@198.51.100.1", "User-Agent: friendly-scanner")...))
	got := c.count()
	want := map[string]int{"192.0.2.1 toll_fraud_invite": 1, "192.0.2.3 scanner_user_agent": 1,
		"192.0.2.4 scanner_user_agent": 1, "192.0.2.5 scanner_user_agent": 1}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], n, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("extra offenses: %v", got)
	}
}
