//go:build linux

package sip

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"

	"github.com/sipwarden/sipwarden/internal/testenv"
)

// responder is a tiny UDP SIP server: 200 to OPTIONS and to REGISTER of
// user 2000; for user 100 a digest challenge, then 403 to every answer; 404
// to everything else; nothing to ACK.
func responder(t *testing.T, ctx context.Context, conn *net.UDPConn, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			req := string(buf[:n])
			if !strings.Contains(req, " SIP/2.0\r\n") || strings.HasPrefix(req, "SIP/2.0") || strings.HasPrefix(req, "ACK ") {
				continue
			}
			method := req[:strings.IndexByte(req, ' ')]
			hdr := func(names ...string) []string {
				var out []string
				for _, l := range strings.Split(req, "\r\n") {
					for _, nm := range names {
						if len(l) > len(nm) && strings.EqualFold(l[:len(nm)+1], nm+":") {
							out = append(out, l)
						}
					}
				}
				return out
			}
			status := "404 Not Found"
			to := strings.Join(hdr("To", "t"), "")
			auth := len(hdr("Authorization")) > 0
			extra := ""
			switch {
			case method == "OPTIONS":
				status = "200 OK"
			case method == "REGISTER" && strings.Contains(to, "sip:2000@"):
				status = "200 OK"
			case method == "REGISTER" && strings.Contains(to, "sip:100@") && !auth:
				status = "401 Unauthorized"
				extra = "WWW-Authenticate: Digest realm=\"swtest\", nonce=\"" + fmt.Sprint(time.Now().UnixNano()) + "\", algorithm=MD5\r\n"
			case method == "REGISTER" && strings.Contains(to, "sip:100@"):
				status = "403 Forbidden" // every password is wrong
			}
			var b strings.Builder
			b.WriteString("SIP/2.0 " + status + "\r\n")
			for _, v := range hdr("Via", "v") {
				b.WriteString(v + "\r\n")
			}
			for _, v := range hdr("From", "f") {
				b.WriteString(v + "\r\n")
			}
			if to != "" && !strings.Contains(to, "tag=") {
				to += ";tag=resp1"
			}
			b.WriteString(to + "\r\n")
			for _, v := range hdr("Call-ID", "i", "CSeq") {
				b.WriteString(v + "\r\n")
			}
			if status == "200 OK" && method == "REGISTER" {
				b.WriteString(fmt.Sprintf("Contact: <sip:2000@%s>;expires=3600\r\n", from))
			}
			b.WriteString(extra)
			b.WriteString("User-Agent: swtest-responder\r\nContent-Length: 0\r\n\r\n")
			conn.WriteToUDPAddrPort([]byte(b.String()), from)
			if ctx.Err() != nil {
				return
			}
		}
	}()
}

const sippRegister = `<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="legit register">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:2000@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:2000@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:2000@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 3600
      User-Agent: Yealink SIP-T46S 66.86.0.15
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <send retrans="500">
    <![CDATA[
      OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:2000@[remote_ip]>;tag=[pid]SIPpTag01[call_number]
      To: <sip:[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 OPTIONS
      Max-Forwards: 70
      User-Agent: Yealink SIP-T46S 66.86.0.15
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
`

