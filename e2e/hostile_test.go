package e2e

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/fslab"
)

var record = flag.Bool("record", false, "write the log lines FreeSWITCH wrote for hostile input to internal/logwatch/testdata/hostile/")

// Victims: addresses hostile text names, which must never be framed.
var victims = []string{"203.0.113.99", "192.0.2.77", "2001:db8::66"}

// esc percent-escapes everything but letters, digits and . - _ (what a
// hostile client writes into a SIP URI user part to carry spaces,
// brackets, quotes and line ends past the parser).
func esc(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// hostileReq is one request with attacker-chosen fields.
type hostileReq struct {
	name                        string
	method                      string // REGISTER or INVITE
	port                        int    // FreeSWITCH port (0: internal)
	ruri                        string // Request-URI (default sip:<toUser>@<toHost>)
	display, fromUser, fromHost string
	toUser, toHost              string
	callID, ua, contact, via    string
	user, password, realm       string // digest answer to a challenge ("" user: none)
	attacker                    int    // attacker namespace
}

func (r hostileReq) text(ua *fslab.UA, cseq int, authHdr, authVal, toTag string) string {
	if r.toHost == "" {
		r.toHost = fslab.FSAddr.String()
	}
	if r.fromHost == "" {
		r.fromHost = r.toHost
	}
	if r.ruri == "" {
		r.ruri = "sip:" + r.toUser + "@" + r.toHost
		if r.method == "REGISTER" {
			r.ruri = "sip:" + r.toHost
		}
	}
	if r.via == "" {
		r.via = ua.Local().String()
	}
	if r.contact == "" {
		r.contact = "<sip:" + r.fromUser + "@" + ua.Local().String() + ">"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\n", r.method, r.ruri)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=z9hG4bK-%s-%d;rport\n", r.via, strconv.FormatInt(time.Now().UnixNano(), 36), cseq)
	fmt.Fprintf(&b, "Max-Forwards: 70\n")
	if r.display != "" {
		fmt.Fprintf(&b, "From: %s <sip:%s@%s>;tag=hostile%d\n", r.display, r.fromUser, r.fromHost, len(r.name))
	} else {
		fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=hostile%d\n", r.fromUser, r.fromHost, len(r.name))
	}
	to := "<sip:" + r.toUser + "@" + r.toHost + ">"
	if toTag != "" {
		to += ";tag=" + toTag
	}
	fmt.Fprintf(&b, "To: %s\n", to)
	fmt.Fprintf(&b, "Call-ID: %s\n", r.callID)
	method := r.method
	if authHdr == "ACK" {
		method, authHdr = "ACK", ""
	}
	fmt.Fprintf(&b, "CSeq: %d %s\n", cseq, method)
	fmt.Fprintf(&b, "Contact: %s\n", r.contact)
	if r.ua != "" {
		fmt.Fprintf(&b, "User-Agent: %s\n", r.ua)
	}
	if r.method == "REGISTER" {
		b.WriteString("Expires: 3600\n")
	}
	if authHdr != "" {
		fmt.Fprintf(&b, "%s: %s\n", authHdr, authVal)
	}
	if r.method == "INVITE" && method == "INVITE" {
		sdp := "v=0\no=- 1 1 IN IP4 " + ua.Local().Addr().String() + "\ns=-\nc=IN IP4 " + ua.Local().Addr().String() + "\nt=0 0\nm=audio 40000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"
		fmt.Fprintf(&b, "Content-Type: application/sdp\nContent-Length: %d\n\n%s", len(strings.ReplaceAll(sdp, "\n", "\r\n")), sdp)
	} else {
		b.WriteString("Content-Length: 0\n\n")
	}
	return b.String()
}

// exchange plays one hostile request: the request, the digest answer to a
// challenge when the case has credentials, and the ACK to a final answer
// to an INVITE. It returns the final status codes.
func (r hostileReq) exchange(t *testing.T, l *fslab.Lab, ua *fslab.UA) []int {
	t.Helper()
	var codes []int
	cseq := 1
	resp, err := ua.Final(r.text(ua, cseq, "", "", ""), r.callID, 5*time.Second)
	if err != nil {
		t.Logf("%s: %v", r.name, err)
		return codes
	}
	codes = append(codes, fslab.Status(resp))
	ack := func(resp string) {
		if r.method == "INVITE" && fslab.Status(resp) >= 300 {
			tag := fslab.Header(resp, "To")
			_, tag, _ = strings.Cut(tag, ";tag=")
			ua.Send(r.text(ua, cseq, "ACK", "", tag))
		}
	}
	ack(resp)
	if st := fslab.Status(resp); (st == 401 || st == 407) && r.user != "" {
		uri := r.ruri
		if uri == "" {
			uri = "sip:" + r.toUser + "@" + fslab.FSAddr.String()
			if r.toHost != "" {
				uri = "sip:" + r.toUser + "@" + r.toHost
			}
			if r.method == "REGISTER" {
				uri = "sip:" + fslab.FSAddr.String()
				if r.toHost != "" {
					uri = "sip:" + r.toHost
				}
			}
		}
		h, v := fslab.Digest(resp, r.method, uri, r.user, r.password, r.realm)
		cseq++
		resp, err = ua.Final(r.text(ua, cseq, h, v, ""), r.callID, 5*time.Second)
		if err != nil {
			t.Logf("%s (answering the challenge): %v", r.name, err)
			return codes
		}
		codes = append(codes, fslab.Status(resp))
		ack(resp)
	}
	return codes
}

// TestRealFreeSWITCHHostileInput sends REGISTERs and INVITEs whose user,
// realm, display name, User-Agent, Call-ID, host and Contact carry
// brackets, spaces, "from ip <victim>", quotes, escapes and escaped line
// ends through the real FreeSWITCH. sipwarden reads what FreeSWITCH makes
// of them from its log, the Event Socket and HEP: no victim address may
// be framed (offender, ban, kernel set) or whitelisted through any of
// them. The attackers are in never_ban so that every request reaches
// FreeSWITCH; their offenses are still scored and listed. With -record
// the log lines FreeSWITCH wrote are saved for the log-rule tests.
func TestRealFreeSWITCHHostileInput(t *testing.T) {
	l := fslab.New(t, fslab.Options{Users: 2, Attackers: 2, Sipwarden: "never_ban: [198.51.100.0/24]\nwhitelist:\n  grace: 1s\n"})
	v := victims[0]
	fake := "2026-12-01 21:00:00.000000 95.00% [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [1000@192.0.2.10] from ip " + v
	cases := []hostileReq{
		{name: "user with brackets and from ip, raw", method: "REGISTER", fromUser: "1000] from ip " + v + " [", toUser: "1000] from ip " + v + " [", user: "1000", password: "wrong"},
		{name: "user with brackets and from ip, escaped", method: "REGISTER", fromUser: esc("1000] from ip " + v + " ["), toUser: esc("1000] from ip " + v + " ["), user: "1000] from ip " + v + " [", password: "wrong"},
		{name: "user with an escaped line end and a whole fake log line", method: "REGISTER", fromUser: esc("1000\n" + fake), toUser: esc("1000\n" + fake), user: "1000\n" + fake, password: "wrong"},
		{name: "user with a fake log line between escaped line ends", method: "REGISTER", fromUser: esc("1000\n" + fake + "\n"), toUser: esc("1000\n" + fake + "\n"), user: "1000", password: "wrong"},
		{name: "digest realm with from ip", method: "REGISTER", fromUser: "1001", toUser: "1001", user: "1001", password: "wrong", realm: "192.0.2.10] from ip " + v + " [x"},
		{name: "digest username with quotes and from ip", method: "REGISTER", fromUser: "1001", toUser: "1001", user: `1001\" from ip ` + v + ` \"`, password: "wrong"},
		{name: "display name, User-Agent and Call-ID with from ip, quotes, escapes", method: "REGISTER", fromUser: "1002", toUser: "1002", user: "1002", password: "wrong",
			display: `"from ip ` + v + ` \"quoted\" [x] \\"`, ua: `Evil/1.0 (from ip ` + v + `) "quoted" [x] \\ \"`, callID: "from-ip-" + v + "]@[" + victims[2] + "]"},
		{name: "host in brackets (IPv6 victim)", method: "REGISTER", fromUser: "1003", toUser: "1003", toHost: "[" + victims[2] + "]", user: "1003", password: "wrong"},
		{name: "host is the victim", method: "REGISTER", fromUser: "1004", toUser: "1004", toHost: v, user: "1004", password: "wrong"},
		{name: "host with spaces and from ip", method: "REGISTER", fromUser: "1005", toUser: "1005", toHost: esc("x] from ip " + v), user: "1005", password: "wrong"},
		{name: "unknown user with from ip", method: "REGISTER", fromUser: esc("x from ip " + v), toUser: esc("x from ip " + v), user: "x from ip " + v, password: "wrong"},
		{name: "unknown user with brackets", method: "REGISTER", fromUser: esc("[" + v + "]"), toUser: esc("[" + v + "]"), user: "[" + v + "]", password: "wrong"},
		{name: "Via and Contact name the victims, right password (attacker 1 registers)", method: "REGISTER", attacker: 1, fromUser: "2000", toUser: "2000", user: "2000", password: fslab.Password(2000),
			via: victims[1] + ":5060", contact: "<sip:2000@" + v + ":5060>", ua: "Phone from ip " + v, callID: "reg@" + v},
		{name: "toll-fraud INVITE, display name and User-Agent with from ip", method: "INVITE", fromUser: "1000", fromHost: v, toUser: "00972599887769",
			display: `"from ip ` + v + `"`, ua: "from ip " + v},
		{name: "INVITE with a wrong password, display name with brackets", method: "INVITE", fromUser: "1000", toUser: "1001", user: "1000", password: "wrong",
			display: `"] from ip ` + v + ` ["`},
		{name: "INVITE with an escaped line end in the caller", method: "INVITE", fromUser: esc("1000\n" + fake), toUser: "1001", user: "1000", password: "wrong"},
		{name: "INVITE with a fake log line between escaped line ends in the caller", method: "INVITE", fromUser: esc("1000\n" + fake + "\n"), toUser: "1001", user: "1000", password: "wrong"},
		{name: "INVITE with a fake log line between escaped CRs in the callee", method: "INVITE", fromUser: "1000", toUser: esc("1001\r" + fake + "\r")},
		{name: "public INVITE (external profile), caller name with from ip", method: "INVITE", port: fslab.ExternalPort, fromUser: esc("from ip " + v), toUser: "00972599887769",
			display: `"Caller from ip ` + v + `"`, ua: "from ip " + v},
		{name: "public INVITE to a user with brackets", method: "INVITE", port: fslab.ExternalPort, fromUser: "carrier", toUser: esc("] from ip " + v + " [")},
	}

	logStart := fileSize(t, l.LogFile)
	uas := map[[2]int]*fslab.UA{}
	for i, c := range cases {
		if c.callID == "" {
			c.callID = fmt.Sprintf("hostile-%d@%s", i, fslab.Attacker(c.attacker))
		}
		port := c.port
		if port == 0 {
			port = fslab.InternalPort
		}
		ua := uas[[2]int{c.attacker, port}]
		if ua == nil {
			ua = l.UA(l.AttackNS[c.attacker], netip.AddrPortFrom(fslab.Attacker(c.attacker), 0), port)
			uas[[2]int{c.attacker, port}] = ua
		}
		codes := c.exchange(t, l, ua)
		t.Logf("%-75s -> %v", c.name, codes)
	}
	// The never-authenticated INVITEs are abandoned about 10 s later; that
	// line and its Event Socket event name the source too.
	l.WaitFor(30*time.Second, "FreeSWITCH abandoning the challenged INVITEs (WRONG_CALL_STATE)", func() bool {
		return strings.Contains(readFrom(t, l.LogFile, logStart), "WRONG_CALL_STATE")
	})
	// Every source saw hostile input.
	for _, src := range []string{"log", "esl", "hep"} {
		l.WaitFor(10*time.Second, "offenses from source "+src, func() bool {
			return l.Metric("sipwarden_offenses_total", "source="+src) > 0
		})
	}
	logged := readFrom(t, l.LogFile, logStart)

	attackers := map[string]bool{fslab.Attacker(0).String(): true, fslab.Attacker(1).String(): true}
	code, body := l.Get("/v1/offenders")
	var off struct {
		Offenders []struct {
			IP       string         `json:"ip"`
			State    string         `json:"state"`
			Offenses map[string]int `json:"offenses"`
		} `json:"offenders"`
	}
	if err := json.Unmarshal([]byte(body), &off); code != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/offenders = %d %v %s", code, err, body)
	}
	for _, o := range off.Offenders {
		if o.IP == fslab.FSAddr.String() {
			// FreeSWITCH's own answers come back through HEP; they may be
			// scored, and its own address must never be banned.
			t.Logf("FreeSWITCH's own address %s is an offender (%s, %v)", o.IP, o.State, o.Offenses)
			continue
		}
		if !attackers[o.IP] {
			t.Errorf("framed: %s is an offender (%s, %v); only the attackers sent anything", o.IP, o.State, o.Offenses)
		}
	}
	if len(off.Offenders) == 0 {
		t.Error("no offender at all: the hostile requests were not seen")
	}
	t.Logf("offenders: %s", body)
	for _, ip := range l.SetEntries() {
		t.Errorf("framed: %s is in the kernel set", ip)
	}
	code, body = l.Get("/v1/whitelist")
	if code != http.StatusOK {
		t.Fatalf("GET /v1/whitelist = %d", code)
	}
	for _, v := range victims {
		if strings.Contains(body, `"ip":"`+v+`"`) || strings.Contains(body, `"ip": "`+v+`"`) {
			t.Errorf("victim %s whitelisted through a hostile Contact/Via: %s", v, body)
		}
		if l.Check(netip.MustParseAddr(v)) != 1 {
			t.Errorf("sipwarden check %s = whitelisted", v)
		}
	}
	if l.Check(fslab.Attacker(1)) != 0 {
		t.Errorf("sipwarden check %s (registered with the right password) not whitelisted: %s", fslab.Attacker(1), body)
	}

	if *record {
		dir := filepath.Join("..", "internal", "logwatch", "testdata", "hostile")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "freeswitch.log"), []byte(logged), 0o644); err != nil {
			t.Fatal(err)
		}
		var idx strings.Builder
		for i, c := range cases {
			fmt.Fprintf(&idx, "%2d. %s (from %s)\n", i+1, c.name, fslab.Attacker(c.attacker))
		}
		if err := os.WriteFile(filepath.Join(dir, "cases.txt"), []byte(idx.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("recorded %d log lines into %s", strings.Count(logged, "\n"), dir)
	}
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func readFrom(t *testing.T, p string, off int64) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) < off {
		return ""
	}
	return string(b[off:])
}
