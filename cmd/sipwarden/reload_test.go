package main

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestReloadOnSIGHUP: a bad new config is rejected with its messages and the
// daemon keeps running on the old one; a good one is applied.
func TestReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sipwarden.yaml")
	addr := freePort(t)
	good := fmt.Sprintf("esl:\n  disabled: true\nsip:\n  hep_listen: \"\"\nban:\n  backend: dry-run\napi:\n  listen: %s\njail:\n  maxretry: 5\n", addr)
	os.WriteFile(cfgPath, []byte(good), 0o600)
	cmd := exec.Command(binary, "run", "-config", cfgPath)
	var logs syncBuf
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("exit: %v\n%s", err, logs.String())
			}
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			t.Errorf("no clean exit\n%s", logs.String())
		}
	}()
	healthy := func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	waitFor(t, healthy, "daemon ready")

	os.WriteFile(cfgPath, []byte(good+"bogus_key: 1\nlog:\n  level: shout\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return strings.Contains(logs.String(), "reload rejected") }, "reload rejected")
	out := logs.String()
	if !strings.Contains(out, "bogus_key") {
		t.Errorf("rejection does not name the bad key:\n%s", out)
	}
	if !healthy() {
		t.Fatal("daemon not serving after a rejected reload")
	}

	os.WriteFile(cfgPath, []byte(strings.Replace(good, "maxretry: 5", "maxretry: 3", 1)), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return strings.Contains(logs.String(), "configuration reloaded") }, "reload applied")
	if !healthy() {
		t.Fatal("daemon not serving after a reload")
	}
}

// TestReloadAppliesLiveKeys: started with maxretry 5 and auth_failure
// disabled, the daemon bans nobody for failures; a SIGHUP with maxretry 3
// and the rule enabled makes the 3rd failure ban. The reload log line names
// what it applied and, key by key, every changed key it did not apply.
func TestReloadAppliesLiveKeys(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sipwarden.yaml")
	logPath := filepath.Join(dir, "freeswitch.log")
	if err := os.WriteFile(logPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	hepConn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hep := hepConn.LocalAddr().String()
	hepConn.Close()
	base := fmt.Sprintf(`esl:
  disabled: true
logs:
  files: [%q]
  from_start: true
  timezone: UTC
sip:
  hep_listen: %s
ban:
  backend: dry-run
api:
  listen: %s
`, logPath, hep, addr)
	start := base + `jail:
  maxretry: 5
rules:
  auth_failure:
    enabled: false
`
	if err := os.WriteFile(cfgPath, []byte(start), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "run", "-config", cfgPath)
	var logs syncBuf
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			t.Errorf("no clean exit\n%s", logs.String())
		}
	}()
	get := func(path string) string {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), "sipwarden running") }, "daemon running")
	failures := func(ip string, n int) {
		t.Helper()
		f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for i := range n {
			ts := time.Now().UTC().Format("2006-01-02 15:04:05.000000")
			fmt.Fprintf(f, "%s 97.00%% [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [10%02d@pbx.example.com] from ip %s\n", ts, i, ip)
		}
	}
	seen := 0.0
	counted := func(want float64) {
		t.Helper()
		waitFor(t, func() bool {
			return metricSum(get("/metrics"), "sipwarden_log_lines_total") >= want
		}, fmt.Sprintf("%v log lines read", want))
	}
	banned := func(ip string) bool { return strings.Contains(get("/v1/bans"), `"`+ip+`"`) }

	// The disabled rule scores nothing: 6 failures > maxretry 5, no ban.
	failures("198.51.100.5", 6)
	seen += 6
	counted(seen)
	if banned("198.51.100.5") {
		t.Fatalf("a disabled rule banned:\n%s", get("/v1/bans"))
	}

	// A bad HEP datagram logs at debug: nothing at info.
	badHEP := func() {
		t.Helper()
		c, err := net.Dial("udp", hep)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("HEP3\x00\x01junk"))
	}
	badHEP()
	waitFor(t, func() bool {
		return metricSum(get("/metrics"), `sipwarden_parse_errors_total{source="hep"}`) >= 1
	}, "the bad HEP datagram counted")
	if strings.Contains(logs.String(), "bad HEP datagram") {
		t.Fatalf("a debug line at log.level info:\n%s", logs.String())
	}

	// Reload: maxretry 3, the rule enabled, the log level lowered, and keys
	// that only a restart applies changed besides.
	next := strings.Replace(base, "  backend: dry-run\n", "  backend: dry-run\n  set_v4: other4\n", 1) + `jail:
  maxretry: 3
  state_file: ` + filepath.Join(dir, "state.json") + `
  max_offenders: 5000
whitelist:
  grace: 2m
esl:
  disabled: true
  address: 127.0.0.1:8022
log:
  level: debug
  format: json
`
	next = strings.Replace(next, "esl:\n  disabled: true\nlogs:", "logs:", 1)
	next = strings.Replace(next, "  timezone: UTC\n", "  timezone: UTC\n  poll_interval: 2s\n", 1)
	next = strings.Replace(next, "  hep_listen: "+hep+"\n", "  hep_listen: "+hep+"\n  flood_requests: 40\n", 1)
	if err := os.WriteFile(cfgPath, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	var line string
	waitFor(t, func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "configuration reloaded") {
				line = l
				return true
			}
		}
		return false
	}, "reload applied")
	// Exactly the changed keys, each in its place (the rule's weight is
	// unset in both configs: not a change).
	applied, restart := logList(line, "applied"), logList(line, "needs_restart")
	wantApplied := []string{"jail.max_offenders", "jail.maxretry", "log.level", "rules.auth_failure.enabled", "whitelist.grace"}
	wantRestart := []string{"ban.set_v4", "esl.address", "jail.state_file", "log.format", "logs.poll_interval", "sip.flood_requests"}
	if got := slices.Sorted(maps.Keys(applied)); !slices.Equal(got, wantApplied) {
		t.Errorf("applied %v, want %v: %s", got, wantApplied, line)
	}
	if got := slices.Sorted(maps.Keys(restart)); !slices.Equal(got, wantRestart) {
		t.Errorf("needs_restart %v, want %v: %s", got, wantRestart, line)
	}
	// log.level debug is live.
	badHEP()
	waitFor(t, func() bool { return strings.Contains(logs.String(), "bad HEP datagram") }, "a debug line after the reload to log.level debug")

	// The 3rd failure bans.
	failures("198.51.100.6", 2)
	seen += 2
	counted(seen)
	if banned("198.51.100.6") {
		t.Fatalf("banned after 2 failures with maxretry 3:\n%s", get("/v1/bans"))
	}
	failures("198.51.100.6", 1)
	waitFor(t, func() bool { return banned("198.51.100.6") }, "the 3rd failure bans")
	if banned("198.51.100.5") {
		t.Errorf("failures scored while the rule was disabled count after the reload:\n%s", get("/v1/bans"))
	}
}

// logList reads a comma-separated attribute of a text log line.
func logList(line, key string) map[string]bool {
	out := map[string]bool{}
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return out
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		v = v[1:]
		v, _, _ = strings.Cut(v, `"`)
	} else {
		v, _, _ = strings.Cut(v, " ")
	}
	for _, k := range strings.Split(v, ",") {
		if k != "" {
			out[k] = true
		}
	}
	return out
}

// metricSum adds the samples of an exposition whose line starts with prefix.
func metricSum(exposition, prefix string) float64 {
	var sum float64
	for _, l := range strings.Split(exposition, "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		f := strings.Fields(l)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
