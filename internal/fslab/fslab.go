// Package fslab is the lab the real-FreeSWITCH tests (e2e/) run in: a real
// FreeSWITCH 1.11.1 unpacked from $SIPWARDEN_FREESWITCH, network namespaces
// for it, an office behind NAT, a roaming phone pool and attackers, and the
// real sipwarden binary next to FreeSWITCH (Event Socket, log, HEP, ipset
// backend with its DROP rules installed).
//
// It drives everything from the outside, the way an operator does: config
// files, processes, the HTTP API, `sipwarden check`, and the kernel through
// the ipset and iptables commands. It never imports sipwarden's internals, so
// refactors inside them do not break the lab.
//
// It is test support only: it must not be imported by non-test code.
// Everything it creates is removed by t.Cleanup, also after a failure.
package fslab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
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
)

// The lab's addresses. Every namespace is the lab's own, so the same
// addresses are reused by every lab; traffic never leaves them.
var (
	// FreeSWITCH's own address (on an interface carrying the default
	// route, so FreeSWITCH's local network guess is this /24).
	FSAddr = netip.MustParseAddr("192.0.2.10")
	// The office's public (NAT) address and its LAN address behind the router.
	OfficeAddr    = netip.MustParseAddr("203.0.113.10")
	OfficeLANAddr = netip.MustParseAddr("192.168.50.2")
	// The roaming phones' link; phone i (0-based) registers from Roam(i).
	roamLink = netip.MustParseAddr("198.18.0.2")
)

// Roam is the source address of roaming phone i (0 <= i < 60000), in
// 198.19.0.0/16, routed by FreeSWITCH through the roaming namespace.
func Roam(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte(i / 250), byte(i%250 + 1)})
}

// Attacker is the source address of attacker namespace k (0 <= k < 32),
// each on its own /29 of 198.51.100.0/24.
func Attacker(k int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(8*k + 2)}) }

// SIP ports of the vanilla profiles.
const (
	InternalPort = 5060
	ExternalPort = 5080
)

// Options shape a lab.
type Options struct {
	// Users are extra directory users generated in directory/default:
	// extensions 2000 .. 2000+Users-1, password Password(ext).
	Users int
	// Roaming is how many roaming source addresses Roam(0..Roaming-1) exist.
	Roaming int
	// Attackers is how many attacker namespaces exist.
	Attackers int
	// Office creates the office router (NAT) and its LAN namespace.
	Office bool
	// Sipwarden is extra YAML appended to the lab's sipwarden config
	// (top-level keys that the lab does not set itself).
	Sipwarden string
	// NoSipwarden: start FreeSWITCH only (the test starts sipwarden).
	NoSipwarden bool
}

// Password is the directory password of generated user ext.
func Password(ext int) string { return fmt.Sprintf("pw-%d-lab", ext) }

// Credentials is the injection field the lab's scenarios put in the
// REGISTER answering a challenge.
func Credentials(user, password string) string {
	return "[authentication username=" + user + " password=" + password + "]"
}

// FirstUser is the first generated extension.
const FirstUser = 2000

// Lab is one running lab.
type Lab struct {
	t    testing.TB
	opts Options
	Dir  string // scratch directory (runtime, conf, logs, state)
	id   string // namespace prefix

	// Namespaces.
	FSNS, OfficeRouterNS, OfficeNS, RoamNS string
	AttackNS                               []string

	ESLPassword string
	// SipwardenESLPassword, when set, is the password sipwarden is given
	// instead of ESLPassword (a wrong-password test).
	SipwardenESLPassword string
	LogFile              string // FreeSWITCH's log
	fs                   *Proc
	sw                   *Proc
	swConfig             string
	apiClient            *http.Client
}

var labSeq atomic.Int64

