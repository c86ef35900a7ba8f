package jail

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipwarden/sipwarden/internal/decision"
	"github.com/sipwarden/sipwarden/internal/eslwatch"
	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
	"github.com/sipwarden/sipwarden/internal/ipset"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/whitelist"

	"github.com/sipwarden/sipwarden/internal/testenv"
)

// liveRegistrations is the whitelist seen through the jail's optional
// registrationCounter.
type liveRegistrations struct{ *whitelist.Whitelist }

func (l liveRegistrations) Registrations(ip netip.Addr) int {
	e, ok := l.Lookup(ip)
	if !ok {
		return 0
	}
	return len(e.Registrations)
}

// sipResponder is a tiny UDP SIP registrar with a built-in detector: it
// challenges REGISTERs without credentials (401), refuses every credential
// (403 -> auth_failure), flags scanner user agents, and counts packets per
// source so the test sees what the kernel let through.
type sipResponder struct {
	conn *net.UDPConn
	sink offense.Sink
	mu   sync.Mutex
	n    map[netip.Addr]int
}

var scannerUA = regexp.MustCompile(`(?i)friendly-scanner|sipvicious|sipcli|sip-scan`)

func (r *sipResponder) count(ip string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[netip.MustParseAddr(ip)]
}

func header(msg, name string) string {
	for _, l := range strings.Split(msg, "\r\n")[1:] {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

var userRE = regexp.MustCompile(`(?:sip:|username=")([^@";>]+)`)

func (r *sipResponder) serve() {
	buf := make([]byte, 65535)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		now := time.Now()
		src := from.Addr().Unmap()
		r.mu.Lock()
		r.n[src]++
		r.mu.Unlock()
		msg := string(buf[:n])
		line, _, _ := strings.Cut(msg, "\r\n")
		method, _, _ := strings.Cut(line, " ")
		if strings.HasPrefix(line, "SIP/2.0") || method == "" || method == "ACK" {
			continue
		}
		ua := header(msg, "User-Agent")
		auth := header(msg, "Authorization")
		user := ""
		if m := userRE.FindStringSubmatch(auth); m != nil {
			user = m[1]
		} else if m := userRE.FindStringSubmatch(header(msg, "To")); m != nil {
			user = m[1]
		}
		if scannerUA.MatchString(ua) {
			r.sink.Offend(offense.Offense{IP: src, Rule: offense.ScannerUserAgent, Source: offense.SourceCapture, Time: now, User: user, Method: method, Detail: ua})
		}
		status := "404 Not Found"
		extra := ""
		switch {
		case method == "REGISTER" && auth == "":
			status = "401 Unauthorized"
			extra = fmt.Sprintf("WWW-Authenticate: Digest realm=\"sipwarden.test\", nonce=\"%x\", algorithm=MD5\r\n", now.UnixNano())
		case method == "REGISTER":
			status = "403 Forbidden"
			r.sink.Offend(offense.Offense{IP: src, Rule: offense.AuthFailure, Source: offense.SourceCapture, Time: now, User: user, Method: method, Detail: ua, Verified: true})
		case method == "OPTIONS":
			status = "200 OK"
		}
		to := header(msg, "To")
		if !strings.Contains(to, "tag=") {
			to += ";tag=sw1"
		}
		resp := fmt.Sprintf("SIP/2.0 %s\r\nVia: %s\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\n%sContent-Length: 0\r\n\r\n",
			status, header(msg, "Via"), header(msg, "From"), to, header(msg, "Call-ID"), header(msg, "CSeq"), extra)
		r.conn.WriteToUDPAddrPort([]byte(resp), from)
	}
}

// recordingFW notes when each prefix reached the kernel.
type recordingFW struct {
	*ipset.Set
	mu    sync.Mutex
	added map[netip.Prefix]time.Time
	ch    chan netip.Prefix
}

func (f *recordingFW) Add(ctx context.Context, p netip.Prefix, d time.Duration) error {
	err := f.Set.Add(ctx, p, d)
	if err == nil {
		f.mu.Lock()
		if _, ok := f.added[p]; !ok {
			f.added[p] = time.Now()
			select {
			case f.ch <- p:
			default:
			}
		}
		f.mu.Unlock()
	}
	return err
}

func veth(t *testing.T, a, b *testenv.NS, aName, bName, aAddr, bAddr string) {
	testenv.Sh(t, "ip", "-n", a.Name, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	testenv.Sh(t, "ip", "-n", a.Name, "addr", "add", aAddr, "dev", aName)
	testenv.Sh(t, "ip", "-n", b.Name, "addr", "add", bAddr, "dev", bName)
	testenv.Sh(t, "ip", "-n", a.Name, "link", "set", aName, "up")
	testenv.Sh(t, "ip", "-n", b.Name, "link", "set", bName, "up")
}

func dropCounter(t *testing.T, ns *testenv.NS) int {
	out := ns.Exec(t, "iptables", "-L", "INPUT", "-v", "-x", "-n")
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "DROP") && strings.Contains(l, "match-set") {
			n, _ := strconv.Atoi(strings.Fields(l)[0])
			return n
		}
	}
	t.Fatalf("no DROP rule:\n%s", out)
	return 0
}

