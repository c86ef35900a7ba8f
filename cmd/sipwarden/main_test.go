package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/sipwarden/sipwarden/internal/testenv"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sipwarden-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "sipwarden")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// newNS creates a network namespace with loopback up and removes it at the end.
func newNS(t *testing.T) string {
	t.Helper()
	testenv.Root(t)
	testenv.Tool(t, "ip", "iproute2")
	name := fmt.Sprintf("swtest-cmd-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	return name
}

// getInNS performs one HTTP GET from inside the namespace.
func getInNS(t *testing.T, ns, url string) (int, string, error) {
	t.Helper()
	type result struct {
		code int
		body string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // the thread is left in ns and discarded: never unlocked
		h, err := netns.GetFromName(ns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			ch <- result{err: err}
			return
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		conn, err := net.DialTimeout("tcp", req.URL.Host, time.Second)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		req.Close = true
		if err := req.Write(conn); err != nil {
			ch <- result{err: err}
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			ch <- result{err: err}
			return
		}
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		ch <- result{code: resp.StatusCode, body: b.String()}
	}()
	r := <-ch
	return r.code, r.body, r.err
}

// startInNS starts `sipwarden run` inside ns with only PATH and env set; it
// is killed at the end of the test if still running.
func startInNS(t *testing.T, ns string, env ...string) (*exec.Cmd, *syncBuf, chan error) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, binary, "run")
	// SIPWARDEN_CONFIG empty: the built-in defaults, whatever this host has
	// in /etc/sipwarden (env may name a file instead).
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "SIPWARDEN_CONFIG="}, env...)
	stderr := &syncBuf{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})
	return cmd, stderr, exited
}

