package replay

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The graduated response in a replay: at one registered office a phone
// with a stale password gets its mapping quarantined; behind another, a
// guesser rotating ports and users gets the address throttled. Neither
// office is banned.
func TestReplayQuarantinedAndThrottled(t *testing.T) {
	const fs = "192.0.2.2:5060"
	t0 := time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC)
	type pkt = struct {
		at       time.Time
		src, dst string
		payload  string
	}
	msg := func(first, from, user, cid, extra string) string {
		return first + "\r\nVia: SIP/2.0/UDP " + from + ";branch=z9hG4bK-" + cid + "\r\nMax-Forwards: 70\r\n" +
			"From: <sip:" + user + "@pbx.example.com>;tag=" + cid + "\r\nTo: <sip:" + user + "@pbx.example.com>\r\nCall-ID: " + cid +
			"\r\nCSeq: 1 REGISTER\r\nContact: <sip:" + user + "@" + from + ">;expires=3600\r\nExpires: 3600\r\n" + extra +
			"Content-Length: 0\r\n\r\n"
	}
	var pkts []pkt
	at := t0
	// A digest round trip: REGISTER, FreeSWITCH's 401 with a nonce, the
	// answer to that nonce, FreeSWITCH's final status (verified evidence).
	exchange := func(from, user, cid, status string) {
		at = at.Add(time.Second)
		nonce := "n-" + cid
		ms := func(d int) time.Time { return at.Add(time.Duration(d) * time.Millisecond) }
		pkts = append(pkts,
			pkt{ms(0), from, fs, msg("REGISTER sip:pbx.example.com SIP/2.0", from, user, cid, "")},
			pkt{ms(1), fs, from, msg("SIP/2.0 401 Unauthorized", from, user, cid,
				"WWW-Authenticate: Digest realm=\"pbx.example.com\", nonce=\""+nonce+"\", algorithm=MD5\r\n")},
			pkt{ms(2), from, fs, msg("REGISTER sip:pbx.example.com SIP/2.0", from, user, cid,
				"Authorization: Digest username=\""+user+"\", realm=\"pbx.example.com\", nonce=\""+nonce+
					"\", uri=\"sip:pbx.example.com\", response=\"00112233445566778899aabbccddeeff\", algorithm=MD5\r\n")},
			pkt{ms(3), fs, from, msg("SIP/2.0 "+status, from, user, cid, "")})
	}
	for _, office := range []string{"203.0.113.30", "203.0.113.31"} {
		exchange(office+":5060", "1000", "reg-"+office, "200 OK")
	}
	for i := range 6 { // a stale password, one port
		exchange("203.0.113.30:41004", "1004", fmt.Sprint("stale-", i), "403 Forbidden")
	}
	for i := range 10 { // a guesser, a new port and user each time
		exchange(fmt.Sprint("203.0.113.31:", 42000+i), fmt.Sprint(2000+i), fmt.Sprint("guess-", i), "403 Forbidden")
	}
	path := filepath.Join(t.TempDir(), "offices.pcap")
	writePcap(t, path, pkts)
	v := verdicts(run(t, "", path))
	if r := v["203.0.113.30"]; r.Verdict != VerdictQuarantined || !strings.Contains(r.Why, "udp:41004 for 1004") {
		t.Errorf("stale-password office: %+v, want quarantined udp:41004 for 1004", r)
	}
	if r := v["203.0.113.31"]; r.Verdict != VerdictThrottled || !strings.Contains(r.Why, "failing ports") {
		t.Errorf("guesser's office: %+v, want throttled over the ports budget", r)
	}
}
