package resilience_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/sipwarden/sipwarden/internal/testenv"
)

// sipwardenBin is the sipwarden command built by TestMain.
var sipwardenBin string

func TestMain(m *testing.M) {
	if err := preflight(); err != nil {
		testenv.ExitUnmet("resilience", err)
	}
	dir, err := os.MkdirTemp("", "sipwarden-res-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sipwardenBin = filepath.Join(dir, "sipwarden")
	build := exec.Command("go", "build", "-o", sipwardenBin, "../cmd/sipwarden")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// preflight fails the suite (never skips it) when it cannot do its job.
func preflight() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (network namespaces, ipsets, capabilities)")
	}
	var missing []string
	for _, tool := range []string{"ip", "ipset", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing tools: %s (apt-get install iproute2 ipset util-linux)", strings.Join(missing, " "))
	}
	// As scripts/test does; a kernel without the modules fails the ipset tests.
	for _, mod := range []string{"ip_set", "ip_set_hash_ip", "ip_set_hash_net"} {
		exec.Command("modprobe", mod).Run()
	}
	return nil
}

var nsSeq atomic.Int64

// newNS creates a network namespace with loopback up; it is deleted at the
// end of the test (its ipsets go with it).
func newNS(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("swtest-res-%d-%d", os.Getpid(), nsSeq.Add(1))
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	run(t, "ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
	return name
}

// run runs a command and fails the test if it fails.
func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNS runs f on an OS thread switched into namespace ns ("" = the
// current one). Sockets f creates stay in ns whichever thread uses them
// later. The thread is never switched back: it exits with the goroutine.
func inNS(ns string, f func() error) error {
	if ns == "" {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- fmt.Errorf("netns %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// client is an HTTP client whose connections are made from namespace ns.
func client(ns string) *http.Client {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := inNS(ns, func() error {
				var d net.Dialer
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// syncBuf collects a process's stderr.
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

// daemonProc is one `sipwarden run`.
type daemonProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *syncBuf
	done   chan struct{}
	err    error // valid after done
	base   string
	http   *http.Client
	ns     string
	// tokenFile is where the daemon generated its API token (unless the
	// config names its own); token, read once healthy, authorizes p.do.
	tokenFile string
	token     string
}

// procOpts says how to start the daemon.
type procOpts struct {
	ns     string   // network namespace ("" = the test's own)
	wrap   []string // command prefix after `ip netns exec NS` (setpriv ...)
	config string   // YAML; written to a temp file
	api    string   // host:port of the API, to reach it
}

// start starts the daemon without waiting for it.
func start(t *testing.T, o procOpts) *daemonProc {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "sipwarden.yaml")
	if err := os.WriteFile(cfg, []byte(o.config), 0o600); err != nil {
		t.Fatal(err)
	}
	var args []string
	if o.ns != "" {
		args = append(args, "ip", "netns", "exec", o.ns)
	}
	args = append(args, o.wrap...)
	args = append(args, sipwardenBin, "run", "-config", cfg)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	p := &daemonProc{t: t, cmd: cmd, stderr: &syncBuf{}, done: make(chan struct{}),
		base: "http://" + o.api, http: client(o.ns), ns: o.ns}
	if !strings.Contains(o.config, "token") {
		// As with the shipped config: a token generated at the first start,
		// here in the test's own directory.
		p.tokenFile = filepath.Join(filepath.Dir(cfg), "api.token")
		cmd.Env = append(cmd.Env, "SIPWARDEN_API_TOKEN_FILE="+p.tokenFile)
	}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if strings.Contains(p.stderr.String(), "panic") {
			t.Errorf("the daemon panicked:\n%s", p.stderr.String())
		}
	})
	return p
}

// startReady starts the daemon and waits for /healthz.
func startReady(t *testing.T, o procOpts) *daemonProc {
	t.Helper()
	p := start(t, o)
	p.waitHealthy()
	return p
}

func (p *daemonProc) waitHealthy() {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			p.t.Fatalf("daemon exited early: %v\n%s", p.err, p.stderr.String())
		default:
		}
		if code, _ := p.get("/healthz"); code == http.StatusOK {
			if p.tokenFile != "" {
				b, err := os.ReadFile(p.tokenFile)
				if err != nil {
					p.t.Fatalf("the daemon generated no API token: %v\n%s", err, p.stderr.String())
				}
				p.token = strings.TrimSpace(string(b))
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("no /healthz within 10 s\n%s", p.stderr.String())
}

// pid is the daemon's own process id (ip netns exec and setpriv exec it).
func (p *daemonProc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and expects a clean exit within 5 s; it is a no-op
// once the process has exited.
func (p *daemonProc) stop() {
	p.t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			p.t.Errorf("exit after SIGTERM: %v\n%s", p.err, p.stderr.String())
		}
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		p.t.Errorf("no exit within 5 s of SIGTERM\n%s", p.stderr.String())
	}
}

// do makes one request; it fails the test on a transport error.
func (p *daemonProc) do(method, path string, hdr http.Header, body string) (int, string) {
	p.t.Helper()
	req, err := http.NewRequest(method, p.base+path, strings.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.http.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// get is a GET that returns 0 on a transport error (for polling).
func (p *daemonProc) get(path string) (int, string) {
	resp, err := p.http.Get(p.base + path)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// ban bans ip through the API and expects 201.
func (p *daemonProc) ban(ip, dur, reason string) {
	p.t.Helper()
	code, body := p.do(http.MethodPost, "/v1/bans", nil, fmt.Sprintf(`{"ip":%q,"duration":%q,"reason":%q}`, ip, dur, reason))
	if code != http.StatusCreated {
		p.t.Fatalf("POST /v1/bans %s = %d %s", ip, code, body)
	}
}

type apiBan struct {
	IP        string    `json:"ip"`
	Rule      string    `json:"rule"`
	Reason    string    `json:"reason"`
	ExpiresAt time.Time `json:"expires_at"`
	Count     int       `json:"count"`
}

// bans reads GET /v1/bans.
func (p *daemonProc) bans() map[string]apiBan {
	p.t.Helper()
	code, body := p.do(http.MethodGet, "/v1/bans", nil, "")
	if code != http.StatusOK {
		p.t.Fatalf("GET /v1/bans = %d %s", code, body)
	}
	var r struct{ Bans []apiBan }
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		p.t.Fatalf("GET /v1/bans: %v: %s", err, body)
	}
	m := make(map[string]apiBan, len(r.Bans))
	for _, b := range r.Bans {
		m[b.IP] = b
	}
	return m
}

// metric returns the sum of every sample of the named metric whose labels
// include all of match ("k=v" pairs); 0 when there is none.
func (p *daemonProc) metric(name string, match ...string) float64 {
	p.t.Helper()
	code, body := p.do(http.MethodGet, "/metrics", nil, "")
	if code != http.StatusOK {
		p.t.Fatalf("GET /metrics = %d", code)
	}
	return metricValue(p.t, body, name, match...)
}

func metricValue(t *testing.T, exposition, name string, match ...string) float64 {
	t.Helper()
	var sum float64
	for _, line := range strings.Split(exposition, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		var labels string
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				t.Fatalf("bad exposition line %q", line)
			}
			labels, rest = rest[1:end], rest[end+1:]
		}
		matched := true
		for _, kv := range match {
			k, v, _ := strings.Cut(kv, "=")
			if !strings.Contains(","+labels+",", ","+k+"="+strconv.Quote(v)+",") {
				matched = false
			}
		}
		if !matched {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			t.Fatalf("bad exposition line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// waitFor polls cond every 20 ms until it holds or timeout passes; it
// returns how long it took.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v", what, timeout)
	return 0
}

// inSet reports whether the kernel set in ns holds ip (ipset test).
func inSet(ns, set, ip string) bool {
	return exec.Command("ip", "netns", "exec", ns, "ipset", "test", set, ip).Run() == nil
}

// freeAddr returns a 127.0.0.1 TCP address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// procStatusKB reads one kB field (VmRSS, VmHWM) of /proc/PID/status.
func procStatusKB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatalf("%s: %q", field, line)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