// TestRunWithDefaults: `sipwarden run` with no config starts with the ipset
// backend (in a fresh namespace, so the host's sets are untouched), serves
// /healthz 200 and /readyz 503 (no FreeSWITCH), and stops cleanly on SIGTERM.
func TestRunWithDefaults(t *testing.T) {
	ns := newNS(t)
	cmd, stderr, exited := startInNS(t, ns)

	deadline := time.Now().Add(10 * time.Second)
	var code int
	var err error
	for time.Now().Before(deadline) {
		if code, _, err = getInNS(t, ns, "http://127.0.0.1:9091/healthz"); err == nil {
			break
		}
		select {
		case e := <-exited:
			t.Fatalf("daemon exited early: %v\n%s", e, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err != nil || code != http.StatusOK {
		t.Fatalf("/healthz = %d, %v\n%s", code, err, stderr.String())
	}
	code, body, err := getInNS(t, ns, "http://127.0.0.1:9091/readyz")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "esl") {
		t.Fatalf("/readyz = %d %q, %v", code, body, err)
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "ipset", "list", "-n").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "sipwarden4") || !strings.Contains(string(out), "sipwarden6") {
		t.Errorf("kernel sets in the namespace: %q, %v", out, err)
	}
	code, body, err = getInNS(t, ns, "http://127.0.0.1:9091/metrics")
	if err != nil || code != 200 || !strings.Contains(body, "sipwarden_esl_connected") {
		t.Errorf("/metrics = %d, %v (esl_connected present: %v)", code, err, strings.Contains(body, "sipwarden_esl_connected"))
	}
	for _, want := range []string{`sipwarden_ban_set_maxelem{set="sipwarden4"} 65536`, `sipwarden_ban_set_entries{set="sipwarden6"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no exit within 5 s of SIGTERM\n%s", stderr.String())
	}
	t.Logf("stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}

func TestBadConfigStartsNothing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(p, []byte("jail:\n  maxretry: -1\n  findtime: 0s\nban:\n  backend: nope\napi:\n  listen: 127.0.0.1:1\n"), 0o600)
	out, err := exec.Command(binary, "run", "-config", p).CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() == 0 {
		t.Fatalf("bad config: err = %v, output %s", err, out)
	}
	for _, key := range []string{"jail.maxretry", "jail.findtime", "ban.backend"} {
		if !bytes.Contains(out, []byte(key)) {
			t.Errorf("output does not name %s:\n%s", key, out)
		}
	}
	if bytes.Contains(out, []byte("sipwarden running")) {
		t.Errorf("daemon started on a bad config:\n%s", out)
	}
}

func TestEveryCommandAnswersHelp(t *testing.T) {
	for _, args := range [][]string{
		{"run", "-h"}, {"replay", "-h"}, {"check", "-h"}, {"bans", "-h"},
		{"bans", "list", "-h"}, {"bans", "add", "-h"}, {"bans", "del", "-h"}, {"-h"},
	} {
		out, err := exec.Command(binary, args...).CombinedOutput()
		if err != nil {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
		if !bytes.Contains(bytes.ToLower(out), []byte("usage")) {
			t.Errorf("%v: no usage text:\n%s", args, out)
		}
	}
	out, err := exec.Command(binary, "version").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("sipwarden")) || !bytes.Contains(out, []byte("go1.")) {
		t.Errorf("version: %v %s", err, out)
	}
}

func TestCheckErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"no ip", []string{"check"}, 2},
		{"bad ip", []string{"check", "-api", "http://127.0.0.1:1", "not-an-ip"}, 2},
		{"daemon down", []string{"check", "-api", "http://127.0.0.1:1", "192.0.2.1"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := exec.Command(binary, tc.args...).Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != tc.want {
				t.Errorf("exit %d, want %d", code, tc.want)
			}
		})
	}
}

// TestInstallRule: with ban.install_rule the daemon inserts the DROP rules
// that use its sets at start and removes them at stop (in a fresh
// namespace, so the host's firewall is untouched).
func TestInstallRule(t *testing.T) {
	ns := newNS(t)
	cmd, stderr, exited := startInNS(t, ns, "SIPWARDEN_BAN_INSTALL_RULE=true", "SIPWARDEN_ESL_DISABLED=true",
		"SIPWARDEN_BAN_RULE_PORTS=5060,5062")
	rules := func(tool string) string {
		out, _ := exec.Command("ip", "netns", "exec", ns, tool, "-S", "INPUT").CombinedOutput()
		return string(out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && strings.Count(rules("ip6tables"), "sipwarden6") < 2 {
		select {
		case e := <-exited:
			t.Fatalf("daemon exited early: %v\n%s", e, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	v4, v6 := rules("iptables"), rules("ip6tables")
	for _, want := range []string{"-p udp", "-p tcp"} {
		for fam, got := range map[string]string{"sipwarden4": v4, "sipwarden6": v6} {
			if !strings.Contains(got, want+" -m multiport --dports 5060,5062 -m set --match-set "+fam+" src") {
				t.Errorf("%s rule for %s missing:\n%s", want, fam, got)
			}
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no exit within 5 s of SIGTERM")
	}
	if got := rules("iptables") + rules("ip6tables"); strings.Contains(got, "match-set") {
		t.Errorf("rules left after stop:\n%s", got)
	}
}

// TestBansAgainstKernel: `sipwarden bans add/list/del` through a daemon
// with the ipset backend change the kernel set; refusals exit 1. The
// daemon generates its API token next to the state file, as the shipped
// configuration does, and the commands find it through the same config.
func TestBansAgainstKernel(t *testing.T) {
	ns := newNS(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sipwarden.yaml")
	os.WriteFile(cfg, []byte("jail:\n  state_file: "+dir+"/state.json\n"), 0o600)
	_, stderr, exited := startInNS(t, ns, "SIPWARDEN_CONFIG="+cfg, "SIPWARDEN_ESL_DISABLED=true", "SIPWARDEN_SIP_HEP_LISTEN=")
	cli := func(args ...string) (int, string) {
		c := exec.Command("ip", append([]string{"netns", "exec", ns, binary}, args...)...)
		c.Env = []string{"PATH=" + os.Getenv("PATH"), "SIPWARDEN_CONFIG=" + cfg}
		out, err := c.CombinedOutput()
		return exitCode(err), string(out)
	}
	inSet := func(set, ip string) bool {
		out, _ := exec.Command("ip", "netns", "exec", ns, "ipset", "test", set, ip).CombinedOutput()
		return !strings.Contains(string(out), "NOT")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _ := cli("bans", "list"); code == 0 {
			break
		}
		select {
		case e := <-exited:
			t.Fatalf("daemon exited: %v\n%s", e, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not answering\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, out := cli("bans", "add", "198.51.100.7", "-for", "10m", "-reason", "test"); code != 0 || !strings.Contains(out, "banned 198.51.100.7 until") {
		t.Fatalf("bans add: %d %s", code, out)
	}
	// ban.v6_prefix 64 (the default): the address's /64 is banned
	if code, out := cli("bans", "add", "2001:db8::7"); code != 0 {
		t.Fatalf("bans add v6: %d %s", code, out)
	}
	if !inSet("sipwarden4", "198.51.100.7") || !inSet("sipwarden6", "2001:db8::7") {
		out, _ := exec.Command("ip", "netns", "exec", ns, "ipset", "list").CombinedOutput()
		t.Fatalf("bans not in the kernel sets:\n%s", out)
	}
	out, _ := exec.Command("ip", "netns", "exec", ns, "ipset", "list", "sipwarden4").CombinedOutput()
	if !strings.Contains(string(out), "198.51.100.7 timeout ") {
		t.Errorf("no kernel timeout on the entry:\n%s", out)
	}
	code, list := cli("bans", "list")
	if code != 0 || !strings.Contains(list, "198.51.100.7") || !strings.Contains(list, "2001:db8::/64") || !strings.Contains(list, "test") {
		t.Errorf("bans list: %d\n%s", code, list)
	}
	if code, out := cli("bans", "add", "127.0.0.1"); code != 1 {
		t.Errorf("bans add loopback: exit %d, want 1 (refused): %s", code, out)
	}
	if code, out := cli("bans", "del", "198.51.100.7"); code != 0 {
		t.Fatalf("bans del: %d %s", code, out)
	}
	if inSet("sipwarden4", "198.51.100.7") {
		t.Error("still in the kernel set after bans del")
	}
	if code, _ := cli("bans", "del", "198.51.100.7"); code != 1 {
		t.Errorf("bans del of an address not banned: exit %d, want 1", code)
	}
	if code, _ := cli("bans", "add", "not-an-ip"); code != 2 {
		t.Errorf("bans add bad address: exit %d, want 2", code)
	}
}