// TestEndToEnd: a SIPVicious attacker is cut off in the kernel within a
// bounded time after the threshold, while a registered office that keeps
// failing its REGISTERs keeps getting through.
func TestEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights map[offense.Rule]float64
		tool    []string
	}{
		{"svcrack auth failures", map[offense.Rule]float64{offense.ScannerUserAgent: 0}, []string{"svcrack", "-u", "1003", "-r", "1-999999", "-p", "5060", "10.213.2.1"}},
		{"svwar scanner user agent", nil, []string{"svwar", "--force", "-e", "100-99999", "-m", "REGISTER", "-p", "5060", "10.213.2.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) { endToEnd(t, tc.weights, tc.tool) })
	}
}

func endToEnd(t *testing.T, weights map[offense.Rule]float64, tool []string) {
	const (
		officeIP   = "10.213.1.2"
		attackerIP = "10.213.2.2"
	)
	d := testenv.NewNS(t, "d")
	o := testenv.NewNS(t, "o")
	a := testenv.NewNS(t, "a")
	veth(t, d, o, "vo", "vd", "10.213.1.1/24", officeIP+"/24")
	veth(t, d, a, "va", "vd", "10.213.2.1/24", attackerIP+"/24")

	ips := newTestIPSet(t, d, ipset.Options{SetV4: "sw4", SetV6: "sw6"})
	d.Exec(t, "iptables", "-I", "INPUT", "-p", "udp", "--dport", "5060", "-m", "set", "--match-set", "sw4", "src", "-j", "DROP")
	fw := &recordingFW{Set: ips, added: map[netip.Prefix]time.Time{}, ch: make(chan netip.Prefix, 4)}

	// the office's registration, learnt from an Event Socket server (in-test FreeSWITCH stand-in)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wl := whitelist.New(whitelist.Options{})
	srv := esltest.NewServer(t, "ClueCon")
	srv.SetRegistrations(fmt.Sprintf(`{"row_count":1,"rows":[{"reg_user":"1003","realm":"10.213.1.1","token":"1-office@10.213.1.2",`+
		`"url":"sofia/internal/sip:1003@10.213.1.2:5060;transport=UDP","expires":"%d","network_ip":"10.213.1.2","network_port":"5060",`+
		`"network_proto":"udp","hostname":"d","metadata":""}]}`, time.Now().Add(time.Hour).Unix()))
	esl, err := eslwatch.New(eslwatch.Options{Addresses: []string{srv.Addr}, Password: "ClueCon", Whitelist: wl})
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); esl.Run(ctx) }()
	waitFor(t, 10*time.Second, func() bool { _, ok := wl.Allowed(netip.MustParseAddr(officeIP)); return ok })

	e := newEnv(t, Options{Firewall: fw, Allowlist: liveRegistrations{wl}, Now: time.Now, Weights: weights, Findtime: time.Minute})
	wg.Add(1)
	go func() { defer wg.Done(); e.j.Run(ctx) }()

	// the SIP responder in the daemon's namespace
	var conn *net.UDPConn
	if err := testenv.InNS(d.H, func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 5060})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	resp := &sipResponder{conn: conn, sink: e.j, n: map[netip.Addr]int{}}
	wg.Add(1)
	go func() { defer wg.Done(); resp.serve() }()
	t.Cleanup(func() { conn.Close() })

	// the office: a phone with a stale password, failing every 20ms
	var oc *net.UDPConn
	if err := testenv.InNS(o.H, func() (err error) {
		oc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(officeIP)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { oc.Close() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		dst := &net.UDPAddr{IP: net.ParseIP("10.213.1.1"), Port: 5060}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			msg := fmt.Sprintf("REGISTER sip:10.213.1.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bK%d\r\nFrom: <sip:1003@10.213.1.1>;tag=o%d\r\nTo: <sip:1003@10.213.1.1>\r\nCall-ID: office-%d\r\nCSeq: %d REGISTER\r\nUser-Agent: Yealink SIP-T46S\r\nAuthorization: Digest username=\"1003\", realm=\"sipwarden.test\", nonce=\"1\", uri=\"sip:10.213.1.1\", response=\"00\"\r\nContent-Length: 0\r\n\r\n",
				officeIP, oc.LocalAddr().(*net.UDPAddr).Port, i, i, i, i+1)
			oc.WriteToUDP([]byte(msg), dst)
		}
	}()
	waitFor(t, 5*time.Second, func() bool { return resp.count(officeIP) >= 10 })

	// the attacker
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", a.Name}, tool...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); cmd.Wait() }()

	var banAt time.Time
	select {
	case p := <-fw.ch:
		if p != netip.MustParsePrefix(attackerIP+"/32") {
			t.Fatalf("banned %s", p)
		}
		fw.mu.Lock()
		banAt = fw.added[p]
		fw.mu.Unlock()
	case <-time.After(30 * time.Second):
		t.Fatalf("attacker not banned; tool output:\n%s\noffenders %+v", out.String(), e.j.AllOffenders())
	}
	bans := e.j.Bans()
	if len(bans) != 1 || bans[0].IP.String() != attackerIP {
		t.Fatalf("bans %+v", bans)
	}
	// threshold (the offense that crossed it, stamped when the packet was read) -> kernel entry
	lat := banAt.Sub(bans[0].CreatedAt)
	t.Logf("ban %s rule %s: threshold -> kernel %s; attacker packets before the ban %d", bans[0].IP, bans[0].Rule, lat, resp.count(attackerIP))
	if lat > 250*time.Millisecond {
		t.Fatalf("threshold -> kernel took %s", lat)
	}
	time.Sleep(200 * time.Millisecond) // packets already queued in the socket buffer are read
	atk, off, drops := resp.count(attackerIP), resp.count(officeIP), dropCounter(t, d)
	time.Sleep(1500 * time.Millisecond) // the attacker keeps sending meanwhile
	atk2, off2, drops2 := resp.count(attackerIP), resp.count(officeIP), dropCounter(t, d)
	t.Logf("after the ban: attacker %d -> %d packets at the responder, %d -> %d dropped by the kernel; office %d -> %d", atk, atk2, drops, drops2, off, off2)
	if atk2 != atk {
		t.Fatalf("attacker still gets through: %d -> %d", atk, atk2)
	}
	if drops2 <= drops {
		t.Fatalf("attacker stopped sending? drops %d -> %d; tool output:\n%s", drops, drops2, out.String())
	}
	if off2 < off+30 {
		t.Fatalf("office cut off: %d -> %d", off, off2)
	}
	// the office is not in the kernel and says why
	if _, err := exec.Command("ip", "netns", "exec", d.Name, "ipset", "test", "sw4", officeIP).CombinedOutput(); err == nil {
		t.Fatal("office in the set")
	}
	if st := e.state(officeIP); st.State != StateProtected || st.Why != "registered" {
		t.Fatalf("office state %+v", st)
	}
	if got := testutil.ToFloat64(e.j.m.skipped.WithLabelValues(decision.Registered.String())); got != 1 {
		t.Fatalf("ban_skipped_total{reason=registered} = %v", got)
	}
	if !strings.Contains(e.log.String(), "office 10.213.1.2 protected: ") || !strings.Contains(e.log.String(), "auth_failure for 1003 while 1 registration live") {
		t.Fatalf("no protected line in the log:\n%s", e.log)
	}
	if n := strings.Count(mustList(t, ips), attackerIP); n != 1 {
		t.Fatal("attacker not read back from the kernel")
	}
}

func mustList(t *testing.T, s *ipset.Set) string {
	l, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(l)
}

// waitFor polls cond (the condition has no channel to wait on).
func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