// TestRealTools runs SIPVicious svmap, svwar and svcrack, a sipp INVITE
// flood and a legitimate sipp REGISTER from different 127.0.0.x sources against a responder on
// 127.0.0.1, captured live on "lo" by the AF_PACKET source. It needs root
// (CAP_NET_RAW) and the sipvicious and sip-tester packages: CI has both.
func TestRealTools(t *testing.T) {
	testenv.Root(t)
	for _, bin := range []string{"svmap", "svwar", "svcrack"} {
		testenv.Tool(t, bin, "sipvicious")
	}
	testenv.Tool(t, "sipp", "sip-tester")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	// svwar 0.3.3 ignores -b (TakeASip is built without bindingip), so it
	// always sends from 127.0.0.1: the responder lives on 127.0.0.5 and the
	// other tools use their own 127.0.0.x sources.
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.5:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	port := conn.LocalAddr().(*net.UDPAddr).Port

	c := &collector{}
	a := newTestAnalyzer(t, c, nil)
	capt, err := NewCapture("lo", []int{port}, a, nil, nil)
	if err != nil {
		t.Fatalf("live capture: %v", err)
	}
	var wg sync.WaitGroup
	cctx, ccancel := context.WithCancel(ctx)
	capErr := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); capErr <- capt.Run(cctx) }()
	responder(t, cctx, conn, &wg)
	defer func() {
		ccancel()
		conn.Close()
		wg.Wait()
		if err := <-capErr; err != nil {
			t.Errorf("capture Run: %v", err)
		}
	}()

	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = t.TempDir()
		cmd.Env = append(os.Environ(), "HOME="+cmd.Dir)
		cmd.WaitDelay = 2 * time.Second
		start := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("%s %s (%s):\n%s", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond), bytes.TrimSpace(out))
		if err != nil && ctx.Err() != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	p := fmt.Sprint(port)
	scenario := filepath.Join(t.TempDir(), "reg.xml")
	if err := os.WriteFile(scenario, []byte(sippRegister), 0o644); err != nil {
		t.Fatal(err)
	}

	// A legitimate phone first, from 127.0.0.4.
	run("sipp", "-sf", scenario, "-i", "127.0.0.4", "-p", "25060", "-m", "1", "-timeout", "10s", "-timeout_error",
		"-nostdin", "127.0.0.5:"+p)
	// Then the attackers, in parallel to keep the test short.
	attacks := [][]string{
		{"svmap", "-b", "127.0.0.2", "-p", p, "-t", "0.2", "127.0.0.5"},
		{"svwar", "-p", p, "-m", "REGISTER", "-e", "100-140", "-t", "0.2", "--maximumtime", "2", "--force", "127.0.0.5"},
		{"svcrack", "-p", p, "-u", "100", "-r", "1-12", "-t", "0.2", "--maximumtime", "2", "127.0.0.5"},
		// An INVITE flood to an international number from 127.0.0.6.
		{"sipp", "-sn", "uac", "-s", "00972599123456", "-i", "127.0.0.6", "-p", "25066", "-r", "400", "-m", "120",
			"-timeout", "5s", "-nostdin", "-trace_err", "-error_file", filepath.Join(t.TempDir(), "err.log"), "127.0.0.5:" + p},
	}
	var twg sync.WaitGroup
	for _, cmd := range attacks {
		twg.Add(1)
		go func() { defer twg.Done(); run(cmd[0], cmd[1:]...) }()
	}
	twg.Wait()

	want := []string{
		"127.0.0.2 scanner_user_agent", // svmap
		"127.0.0.1 scanner_user_agent", // svwar, svcrack
		"127.0.0.1 extension_scan",     // svwar
		"127.0.0.1 auth_failure",       // svcrack's wrong passwords, seen in the 403s
		"127.0.0.6 flood",              // sipp -r 400
		"127.0.0.6 toll_fraud_invite",  // sipp -s 00972...
	}
	waitFor(t, 10*time.Second, func() bool {
		got := c.count()
		for _, k := range want {
			if got[k] == 0 {
				return false
			}
		}
		return true
	})
	got := c.count()
	t.Logf("offenses: %v", got)
	for _, k := range want {
		if got[k] == 0 {
			t.Errorf("missing %s", k)
		}
	}
	for k := range got {
		if strings.HasPrefix(k, "127.0.0.4 ") || strings.HasPrefix(k, "127.0.0.5 ") {
			t.Errorf("legitimate source flagged: %s", k)
		}
	}
	c.mu.Lock()
	for _, o := range c.offs {
		if o.Source != offense.SourceCapture {
			t.Errorf("source %q", o.Source)
		}
	}
	var learned bool
	for _, r := range c.regs {
		if r.User == "2000" && r.IP == netip.MustParseAddr("127.0.0.4") {
			learned = true
		}
	}
	c.mu.Unlock()
	if !learned {
		t.Errorf("sipp's registration not learned: %+v", c.regs)
	}
}

// TestLiveCaptureTCPAndIPv6 sends SIP over TCP (IPv4) and over UDP on ::1
// through "lo" and checks the live capture reads both: TCP offenses are
// Verified (a handshake happened), IPv6 sources are reported as such. Needs
// root (CAP_NET_RAW), as CI has.
func TestLiveCaptureTCPAndIPv6(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.5:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	u6, err := net.ListenPacket("udp6", fmt.Sprintf("[::1]:%d", port))
	if err != nil {
		t.Fatalf("udp6 on ::1: %v", err)
	}
	defer u6.Close()

	c := &collector{}
	a := newTestAnalyzer(t, c, nil)
	capt, err := NewCapture("lo", []int{port}, a, nil, nil)
	if err != nil {
		t.Fatalf("live capture: %v", err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	capErr := make(chan error, 1)
	go func() { capErr <- capt.Run(cctx) }()
	defer func() {
		ccancel()
		if err := <-capErr; err != nil {
			t.Errorf("capture Run: %v", err)
		}
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a TCP peer that reads and discards
		defer wg.Done()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				return
			}
		}
	}()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.7")}}
	conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(req("OPTIONS", "sip:100@127.0.0.5", "User-Agent: sipcli/v1.8")); err != nil {
		t.Fatal(err)
	}
	c6, err := net.Dial("udp6", fmt.Sprintf("[::1]:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c6.Close()
	if _, err := c6.Write(req("INVITE", "sip:+37256001234@[::1]")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		got := c.count()
		return got["127.0.0.7 scanner_user_agent"] > 0 && got["::1 toll_fraud_invite"] > 0
	})
	conn.Close()
	wg.Wait()
	got := c.count()
	if got["127.0.0.7 scanner_user_agent"] != 1 || got["::1 toll_fraud_invite"] != 1 {
		t.Errorf("got %v (each message must be seen exactly once)", got)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.offs {
		if o.Rule == offense.ScannerUserAgent && !o.Verified {
			t.Errorf("TCP offense not verified: %+v", o)
		}
	}
}