// New checks what the lab needs, unpacks FreeSWITCH, builds the
// namespaces and starts FreeSWITCH and (unless NoSipwarden) sipwarden,
// waiting until both are ready. Without a runtime it skips the test (fails
// with CI=true).
func New(t testing.TB, o Options) *Lab {
	t.Helper()
	tarball := requirements(t)
	l := &Lab{t: t, opts: o, Dir: t.TempDir()}
	l.id = fmt.Sprintf("lab%d-%d", os.Getpid(), labSeq.Add(1))
	l.ESLPassword = "lab-" + randHex(8)
	l.unpack(tarball)
	l.network()
	l.configure()
	l.StartFreeSWITCH()
	if !o.NoSipwarden {
		l.StartSipwarden()
		l.WaitReady(20 * time.Second)
	}
	return l
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// --- requirements -------------------------------------------------------

var (
	reqOnce    sync.Once
	reqErr     error
	reqSkip    string
	reqTarball string
	buildOnce  sync.Once
	buildErr   error
	binDir     string
)

// RepoRoot is the module root (the directory holding go.mod).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// RuntimeDir is where the FreeSWITCH runtime is looked for.
func RuntimeDir() (string, error) {
	if d := os.Getenv("SIPWARDEN_FREESWITCH"); d != "" {
		return filepath.Abs(d)
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "..", "shared", "freeswitch"), nil
}

const tarballName = "freeswitch-1.11.1-runtime.tar.xz"

// requirements skips (or with CI=true fails) without a runtime, root or
// tools, and returns the runtime tarball.
func requirements(t testing.TB) string {
	t.Helper()
	reqOnce.Do(func() {
		dir, err := RuntimeDir()
		if err != nil {
			reqErr = err
			return
		}
		tb := filepath.Join(dir, tarballName)
		if _, err := os.Stat(tb); err != nil {
			reqSkip = fmt.Sprintf("no FreeSWITCH runtime at %s: set SIPWARDEN_FREESWITCH to a folder holding %s (built by build-fs.sh from FreeSWITCH v1.11.1)", dir, tarballName)
			return
		}
		reqTarball = tb
		if os.Geteuid() != 0 {
			reqSkip = "the real-FreeSWITCH lab needs root (network namespaces, ipset, iptables)"
			return
		}
		var missing []string
		for _, tool := range []string{"ip", "nsenter", "ipset", "iptables", "sipp", "svmap", "svwar", "svcrack", "tar", "xz"} {
			if _, err := exec.LookPath(tool); err != nil {
				missing = append(missing, tool)
			}
		}
		if len(missing) > 0 {
			reqSkip = "the real-FreeSWITCH lab needs " + strings.Join(missing, " ") + " (scripts/test installs them)"
			return
		}
		// sipp opens one socket per source address (-t ui): raise the
		// open-files limit the children inherit.
		var rl syscall.Rlimit
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
			rl.Cur = rl.Max
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		}
		for _, mod := range []string{"ip_set", "ip_set_hash_ip", "ip_set_hash_net"} {
			exec.Command("modprobe", mod).Run()
		}
	})
	if reqErr != nil {
		t.Fatal(reqErr)
	}
	if reqSkip != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(reqSkip)
		}
		t.Skip(reqSkip)
	}
	return reqTarball
}

// SipwardenBin builds the sipwarden command once per test binary.
func SipwardenBin(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		binDir, err = os.MkdirTemp("", "fslab-bin-")
		if err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, "sipwarden"), "./cmd/sipwarden")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/sipwarden: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "sipwarden")
}

// Main runs the tests and removes what the lab shares between tests (the
// sipwarden binary, FreeSWITCH's generated certificates).
func Main(m *testing.M) int {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	if certCache != "" {
		os.RemoveAll(certCache)
	}
	return code
}

// --- runtime ------------------------------------------------------------

var (
	depsOnce sync.Once
	depsErr  error
)

func (l *Lab) unpack(tarball string) {
	l.t.Helper()
	if out, err := exec.Command("tar", "-xJf", tarball, "-C", l.Dir).CombinedOutput(); err != nil {
		l.t.Fatalf("unpack %s: %v\n%s", tarball, err, out)
	}
	depsOnce.Do(func() { depsErr = installDeps(l.Dir) })
	if depsErr != nil {
		l.t.Fatal(depsErr)
	}
	for _, d := range []string{"log", "db", "run", "tmp", "cache", "storage", "recordings", "tls"} {
		os.MkdirAll(filepath.Join(l.Dir, "var", d), 0o755)
	}
	for _, d := range []string{"sounds", "htdocs", "scripts", "grammar"} {
		os.MkdirAll(filepath.Join(l.Dir, "share", d), 0o755)
	}
	if certCache != "" {
		copyDir(l.t, certCache, filepath.Join(l.Dir, "var", "tls"))
	}
}

