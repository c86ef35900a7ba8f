package resilience_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
)

// TestLeakedExtensionQuarantined (issue 13 item 3): extension 1007's
// password leaked; the fraudster registers it from 203.0.113.20:41010 (the
// Event Socket says so: the address is now protected) and places
// international calls through it. FreeSWITCH's HEP mirror shows the INVITE,
// the 407 with a nonce, the INVITE answering that nonce (the round trip
// that makes the evidence unforgeable) and the 403. A registration excuses
// no toll fraud: that mapping is quarantined at once in sipwarden4q, the
// address never banned, and GET /v1/protected names the account.
func TestLeakedExtensionQuarantined(t *testing.T) {
	t.Parallel()
	const (
		pw     = "leaked-Pw-3391"
		fraud  = "203.0.113.20"
		port   = 41010
		dialed = "0097259988776"
	)
	ns := newNS(t)
	srv := eslIn(t, ns, pw)
	srv.SetRegistrations(esltest.NoRegistrations)
	api := "127.0.0.1:9094"
	p := startReady(t, procOpts{ns: ns, api: api, config: fmt.Sprintf(`
esl:
  address: %s
  password: %s
sip:
  hep_listen: 127.0.0.1:9060
  servers: [127.0.0.1/32]
api:
  listen: %s
`, srv.Addr, pw, api)})
	srv.WaitSubscribed(1, 5*time.Second)
	waitFor(t, 5*time.Second, "/readyz 200", func() bool { c, _ := p.get("/readyz"); return c == 200 })

	if err := srv.Push(esltest.RegisterEvent(t, fraud, "1007", "leak-1@fraud", 3600)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the leaked account registered", func() bool { c, _ := p.get("/v1/whitelist/" + fraud); return c == 200 })

	src := netip.AddrPortFrom(netip.MustParseAddr(fraud), port)
	pbx := netip.MustParseAddrPort("127.0.0.1:5060")
	invite := func(cseq int, extra string) string {
		return fmt.Sprintf("INVITE sip:%s@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-l%d\r\nMax-Forwards: 70\r\n"+
			"From: <sip:1007@127.0.0.1>;tag=lf1\r\nTo: <sip:%s@127.0.0.1>\r\nCall-ID: leak-call-1@%s\r\nCSeq: %d INVITE\r\n"+
			"Contact: <sip:1007@%s>\r\nUser-Agent: Zoiper rv2.10.20.2\r\n%sContent-Length: 0\r\n\r\n", dialed, src, cseq, dialed, fraud, cseq, src, extra)
	}
	resp := func(status string, cseq int, extra string) string {
		return fmt.Sprintf("SIP/2.0 %s\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-l%d\r\nFrom: <sip:1007@127.0.0.1>;tag=lf1\r\n"+
			"To: <sip:%s@127.0.0.1>;tag=fs%d\r\nCall-ID: leak-call-1@%s\r\nCSeq: %d INVITE\r\n%sContent-Length: 0\r\n\r\n", status, src, cseq, dialed, cseq, fraud, cseq, extra)
	}
	msgs := []struct {
		from, to netip.AddrPort
		body     string
	}{
		{src, pbx, invite(1, "")},
		{pbx, src, resp("407 Proxy Authentication Required", 1, `Proxy-Authenticate: Digest realm="pbx.example", nonce="leak-nonce-77", algorithm=MD5`+"\r\n")},
		{src, pbx, invite(2, `Proxy-Authorization: Digest username="1007", realm="pbx.example", nonce="leak-nonce-77", uri="sip:`+dialed+`@127.0.0.1", response="00000000000000000000000000000000"`+"\r\n")},
		{pbx, src, resp("403 Forbidden", 2, "")},
	}
	err := inNS(ns, func() error {
		c, err := net.Dial("udp", "127.0.0.1:9060")
		if err != nil {
			return err
		}
		defer c.Close()
		var b []byte
		for _, m := range msgs {
			b = encodeHEP(b, m.from, m.to, time.Now(), []byte(m.body))
			if _, err := c.Write(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mapping := fmt.Sprintf("%s,udp:%d", fraud, port)
	took := waitFor(t, 5*time.Second, "the fraud mapping quarantined", func() bool { return inSet(ns, "sipwarden4q", mapping) })
	t.Logf("quarantined %v after the HEP packets", took.Round(time.Millisecond))
	if inSet(ns, "sipwarden4", fraud) {
		t.Error("the registered address is in the ban set")
	}
	code, body := p.get("/v1/protected")
	if code != 200 || !strings.Contains(body, `"1007"`) || !strings.Contains(body, `"toll_fraud_invite"`) || !strings.Contains(body, `"quarantined"`) {
		t.Errorf("GET /v1/protected = %d, want the account 1007 named and the mapping quarantined for toll fraud:\n%s", code, body)
	}
	if !strings.Contains(p.stderr.String(), "1007") {
		t.Errorf("the log does not name the account:\n%s", p.stderr.String())
	}
}
