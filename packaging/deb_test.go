// Package packaging builds and tests the Debian package (build-deb). Its
// test installs the package on this machine for real, so it runs only as
// root with dpkg (under CI=true it must) and only when no sipwarden package
// is installed already; it purges what it installed.
package packaging

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func need(t *testing.T, what string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("needs %s", what)
	}
	t.Skipf("needs %s", what)
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func tryRun(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestDebianPackage is issue 15 item 10: build the package from this tree,
// `dpkg -i` it, check what it installed (units pass systemd-analyze verify,
// the binary reports a real version and commit, the sipwarden user is in
// the freeswitch group, the packaged config validates at the default path,
// man page and completion), run the installed daemon as its user in a
// network namespace (the token is generated in /var/lib/sipwarden and the
// commands find it through the default config), then purge it.
func TestDebianPackage(t *testing.T) {
	_, dpkgErr := exec.LookPath("dpkg-deb")
	need(t, "root and dpkg", os.Geteuid() == 0 && dpkgErr == nil)
	_, saErr := exec.LookPath("systemd-analyze")
	need(t, "systemd-analyze", saErr == nil)
	if out, err := tryRun("dpkg-query", "-W", "-f=${Status}", "sipwarden"); err == nil && strings.Contains(out, "installed") {
		t.Skipf("a sipwarden package is installed on this machine (%s): not touching it", out)
	}
	for _, p := range []string{"/etc/sipwarden", "/var/lib/sipwarden"} {
		if _, err := os.Stat(p); err == nil {
			t.Skipf("%s exists on this machine: not touching it", p)
		}
	}

	commit := strings.TrimSpace(sh(t, "git", "rev-parse", "HEAD")) // before building: HEAD may move meanwhile
	build := exec.Command("./build-deb")
	build.Env = append(os.Environ(), "OUT="+t.TempDir())
	var stderr bytes.Buffer
	build.Stderr = &stderr
	out, err := build.Output()
	if err != nil {
		t.Fatalf("build-deb: %v\n%s", err, stderr.String())
	}
	deb := strings.TrimSpace(string(out))
	info := sh(t, "dpkg-deb", "--field", deb, "Version", "Architecture")
	version := regexp.MustCompile(`Version: (\S+)`).FindStringSubmatch(info)
	if version == nil || !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(version[1]) {
		t.Fatalf("package version: %q", info)
	}
	contents := sh(t, "dpkg-deb", "--contents", deb)
	for _, p := range []string{
		"./usr/bin/sipwarden", "./lib/systemd/system/sipwarden.service", "./lib/systemd/system/sipwarden-firewall.service",
		"./etc/sipwarden/sipwarden.yaml", "./etc/sipwarden/firewall/ipset.conf", "./etc/sipwarden/firewall/iptables.rules",
		"./etc/sipwarden/firewall/ip6tables.rules", "./usr/share/man/man8/sipwarden.8.gz",
		"./usr/share/bash-completion/completions/sipwarden", "./usr/share/doc/sipwarden/copyright", "./usr/share/doc/sipwarden/changelog.gz",
	} {
		if !strings.Contains(contents, " "+p+"\n") {
			t.Errorf("package lacks %s", p)
		}
	}
	if t.Failed() {
		t.Fatalf("contents:\n%s", contents)
	}

	// The freeswitch group the user must join; made here if this machine
	// has no FreeSWITCH package, and removed again.
	if _, err := tryRun("getent", "group", "freeswitch"); err != nil {
		sh(t, "groupadd", "--system", "freeswitch")
		t.Cleanup(func() { tryRun("groupdel", "freeswitch") })
	}
	t.Cleanup(func() {
		if out, err := tryRun("dpkg", "--purge", "sipwarden"); err != nil {
			t.Errorf("dpkg --purge: %v\n%s", err, out)
		}
		for _, p := range []string{"/etc/sipwarden", "/var/lib/sipwarden", "/usr/bin/sipwarden", "/lib/systemd/system/sipwarden.service"} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s left after purge", p)
			}
		}
		if _, err := tryRun("getent", "passwd", "sipwarden"); err == nil {
			t.Error("the sipwarden user is left after purge")
		}
	})
	inst := sh(t, "dpkg", "-i", deb)
	t.Logf("dpkg -i:\n%s", inst)

	// The units.
	if out, err := tryRun("systemd-analyze", "verify", "/lib/systemd/system/sipwarden.service", "/lib/systemd/system/sipwarden-firewall.service"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// A real version and commit, stamped at build.
	v := sh(t, "/usr/bin/sipwarden", "version")
	if !strings.Contains(v, "sipwarden "+version[1]+" ") || !strings.Contains(v, "commit "+commit) || strings.Contains(v, " dev ") {
		t.Errorf("sipwarden version = %q, want version %s and commit %s", v, version[1], commit)
	}
	// The user, its groups, the files' owners and modes.
	groups := sh(t, "id", "-nG", "sipwarden")
	if !strings.Contains(" "+groups, " freeswitch") || !strings.Contains(" "+groups, " sipwarden") {
		t.Errorf("sipwarden's groups: %q, want sipwarden and freeswitch", groups)
	}
	for path, want := range map[string]string{
		"/etc/sipwarden": "750 root sipwarden", "/etc/sipwarden/sipwarden.yaml": "640 root sipwarden",
		"/etc/sipwarden/esl.password": "640 root sipwarden", "/var/lib/sipwarden": "750 sipwarden sipwarden",
	} {
		if got := strings.TrimSpace(sh(t, "stat", "-c", "%a %U %G", path)); got != want {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
	}
	// The packaged config validates, read from the default path.
	if out := sh(t, "/usr/bin/sipwarden", "config", "check"); !strings.Contains(out, "/etc/sipwarden/sipwarden.yaml: valid") || !strings.Contains(out, "dry-run") {
		t.Errorf("config check: %s", out)
	}
	man := sh(t, "sh", "-c", "zcat /usr/share/man/man8/sipwarden.8.gz")
	for _, want := range []string{".TH SIPWARDEN 8", `sipwarden bans add`, `\-for`, `\-token\-file`} {
		if !strings.Contains(man, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
	sh(t, "bash", "-n", "/usr/share/bash-completion/completions/sipwarden")
	if c := sh(t, "cat", "/usr/share/bash-completion/completions/sipwarden"); !strings.Contains(c, "-registrations") {
		t.Error("completion lacks replay's flags")
	}

	runInstalled(t)
}

// runInstalled starts the installed daemon as the sipwarden user, as the
// unit would, in a fresh network namespace (the host's port 9091 and
// firewall untouched), and drives it with the installed commands.
func runInstalled(t *testing.T) {
	_, ipErr := exec.LookPath("ip")
	_, spErr := exec.LookPath("setpriv")
	need(t, "ip and setpriv", ipErr == nil && spErr == nil)
	ns := fmt.Sprintf("ops-deb-%d", os.Getpid())
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { tryRun("ip", "netns", "del", ns) })
	sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	d := exec.Command("ip", "netns", "exec", ns, "setpriv", "--reuid", "sipwarden", "--regid", "sipwarden", "--init-groups",
		"--inh-caps=-all", "/usr/bin/sipwarden", "run")
	d.Env = []string{"PATH=/usr/bin:/bin"}
	var logs syncBuf
	d.Stdout, d.Stderr = &logs, &logs
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.Wait() }()
	stop := func() {
		if d.ProcessState == nil {
			d.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				d.Process.Kill()
				<-exited
			}
		}
	}
	defer stop()
	cli := func(args ...string) (string, error) {
		return tryRun("ip", append([]string{"netns", "exec", ns, "/usr/bin/sipwarden"}, args...)...)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := cli("bans", "list"); err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("the installed daemon exited: %v\n%s", err, logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the installed daemon does not answer\n%s", logs.String())
		}
	}
	if got := strings.TrimSpace(sh(t, "stat", "-c", "%a %U", "/var/lib/sipwarden/api.token")); got != "600 sipwarden" {
		t.Errorf("generated token: %s, want 600 sipwarden", got)
	}
	out, err := cli("bans", "add", "198.51.100.9", "-for", "10m")
	if err != nil || !strings.Contains(out, "would ban 198.51.100.9") {
		t.Errorf("bans add through the installed commands: %v %s\n%s", err, out, logs.String())
	}
	if out, err := cli("status"); err != nil || !strings.Contains(out, "bans: 1 active") {
		t.Errorf("status: %v %s", err, out)
	}
	stop()
	if !strings.Contains(logs.String(), "would ban (dry-run") {
		t.Errorf("the daemon's log does not say would ban:\n%s", logs.String())
	}
}

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
