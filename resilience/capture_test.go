package resilience_test

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The capture suite: the daemon with the shipped defaults (only the Event
// Socket off, as no FreeSWITCH runs, and capture_interface set) captures on
// one end of a veth, the attackers send from the other end for real. A tiny
// FreeSWITCH stand-in answers INVITEs with 407 from the host's own address.
const (
	capFS    = "192.0.2.10"
	capFS6   = "2001:db8::10"
	capIface = "vcap0"
)

// capLink creates the daemon and attacker namespaces joined by a veth;
// the attacker side holds every source address the cases use.
func capLink(t *testing.T, attackers []string) (daemonNS, attackerNS string) {
	t.Helper()
	daemonNS, attackerNS = newNS(t), newNS(t)
	run(t, "ip", "-n", daemonNS, "link", "add", capIface, "type", "veth", "peer", "name", "vcap1", "netns", attackerNS)
	run(t, "ip", "-n", daemonNS, "addr", "add", capFS+"/24", "dev", capIface)
	run(t, "ip", "-n", daemonNS, "addr", "add", capFS6+"/64", "dev", capIface, "nodad")
	run(t, "ip", "-n", daemonNS, "link", "set", capIface, "up")
	for _, a := range attackers {
		if strings.Contains(a, ":") {
			run(t, "ip", "-n", attackerNS, "addr", "add", a+"/64", "dev", "vcap1", "nodad")
		} else {
			run(t, "ip", "-n", attackerNS, "addr", "add", a+"/24", "dev", "vcap1")
		}
	}
	run(t, "ip", "-n", attackerNS, "link", "set", "vcap1", "up")
	return daemonNS, attackerNS
}

// sipReq is a well-formed request from src; extra headers are added as
// given, and ua "" leaves User-Agent out.
func sipReq(method, ruri, src, ua, fromTag string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s:5070;branch=z9hG4bK-%s\r\nMax-Forwards: 70\r\n", method, ruri, src, fromTag)
	fmt.Fprintf(&b, "From: <sip:100@%s>;tag=%s\r\nTo: <%s>\r\nCall-ID: cap-%s@%s\r\nCSeq: 1 %s\r\n", src, fromTag, ruri, fromTag, src, method)
	if ua != "" {
		b.WriteString("User-Agent: " + ua + "\r\n")
	}
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

// sendUDP sends payloads from src to dst inside ns, with control applied to
// the socket first (nil: none).
func sendUDP(t *testing.T, ns, src, dst string, control func(fd uintptr) error, payloads ...string) {
	t.Helper()
	err := inNS(ns, func() error {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}
		if control != nil {
			d.Control = func(_, _ string, c syscall.RawConn) error {
				var serr error
				if err := c.Control(func(fd uintptr) { serr = control(fd) }); err != nil {
					return err
				}
				return serr
			}
		}
		c, err := d.Dial("udp", dst)
		if err != nil {
			return err
		}
		defer c.Close()
		for _, p := range payloads {
			if _, err := c.Write([]byte(p)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send from %s: %v", src, err)
	}
}

// offenders reads GET /v1/offenders: rule counts by address.
func (p *daemonProc) offenders() map[string]map[string]int {
	p.t.Helper()
	code, body := p.do(http.MethodGet, "/v1/offenders?limit=1000", nil, "")
	if code != http.StatusOK {
		p.t.Fatalf("GET /v1/offenders = %d %s", code, body)
	}
	var r struct {
		Offenders []struct {
			IP       string         `json:"ip"`
			Prefix   string         `json:"prefix"`
			Offenses map[string]int `json:"offenses"`
		} `json:"offenders"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		p.t.Fatalf("GET /v1/offenders: %v: %s", err, body)
	}
	out := map[string]map[string]int{}
	for _, o := range r.Offenders {
		out[o.IP] = o.Offenses
		if o.Prefix != "" { // IPv6 scored per ban.v6_prefix (64 by default)
			out[o.Prefix] = o.Offenses
		}
	}
	return out
}

// fsStandIn answers every INVITE to capFS:5060 with a 407 carrying a nonce,
// as FreeSWITCH does to a caller whose credentials it refuses; it runs in ns
// until the test ends.
func fsStandIn(t *testing.T, ns string) {
	t.Helper()
	var conn *net.UDPConn
	if err := inNS(ns, func() (err error) {
		conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(capFS), Port: 5060})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { conn.Close(); wg.Wait() })
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			req := string(buf[:n])
			if !strings.HasPrefix(req, "INVITE ") {
				continue
			}
			var b strings.Builder
			b.WriteString("SIP/2.0 407 Proxy Authentication Required\r\n")
			for _, l := range strings.Split(req, "\r\n") {
				for _, h := range []string{"Via:", "From:", "Call-ID:", "CSeq:"} {
					if strings.HasPrefix(l, h) {
						b.WriteString(l + "\r\n")
					}
				}
				if strings.HasPrefix(l, "To:") {
					b.WriteString(l + ";tag=fs407\r\n")
				}
			}
			b.WriteString("Proxy-Authenticate: Digest realm=\"" + capFS + "\", nonce=\"fs-nonce-1\", algorithm=MD5, qop=\"auth\"\r\nContent-Length: 0\r\n\r\n")
			conn.WriteToUDPAddrPort([]byte(b.String()), from)
		}
	}()
}

// TestCaptureForgedAndEvasive: live capture with the shipped defaults, on a
// veth, against forged and evasive traffic sent for real.
func TestCaptureForgedAndEvasive(t *testing.T) {
	t.Parallel()
	const (
		single   = "192.0.2.66" // one scanner packet: proves nothing, never banned
		scanner  = "192.0.2.67" // a real scanner: many packets from its own address
		hepper   = "192.0.2.68" // wraps a forged SIP message in HEP to the SIP port
		victim   = "192.0.2.99" // the address the HEP claims (it sends nothing)
		crlf     = "192.0.2.69" // leading CRLF and blanks before the start line
		fragger  = "192.0.2.70" // a scanner OPTIONS in IPv4 fragments
		tcpSplit = "192.0.2.71" // a scanner OPTIONS over TCP, split across segments
		variant  = "192.0.2.72" // "Friendly Scanner"
		tagOnly  = "192.0.2.73" // SIPVicious' From tag, an innocent User-Agent
		toll     = "192.0.2.74" // toll-fraud INVITE with a dummy Proxy-Authorization
		hbh      = "2001:db8::66"
	)
	dns, ans := capLink(t, []string{single, scanner, hepper, crlf, fragger, tcpSplit, variant, tagOnly, toll, hbh})
	fsStandIn(t, dns)
	// A TCP peer on the SIP port, so the handshake completes.
	var ln net.Listener
	if err := inNS(dns, func() (err error) { ln, err = net.Listen("tcp", capFS+":5060"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()

	p := startReady(t, procOpts{ns: dns, api: "127.0.0.1:9091", config: `
esl:
  disabled: true
sip:
  capture_interface: ` + capIface + `
api:
  listen: 127.0.0.1:9091
`})
	dst := capFS + ":5060"
	ruri := "sip:100@" + capFS

	// One packet from a source: counted, not banned.
	sendUDP(t, ans, single, dst, nil, sipReq("OPTIONS", ruri, single, "friendly-scanner", "s1"))
	// A real scanner: eight probes over 1.4 s, then banned in the kernel.
	for i := 0; i < 8; i++ {
		sendUDP(t, ans, scanner, dst, nil, sipReq("OPTIONS", fmt.Sprintf("sip:%d@%s", 100+i, capFS), scanner, "friendly-scanner", fmt.Sprintf("r%d", i)))
		time.Sleep(200 * time.Millisecond)
	}
	// HEP to the SIP port: an INVITE claiming the victim's address over
	// TCP. Live capture never unwraps it.
	inner := sipReq("INVITE", "sip:0097259988776@"+capFS, victim, "friendly-scanner", "h1")
	var hep []byte
	for i := 0; i < 10; i++ {
		hep = encodeHEP(hep, netip.MustParseAddrPort(victim+":5060"), netip.MustParseAddrPort(dst), time.Now(), []byte(inner))
		hep[19] = 6 // the IP protocol chunk (the second; its data at 6+7+6): claim TCP
		sendUDP(t, ans, hepper, dst, nil, string(hep))
	}
	// Evasions, each must still be seen.
	sendUDP(t, ans, crlf, dst, nil, "\r\n\r\n \t"+sipReq("OPTIONS", ruri, crlf, "friendly-scanner", "c1"))
	sendUDP(t, ans, fragger, dst, nil, sipReq("OPTIONS", ruri, fragger, "friendly-scanner", "f1", "X-Pad: "+strings.Repeat("a", 3000)))
	sendUDP(t, ans, variant, dst, nil, sipReq("OPTIONS", ruri, variant, "Friendly Scanner", "v1"))
	sendUDP(t, ans, tagOnly, dst, nil, sipReq("OPTIONS", ruri, tagOnly, "Zoiper rv2.10.20.2", hex.EncodeToString([]byte(capFS+"\x011234567890"))))
	sendUDP(t, ans, toll, dst, nil, sipReq("INVITE", "sip:0097259988776@"+capFS, toll, "Zoiper rv2.10.20.2", "t1",
		`Proxy-Authorization: Digest username="x", realm="x", nonce="made-up", uri="sip:x", response="00000000000000000000000000000000"`))
	hopOpts := func(fd uintptr) error {
		// Hop-by-Hop header: next header (filled by the kernel), length 0,
		// one PadN option of 4 bytes.
		return unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_HOPOPTS, string([]byte{0, 0, 1, 4, 0, 0, 0, 0}))
	}
	sendUDP(t, ans, hbh, "["+capFS6+"]:5060", hopOpts, sipReq("OPTIONS", "sip:100@["+capFS6+"]", "["+hbh+"]", "friendly-scanner", "6h1"))
	if err := inNS(ans, func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(tcpSplit)}}
		c, err := d.Dial("tcp", dst)
		if err != nil {
			return err
		}
		defer c.Close()
		m := sipReq("OPTIONS", ruri, tcpSplit, "friendly-scanner", "tcp1")
		for _, part := range []string{m[:20], m[20:90], m[90:]} {
			if _, err := c.Write([]byte(part)); err != nil {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	want := map[string]string{
		single: "scanner_user_agent", scanner: "scanner_user_agent", crlf: "scanner_user_agent",
		fragger: "scanner_user_agent", tcpSplit: "scanner_user_agent", variant: "scanner_user_agent",
		tagOnly: "scanner_user_agent", toll: "toll_fraud_invite",
		// scored per /64 (ban.v6_prefix default)
		netip.PrefixFrom(netip.MustParseAddr(hbh), 64).Masked().String(): "scanner_user_agent",
	}
	var got map[string]map[string]int
	waitFor(t, 10*time.Second, "every case seen", func() bool {
		got = p.offenders()
		for ip, rule := range want {
			if got[ip][rule] == 0 {
				return false
			}
		}
		return inSet(dns, "sipwarden4", scanner)
	})
	for ip, rule := range want {
		if got[ip][rule] == 0 {
			t.Errorf("%s: no %s (offenses %v)", ip, rule, got[ip])
		}
	}
	if got[crlf]["malformed_sip"] != 0 {
		t.Errorf("leading CRLF read as malformed: %v", got[crlf])
	}
	for _, ip := range []string{victim, hepper} {
		if len(got[ip]) != 0 {
			t.Errorf("HEP inside a captured datagram was read: %s has %v", ip, got[ip])
		}
	}
	if n := p.metric("sipwarden_sip_skipped_total", "source=capture", "reason=hep"); n < 10 {
		t.Errorf("sipwarden_sip_skipped_total{reason=hep} = %v, want 10", n)
	}
	if !inSet(dns, "sipwarden4", scanner) {
		t.Errorf("the real scanner %s is not banned", scanner)
	}
	for _, ip := range []string{single, crlf, fragger, variant, tagOnly, victim, hepper} {
		if inSet(dns, "sipwarden4", ip) {
			t.Errorf("%s banned on one packet", ip)
		}
	}
}

// TestHEPListenerTrust: a HEP listener off loopback without sip.hep_allow
// does not start (exit 2, naming the key); with it, HEP from any other
// sender or with another capture_id is refused and counted, and HEP from
// the allowed agent is read. Shipped defaults otherwise.
func TestHEPListenerTrust(t *testing.T) {
	t.Parallel()
	const (
		agent    = "192.0.2.68" // the capture agent
		stranger = "192.0.2.67"
		claimed  = "198.51.100.50" // the source the HEP claims
	)
	dns, ans := capLink(t, []string{agent, stranger})

	cfg := filepath.Join(t.TempDir(), "open.yaml")
	if err := os.WriteFile(cfg, []byte("esl:\n  disabled: true\nsip:\n  hep_listen: 0.0.0.0:9060\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", dns, sipwardenBin, "run", "-config", cfg)
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "sip.hep_allow") {
		t.Fatalf("hep_listen 0.0.0.0 without hep_allow: exit %d (%v), want 2 naming sip.hep_allow:\n%s", code, err, out)
	}

	p := startReady(t, procOpts{ns: dns, api: "127.0.0.1:9091", config: `
esl:
  disabled: true
sip:
  hep_listen: 0.0.0.0:9060
  hep_allow: [` + agent + `]
  hep_capture_ids: [100]
api:
  listen: 127.0.0.1:9091
`})
	hepTo := capFS + ":9060"
	probe := func(i int) string {
		return sipReq("OPTIONS", "sip:100@"+capFS, claimed, "friendly-scanner", fmt.Sprintf("hep%d", i))
	}
	var b []byte
	withID := func(id uint32, payload string) string {
		b = encodeHEP(b, netip.MustParseAddrPort(claimed+":5060"), netip.MustParseAddrPort(capFS+":5060"), time.Now(), []byte(payload))
		binary.BigEndian.PutUint32(b[len(b)-len(payload)-6-4:], id) // the capture_id chunk precedes the payload chunk
		return string(b)
	}
	for i := 0; i < 5; i++ {
		sendUDP(t, ans, stranger, hepTo, nil, withID(100, probe(i)))
		sendUDP(t, ans, agent, hepTo, nil, withID(7, probe(i)))
	}
	waitFor(t, 5*time.Second, "the refusals counted", func() bool {
		return p.metric("sipwarden_sip_hep_refused_total", "reason=sender") == 5 &&
			p.metric("sipwarden_sip_hep_refused_total", "reason=capture_id") == 5
	})
	if got := p.offenders(); len(got) != 0 {
		t.Fatalf("refused HEP was analysed: %v", got)
	}
	sendUDP(t, ans, agent, hepTo, nil, withID(100, probe(9)))
	waitFor(t, 5*time.Second, "the allowed agent's HEP read", func() bool {
		return p.offenders()[claimed]["scanner_user_agent"] == 1
	})
}

// fsDigest is a FreeSWITCH stand-in that answers a REGISTER for a user
// other than 100 with 404, challenges user 100 (401 with a fresh nonce),
// refuses every answer (403, all passwords are wrong) and answers OPTIONS
// 200, from capFS:5060 in ns. It records when
// each source's first request arrived, and how many it sent.
type firstSeen struct {
	mu    sync.Mutex
	first map[string]time.Time
	count map[string]int
}

func (f *firstSeen) get(ip string) (time.Time, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.first[ip], f.count[ip]
}

func fsDigest(t *testing.T, ns string) *firstSeen {
	t.Helper()
	seen := &firstSeen{first: map[string]time.Time{}, count: map[string]int{}}
	var conn *net.UDPConn
	if err := inNS(ns, func() (err error) {
		conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(capFS), Port: 5060})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { conn.Close(); wg.Wait() })
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for n := 0; ; n++ {
			k, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			req := string(buf[:k])
			seen.mu.Lock()
			if seen.count[from.Addr().String()]++; seen.count[from.Addr().String()] == 1 {
				seen.first[from.Addr().String()] = time.Now()
			}
			seen.mu.Unlock()
			status, extra := "", ""
			switch {
			case strings.HasPrefix(req, "OPTIONS "):
				status = "200 OK"
			case strings.HasPrefix(req, "REGISTER ") && !strings.Contains(req, "sip:100@"):
				status = "404 Not Found" // only user 100 exists
			case strings.HasPrefix(req, "REGISTER ") && !strings.Contains(req, "\nAuthorization:"):
				status = "401 Unauthorized"
				extra = fmt.Sprintf("WWW-Authenticate: Digest realm=\"%s\", nonce=\"fsn-%d-%d\", algorithm=MD5, qop=\"auth\"\r\n", capFS, time.Now().UnixNano(), n)
			case strings.HasPrefix(req, "REGISTER "):
				status = "403 Forbidden"
			default:
				continue
			}
			var b strings.Builder
			b.WriteString("SIP/2.0 " + status + "\r\n")
			for _, l := range strings.Split(req, "\r\n") {
				for _, h := range []string{"Via:", "From:", "Call-ID:", "CSeq:", "v:", "f:", "i:"} {
					if strings.HasPrefix(l, h) {
						b.WriteString(l + "\r\n")
					}
				}
				if strings.HasPrefix(l, "To:") || strings.HasPrefix(l, "t:") {
					if !strings.Contains(l, "tag=") {
						l += ";tag=fs1"
					}
					b.WriteString(l + "\r\n")
				}
			}
			b.WriteString(extra + "User-Agent: FreeSWITCH-mod_sofia/1.11.1-release\r\nContent-Length: 0\r\n\r\n")
			conn.WriteToUDPAddrPort([]byte(b.String()), from)
		}
	}()
	return seen
}

// TestSIPViciousBannedWithinASecond: real svwar and svcrack, each from its
// own address, against a digest-challenging FreeSWITCH stand-in, captured
// on a veth by the daemon with the shipped defaults: each is in the kernel
// set within a second of starting. svwar by its many scanner probes
// (unverified, 1 point each), svcrack by its digest answers to the nonces
// the server gave it (verified 403s).
func TestSIPViciousBannedWithinASecond(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"svwar", "svcrack"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s missing (apt-get install sipvicious)", tool)
		}
	}
	dns, ans := capLink(t, []string{"192.0.2.80"})
	seen := fsDigest(t, dns)
	p := startReady(t, procOpts{ns: dns, api: "127.0.0.1:9091", config: `
esl:
  disabled: true
sip:
  capture_interface: ` + capIface + `
api:
  listen: 127.0.0.1:9091
`})
	for _, tc := range []struct {
		src  string
		args []string
	}{
		{"192.0.2.80", []string{"svwar", "-m", "REGISTER", "-e", "100-160", "-t", "0.05", "--maximumtime", "3", "--force", capFS}},
		{"192.0.2.81", []string{"svcrack", "-u", "100", "-r", "1-40", "-t", "0.2", "--maximumtime", "3", capFS}},
	} {
		// Each tool sends from the attacker side's only address.
		run(t, "ip", "-n", ans, "addr", "flush", "dev", "vcap1")
		run(t, "ip", "-n", ans, "addr", "add", tc.src+"/24", "dev", "vcap1")
		cmd := exec.Command("ip", append([]string{"netns", "exec", ans}, tc.args...)...)
		cmd.Dir = t.TempDir()
		cmd.Env = append(os.Environ(), "HOME="+cmd.Dir)
		began := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Timed from the tool's first request reaching the server (the
		// interpreter's start-up is not the daemon's business).
		banned := time.Duration(-1)
		for time.Since(began) < 8*time.Second {
			if inSet(dns, "sipwarden4", tc.src) {
				if first, _ := seen.get(tc.src); !first.IsZero() {
					banned = time.Since(first)
				}
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
		_, sent := seen.get(tc.src)
		t.Logf("%s from %s: %d requests; in the kernel set %v after the first; offenses %v", tc.args[0], tc.src, sent, banned.Round(time.Millisecond), p.offenders()[tc.src])
		if banned < 0 || banned > time.Second {
			t.Errorf("%s from %s: banned after %v, want within 1s", tc.args[0], tc.src, banned)
		}
	}
	if got := p.offenders()["192.0.2.81"]["auth_failure"]; got == 0 {
		t.Error("svcrack's digest failures not seen")
	}
}