// installDeps installs the Debian packages DEBIAN-RUNTIME-DEPS names when a
// FreeSWITCH library does not resolve.
func installDeps(dir string) error {
	var bins []string
	bins = append(bins, filepath.Join(dir, "bin", "freeswitch"))
	mods, _ := filepath.Glob(filepath.Join(dir, "mod", "*.so"))
	bins = append(bins, mods...)
	out, err := exec.Command("ldd", bins...).CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("not found")) {
		return fmt.Errorf("ldd: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("not found")) {
		return nil
	}
	deps, err := os.ReadFile(filepath.Join(dir, "DEBIAN-RUNTIME-DEPS"))
	if err != nil {
		return err
	}
	var pkgs []string
	for _, line := range strings.Split(string(deps), "\n") {
		if f := strings.Fields(line); len(f) >= 1 && !strings.HasPrefix(f[0], "#") {
			pkgs = append(pkgs, f[0])
		}
	}
	args := append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)
	cmd := exec.Command("apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("FreeSWITCH libraries missing; apt-get install %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// certCache holds the certificates the first FreeSWITCH generated, so the
// next labs skip the key generation.
var certCache string

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from+"/.", to).CombinedOutput(); err != nil {
		t.Fatalf("cp %s: %v\n%s", from, err, out)
	}
}

// --- network ------------------------------------------------------------

// Run runs a command and fails the test if it fails; it returns the output.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nsenter is the command prefix that runs a program in namespace ns (the
// network namespace only: cheaper than ip netns exec, which also remounts
// /sys, when a test polls).
func nsenter(ns string) []string { return []string{"nsenter", "--net=/run/netns/" + ns} }

// NS runs a command in namespace ns and fails the test if it fails.
func (l *Lab) NS(ns string, args ...string) string {
	l.t.Helper()
	return Run(l.t, append(nsenter(ns), args...)...)
}

func (l *Lab) newNS(role string) string {
	l.t.Helper()
	name := l.id + "-" + role
	Run(l.t, "ip", "netns", "add", name)
	l.t.Cleanup(func() {
		// Whatever still runs in it (a process the test lost) goes first.
		if out, _ := exec.Command("ip", "netns", "pids", name).Output(); len(out) > 0 {
			for _, p := range strings.Fields(string(out)) {
				if p == strconv.Itoa(os.Getpid()) {
					continue // one of the test's threads may still be inside
				}
				exec.Command("kill", "-9", p).Run()
			}
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			l.t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	Run(l.t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// link makes a veth pair between namespaces a and b with the given
// addresses.
func (l *Lab) link(a, aIf, aAddr, b, bIf, bAddr string) {
	l.t.Helper()
	Run(l.t, "ip", "-n", a, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b)
	Run(l.t, "ip", "-n", a, "addr", "add", aAddr, "dev", aIf)
	Run(l.t, "ip", "-n", b, "addr", "add", bAddr, "dev", bIf)
	Run(l.t, "ip", "-n", a, "link", "set", aIf, "up")
	Run(l.t, "ip", "-n", b, "link", "set", bIf, "up")
}

// sweepStale removes what labs of test processes that no longer exist
// left behind (a test binary killed by -timeout runs no cleanup).
func sweepStale() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), "lab")
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil {
			continue // its test is still running
		}
		if out, _ := exec.Command("ip", "netns", "pids", e.Name()).Output(); len(out) > 0 {
			for _, p := range strings.Fields(string(out)) {
				exec.Command("kill", "-9", p).Run()
			}
		}
		exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

var sweepOnce sync.Once

func (l *Lab) network() {
	l.t.Helper()
	sweepOnce.Do(sweepStale)
	l.FSNS = l.newNS("fs")
	// FreeSWITCH guesses its network from the default route: give it one,
	// via an address nobody owns, on the interface that carries FSAddr.
	// (A veth pair whose both ends stay in the namespace: the kernel may
	// have no dummy interfaces.)
	Run(l.t, "ip", "-n", l.FSNS, "link", "add", "wan0", "type", "veth", "peer", "name", "wan1")
	Run(l.t, "ip", "-n", l.FSNS, "addr", "add", FSAddr.String()+"/24", "dev", "wan0")
	Run(l.t, "ip", "-n", l.FSNS, "link", "set", "wan0", "up")
	Run(l.t, "ip", "-n", l.FSNS, "link", "set", "wan1", "up")
	Run(l.t, "ip", "-n", l.FSNS, "route", "add", "default", "via", "192.0.2.254", "dev", "wan0")
	if l.opts.Office {
		l.OfficeRouterNS = l.newNS("orouter")
		l.OfficeNS = l.newNS("office")
		l.link(l.FSNS, "to-office", "203.0.113.1/24", l.OfficeRouterNS, "wan", OfficeAddr.String()+"/24")
		l.link(l.OfficeRouterNS, "lan", "192.168.50.1/24", l.OfficeNS, "eth0", OfficeLANAddr.String()+"/24")
		Run(l.t, "ip", "-n", l.OfficeRouterNS, "route", "add", "default", "via", "203.0.113.1")
		Run(l.t, "ip", "-n", l.OfficeNS, "route", "add", "default", "via", "192.168.50.1")
		l.NS(l.OfficeRouterNS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		l.NS(l.OfficeRouterNS, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE")
	}
	if l.opts.Roaming > 0 {
		l.RoamNS = l.newNS("roam")
		l.link(l.FSNS, "to-roam", "198.18.0.1/24", l.RoamNS, "eth0", roamLink.String()+"/24")
		Run(l.t, "ip", "-n", l.RoamNS, "route", "add", "default", "via", "198.18.0.1")
		Run(l.t, "ip", "-n", l.FSNS, "route", "add", "198.19.0.0/16", "via", roamLink.String())
		var batch strings.Builder
		for i := 0; i < l.opts.Roaming; i++ {
			fmt.Fprintf(&batch, "addr add %s/32 dev lo\n", Roam(i))
		}
		l.batch(l.RoamNS, batch.String())
	}
	for k := 0; k < l.opts.Attackers; k++ {
		ns := l.newNS(fmt.Sprintf("att%d", k))
		l.AttackNS = append(l.AttackNS, ns)
		gw := netip.AddrFrom4([4]byte{198, 51, 100, byte(8*k + 1)})
		l.link(l.FSNS, fmt.Sprintf("to-att%d", k), gw.String()+"/29", ns, "eth0", Attacker(k).String()+"/29")
		Run(l.t, "ip", "-n", ns, "route", "add", "default", "via", gw.String())
	}
}

// batch runs `ip -batch` in namespace ns.
func (l *Lab) batch(ns, cmds string) {
	l.t.Helper()
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(cmds)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("ip -n %s -batch: %v\n%s", ns, err, out)
	}
}

// --- configuration -------------------------------------------------------

// ConfDir is the lab's FreeSWITCH configuration (a copy of the vanilla one).
func (l *Lab) ConfDir() string { return filepath.Join(l.Dir, "conf") }

// edit replaces old by new in a conf file, failing when old is absent.
func (l *Lab) edit(rel, old, new string) {
	l.t.Helper()
	p := filepath.Join(l.ConfDir(), rel)
	b, err := os.ReadFile(p)
	if err != nil {
		l.t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		l.t.Fatalf("%s: %q not found (vanilla conf changed?)", rel, old)
	}
	if err := os.WriteFile(p, bytes.Replace(b, []byte(old), []byte(new), -1), 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// HEP and API addresses inside the FreeSWITCH namespace.
const (
	HEPAddr = "127.0.0.1:9060"
	ESLAddr = "127.0.0.1:8021"
	APIAddr = "127.0.0.1:9091"
)

func (l *Lab) configure() {
	l.t.Helper()
	copyDir(l.t, filepath.Join(l.Dir, "etc", "freeswitch"), mkdir(l.t, l.ConfDir()))
	for _, p := range []string{"sip_profiles/internal.xml", "sip_profiles/external.xml"} {
		if p == "sip_profiles/internal.xml" {
			l.edit(p, `<param name="log-auth-failures" value="false"/>`, `<param name="log-auth-failures" value="true"/>`)
		} else {
			l.edit(p, `<param name="sip-port" value="$${external_sip_port}"/>`,
				`<param name="sip-port" value="$${external_sip_port}"/>`+"\n    "+`<param name="log-auth-failures" value="true"/>`)
		}
		l.edit(p, `<param name="sip-capture" value="no"/>`, `<param name="sip-capture" value="yes"/>`)
	}
	l.edit("autoload_configs/sofia.conf.xml", `<!-- <param name="capture-server" value="udp:homer.domain.com:5060;hep=3;capture_id=100"/> -->`,
		`<param name="capture-server" value="udp:`+HEPAddr+`;hep=3;capture_id=100"/>`)
	l.edit("autoload_configs/event_socket.conf.xml", `<param name="listen-ip" value="::"/>`, `<param name="listen-ip" value="127.0.0.1"/>`)
	l.edit("autoload_configs/event_socket.conf.xml", `<param name="password" value="ClueCon"/>`, `<param name="password" value="`+l.ESLPassword+`"/>`)
	l.edit("autoload_configs/event_socket.conf.xml", `<!--<param name="apply-inbound-acl" value="loopback.auto"/>-->`, `<param name="apply-inbound-acl" value="loopback.auto"/>`)
	if l.opts.Users > 0 {
		var b strings.Builder
		b.WriteString("<include>\n")
		for i := 0; i < l.opts.Users; i++ {
			ext := FirstUser + i
			fmt.Fprintf(&b, `  <user id="%d"><params><param name="password" value="%s"/></params>`+
				`<variables><variable name="user_context" value="default"/><variable name="toll_allow" value="domestic"/></variables></user>`+"\n", ext, Password(ext))
		}
		b.WriteString("</include>\n")
		if err := os.WriteFile(filepath.Join(l.ConfDir(), "directory", "default", "lab_users.xml"), []byte(b.String()), 0o644); err != nil {
			l.t.Fatal(err)
		}
	}
	l.LogFile = filepath.Join(l.Dir, "var", "log", "freeswitch.log")
}

func mkdir(t testing.TB, d string) string {
	t.Helper()
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// --- processes ----------------------------------------------------------

// Proc is a process the lab started in its own process group.
type Proc struct {
	Name   string
	cmd    *exec.Cmd
	out    *syncBuf
	done   chan struct{}
	err    error
	killed atomic.Bool
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 8<<20 { // bounded: keep the start, count on the rest
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start starts a command in namespace ns (its own process group), killed
// at cleanup if still running.
func (l *Lab) Start(name, ns string, args ...string) *Proc {
	l.t.Helper()
	full := append(nsenter(ns), args...)
	cmd := exec.Command(full[0], full[1:]...)
	// Pdeathsig: if the test binary dies (a -timeout panic skips every
	// cleanup), its FreeSWITCH and sipp die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &Proc{Name: name, cmd: cmd, out: &syncBuf{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.Dir = l.Dir
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	l.t.Cleanup(func() { p.Kill() })
	return p
}

// Exec runs a command in namespace ns to its end (killed after timeout)
// and returns its output.
func (l *Lab) Exec(ns string, timeout time.Duration, args ...string) (string, error) {
	l.t.Helper()
	p := l.Start(args[0], ns, args...)
	err := p.Wait(timeout)
	return p.Output(), err
}

// Pid is the process id (nsenter execs the command).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output is what the process wrote so far (stdout and stderr).
func (p *Proc) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the exit error, valid after Done.
func (p *Proc) Err() error { return p.err }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal signals the process group.
func (p *Proc) Signal(sig syscall.Signal) { syscall.Kill(-p.cmd.Process.Pid, sig) }

// Kill kills the process group and waits for the exit.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	p.killed.Store(true)
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to timeout, then kills; it returns the
// exit error (nil: a clean exit).
func (p *Proc) Stop(timeout time.Duration) error {
	if p.Exited() {
		return p.err
	}
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s: no exit within %v of SIGTERM", p.Name, timeout)
	}
}

// Wait waits for the exit up to timeout.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s: still running after %v", p.Name, timeout)
	}
}

// --- FreeSWITCH ---------------------------------------------------------

// FS is the running FreeSWITCH.
func (l *Lab) FS() *Proc { return l.fs }

// StartFreeSWITCH starts FreeSWITCH and waits until both sofia profiles
// run and the Event Socket answers.
func (l *Lab) StartFreeSWITCH() {
	l.t.Helper()
	r := l.Dir
	v := func(d string) string { return filepath.Join(r, "var", d) }
	s := func(d string) string { return filepath.Join(r, "share", d) }
	l.fs = l.Start("freeswitch", l.FSNS, filepath.Join(r, "bin", "freeswitch"), "-nf", "-nc", "-nonat", "-nonatmap",
		"-mod", filepath.Join(r, "mod"), "-conf", l.ConfDir(), "-log", v("log"), "-db", v("db"),
		"-run", v("run"), "-temp", v("tmp"), "-cache", v("cache"), "-storage", v("storage"),
		"-recordings", v("recordings"), "-certs", v("tls"), "-sounds", s("sounds"),
		"-base", r, "-htdocs", s("htdocs"), "-scripts", s("scripts"), "-grammar", s("grammar"))
	l.t.Cleanup(func() {
		if l.t.Failed() {
			l.t.Logf("FreeSWITCH log tail:\n%s", tail(l.LogFile, 40))
		}
	})
	start := time.Now()
	l.WaitFor(60*time.Second, "FreeSWITCH with both sofia profiles RUNNING", func() bool {
		if l.fs.Exited() {
			l.t.Fatalf("FreeSWITCH exited: %v\n%s\n%s", l.fs.err, l.fs.Output(), tail(l.LogFile, 40))
		}
		out, err := l.FSCLITry("sofia status")
		return err == nil && strings.Count(out, "RUNNING") >= 2 && strings.Contains(out, FSAddr.String())
	})
	l.t.Logf("FreeSWITCH running in %v", time.Since(start).Round(time.Millisecond))
	if certCache == "" {
		if d, err := os.MkdirTemp("", "fslab-certs-"); err == nil {
			copyDir(l.t, v("tls"), d)
			certCache = d
		}
	}
}

// FSCLITry runs one fs_cli command against the lab's Event Socket.
func (l *Lab) FSCLITry(command string) (string, error) {
	out, err := exec.Command("nsenter", "--net=/run/netns/"+l.FSNS, filepath.Join(l.Dir, "bin", "fs_cli"),
		"-H", "127.0.0.1", "-P", "8021", "-p", l.ESLPassword, "-t", "5000", "-x", command).CombinedOutput()
	return string(out), err
}

// FSCLI runs one fs_cli command and fails the test if it fails.
func (l *Lab) FSCLI(command string) string {
	l.t.Helper()
	out, err := l.FSCLITry(command)
	if err != nil {
		l.t.Fatalf("fs_cli -x %q: %v\n%s", command, err, out)
	}
	return out
}

// StopFreeSWITCH shuts FreeSWITCH down cleanly.
func (l *Lab) StopFreeSWITCH() {
	l.t.Helper()
	if err := l.fs.Stop(30 * time.Second); err != nil {
		l.t.Fatalf("FreeSWITCH shutdown: %v", err)
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// --- sipwarden -----------------------------------------------------------

// Sipwarden is the running sipwarden.
func (l *Lab) Sipwarden() *Proc { return l.sw }

// SipwardenConfig is the YAML the lab starts sipwarden with.
func (l *Lab) SipwardenConfig() string {
	pwFile := filepath.Join(l.Dir, "esl-password")
	pw := l.ESLPassword
	if l.SipwardenESLPassword != "" {
		pw = l.SipwardenESLPassword
	}
	os.WriteFile(pwFile, []byte(pw+"\n"), 0o600)
	return fmt.Sprintf(`esl:
  address: %s
  password_file: %s
  backoff_min: 100ms
  backoff_max: 1s
logs:
  files: [%s]
sip:
  hep_listen: %s
ban:
  backend: ipset
  install_rule: true
  rule_ports: [%d, %d]
jail:
  state_file: %s
api:
  listen: %s
log:
  level: debug
%s`, ESLAddr, pwFile, l.LogFile, HEPAddr, InternalPort, ExternalPort,
		l.StateFile(), APIAddr, l.opts.Sipwarden)
}

// StateFile is sipwarden's jail.state_file.
func (l *Lab) StateFile() string { return filepath.Join(l.Dir, "sipwarden-state.json") }

// StartSipwarden starts `sipwarden run` in the FreeSWITCH namespace and
// waits for /healthz.
func (l *Lab) StartSipwarden() {
	l.t.Helper()
	bin := SipwardenBin(l.t)
	l.swConfig = filepath.Join(l.Dir, "sipwarden.yaml")
	if err := os.WriteFile(l.swConfig, []byte(l.SipwardenConfig()), 0o600); err != nil {
		l.t.Fatal(err)
	}
	l.sw = l.Start("sipwarden", l.FSNS, bin, "run", "-config", l.swConfig)
	sw := l.sw
	l.t.Cleanup(func() {
		if !sw.Exited() {
			if err := sw.Stop(10 * time.Second); err != nil {
				l.t.Errorf("sipwarden stop: %v", err)
			}
		}
		if strings.Contains(sw.Output(), "panic:") {
			l.t.Errorf("sipwarden panicked:\n%s", sw.Output())
		} else if l.t.Failed() {
			l.t.Logf("sipwarden output tail:\n%s", lastLines(sw.Output(), 40))
		}
	})
	l.WaitFor(20*time.Second, "sipwarden /healthz", func() bool {
		if sw.Exited() {
			l.t.Fatalf("sipwarden exited: %v\n%s", sw.err, sw.Output())
		}
		code, _, err := l.GetTry("/healthz")
		return err == nil && code == http.StatusOK
	})
}

// StopSipwarden stops sipwarden with SIGTERM and expects a clean exit.
func (l *Lab) StopSipwarden() {
	l.t.Helper()
	if err := l.sw.Stop(10 * time.Second); err != nil {
		l.t.Fatalf("sipwarden stop: %v\n%s", err, lastLines(l.sw.Output(), 20))
	}
}

// WaitReady waits for /readyz 200.
func (l *Lab) WaitReady(timeout time.Duration) {
	l.t.Helper()
	l.WaitFor(timeout, "sipwarden /readyz 200", func() bool {
		code, _, err := l.GetTry("/readyz")
		return err == nil && code == http.StatusOK
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Check runs `sipwarden check -q IP` in the FreeSWITCH namespace and
// returns its exit code (0 whitelisted, 1 not, 2 error).
func (l *Lab) Check(ip netip.Addr) int {
	l.t.Helper()
	cmd := exec.Command("nsenter", "--net=/run/netns/"+l.FSNS, SipwardenBin(l.t), "check", "-config", l.swConfig, "-api", "http://"+APIAddr, "-q", ip.String())
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ee.ExitCode() == 2 {
			l.t.Logf("sipwarden check %s: exit 2: %s", ip, out)
		}
		return ee.ExitCode()
	default:
		l.t.Fatalf("sipwarden check: %v", err)
		return -1
	}
}

// --- API -----------------------------------------------------------------

func (l *Lab) client() *http.Client {
	if l.apiClient == nil {
		ns := l.FSNS
		l.apiClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := InNS(ns, func() error {
					var d net.Dialer
					var err error
					c, err = d.DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
		}}
	}
	return l.apiClient
}

// GetTry is a GET on sipwarden's API.
func (l *Lab) GetTry(path string) (int, string, error) {
	resp, err := l.client().Get("http://" + APIAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String(), nil
}

// Get is a GET that fails the test on a transport error.
func (l *Lab) Get(path string) (int, string) {
	l.t.Helper()
	code, body, err := l.GetTry(path)
	if err != nil {
		l.t.Fatalf("GET %s: %v", path, err)
	}
	return code, body
}

// Do makes one API request with a JSON body.
func (l *Lab) Do(method, path, body string) (int, string) {
	l.t.Helper()
	req, err := http.NewRequest(method, "http://"+APIAddr+path, strings.NewReader(body))
	if err != nil {
		l.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	// sipwarden may generate an API token next to its config.
	if tok, err := os.ReadFile(filepath.Join(l.Dir, "api.token")); err == nil {
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := l.client().Do(req)
	if err != nil {
		l.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// Metrics is the /metrics exposition.
func (l *Lab) Metrics() string {
	l.t.Helper()
	code, body := l.Get("/metrics")
	if code != http.StatusOK {
		l.t.Fatalf("GET /metrics = %d", code)
	}
	return body
}

// Metric is the sum of the samples of name whose labels include match.
func (l *Lab) Metric(name string, match ...string) float64 {
	l.t.Helper()
	return MetricValue(l.t, l.Metrics(), name, match...)
}

// InNS runs f on an OS thread switched into namespace ns; sockets f
// creates stay in ns. The thread is switched back before it is unlocked;
// if that fails it stays locked and exits with the goroutine.
func InNS(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: %w", err)
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		err = f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// --- kernel --------------------------------------------------------------

// Banned reports whether sipwarden's IPv4 set in the FreeSWITCH namespace
// holds ip (ipset test).
func (l *Lab) Banned(ip netip.Addr) bool {
	return exec.Command("nsenter", "--net=/run/netns/"+l.FSNS, "ipset", "test", "sipwarden4", ip.String()).Run() == nil
}

// InSet reports whether kernel set name in the FreeSWITCH namespace holds
// entry (ipset test syntax: "203.0.113.10", "203.0.113.10,udp:5064").
func (l *Lab) InSet(name, entry string) bool {
	return exec.Command("nsenter", "--net=/run/netns/"+l.FSNS, "ipset", "test", name, entry).Run() == nil
}

// Quarantined reports whether the mapping ip:port (UDP) is in sipwarden's
// quarantine set; Throttled whether ip is in its throttle set.
func (l *Lab) Quarantined(ip netip.Addr, port int) bool {
	return l.InSet("sipwarden4q", fmt.Sprintf("%s,udp:%d", ip, port))
}

// Throttled reports whether ip is in sipwarden's throttle set.
func (l *Lab) Throttled(ip netip.Addr) bool { return l.InSet("sipwarden4t", ip.String()) }

// SetEntries lists the addresses in sipwarden's IPv4 set.
func (l *Lab) SetEntries() []string {
	l.t.Helper()
	out := l.NS(l.FSNS, "ipset", "list", "sipwarden4")
	var ips []string
	inMembers := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "Members:") {
			inMembers = true
			continue
		}
		if inMembers && strings.TrimSpace(line) != "" {
			ips = append(ips, strings.Fields(line)[0])
		}
	}
	return ips
}

// DropPackets is the sum of the packet counters of the INPUT rules that
// DROP on sipwarden's sets.
func (l *Lab) DropPackets() int64 {
	l.t.Helper()
	out := l.NS(l.FSNS, "iptables", "-L", "INPUT", "-v", "-x", "-n")
	var sum int64
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[2] == "DROP" && strings.Contains(line, "match-set sipwarden4") {
			var n int64
			fmt.Sscan(f[0], &n)
			sum += n
		}
	}
	return sum
}

// --- waiting -------------------------------------------------------------

// WaitFor polls cond every 10 ms until it holds; it fails the test after
// timeout and returns how long it took.
func (l *Lab) WaitFor(timeout time.Duration, what string, cond func() bool) time.Duration {
	l.t.Helper()
	return WaitFor(l.t, timeout, what, cond)
}

// WaitFor polls cond every 10 ms until it holds; it fails the test after
// timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
