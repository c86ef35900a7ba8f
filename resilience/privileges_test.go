package resilience_test

import (
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// dropCap is the command prefix that runs the daemon as root without cap:
// for root, execve makes the permitted set the bounding set, so taking the
// capability out of the bounding (and inheritable) set takes it away.
func dropCap(cap string) []string {
	return []string{"setpriv", "--inh-caps=-" + cap, "--bounding-set=-" + cap}
}

// refused runs the daemon expecting a refusal to start: a non-zero exit
// within 5 s and exactly one line on stderr, which it returns.
func refused(t *testing.T, o procOpts) string {
	t.Helper()
	p := start(t, o)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("still running after 5 s; stderr:\n%s", p.stderr.String())
	}
	ee, ok := p.err.(*exec.ExitError)
	if !ok || ee.ExitCode() == 0 {
		t.Fatalf("exit = %v, want a non-zero exit; stderr:\n%s", p.err, p.stderr.String())
	}
	out := strings.TrimRight(p.stderr.String(), "\n")
	if out == "" || strings.Contains(out, "\n") {
		t.Fatalf("stderr is not one line:\n%s", p.stderr.String())
	}
	t.Logf("exit %d: %s", ee.ExitCode(), out)
	return out
}

// TestMissingPrivileges: a part that lacks its capability refuses to start
// with one actionable line naming the capability; with ban.fallback:
// dry-run the daemon starts without CAP_NET_ADMIN, warns, and everything
// else works.
func TestMissingPrivileges(t *testing.T) {
	t.Parallel()
	t.Run("no CAP_NET_ADMIN", func(t *testing.T) {
		t.Parallel()
		ns := newNS(t)
		line := refused(t, procOpts{ns: ns, wrap: dropCap("net_admin"), config: "api:\n  listen: 127.0.0.1:9091\n"})
		for _, want := range []string{"CAP_NET_ADMIN", "ip_set", "ban.fallback: dry-run"} {
			if !strings.Contains(line, want) {
				t.Errorf("the line does not name %q", want)
			}
		}
		if out, _ := exec.Command("ip", "netns", "exec", ns, "ipset", "list", "-n").CombinedOutput(); strings.TrimSpace(string(out)) != "" {
			t.Errorf("sets were created anyway: %s", out)
		}
	})

	t.Run("no CAP_NET_ADMIN, fallback dry-run", func(t *testing.T) {
		t.Parallel()
		ns := newNS(t)
		p := startReady(t, procOpts{ns: ns, wrap: dropCap("net_admin"), api: "127.0.0.1:9091", config: `
esl:
  disabled: true
sip:
  hep_listen: ""
ban:
  fallback: dry-run
api:
  listen: 127.0.0.1:9091
`})
		var warn string
		waitFor(t, 5*time.Second, "the fallback warning", func() bool {
			for _, l := range strings.Split(p.stderr.String(), "\n") {
				if strings.Contains(l, "level=WARN") && strings.Contains(l, "dry-run") {
					warn = l
					return true
				}
			}
			return false
		})
		if !strings.Contains(warn, "CAP_NET_ADMIN") {
			t.Errorf("the warning does not say what is missing: %s", warn)
		}
		if code, body := p.get("/readyz"); code != http.StatusOK {
			t.Errorf("/readyz = %d %s, want 200 (dry-run works, Event Socket off)", code, body)
		}
		p.ban("198.51.100.9", "1h", "fallback")
		if _, ok := p.bans()["198.51.100.9"]; !ok {
			t.Error("the dry-run ban is not listed")
		}
		if out, _ := exec.Command("ip", "netns", "exec", ns, "ipset", "list", "-n").CombinedOutput(); strings.TrimSpace(string(out)) != "" {
			t.Errorf("a kernel set exists in dry-run: %s", out)
		}
		if n := strings.Count(p.stderr.String(), "level=ERROR"); n != 0 {
			t.Errorf("%d error lines:\n%s", n, p.stderr.String())
		}
	})

	t.Run("capture without CAP_NET_RAW", func(t *testing.T) {
		t.Parallel()
		ns := newNS(t)
		line := refused(t, procOpts{ns: ns, wrap: dropCap("net_raw"), config: `
sip:
  capture_interface: lo
api:
  listen: 127.0.0.1:9091
`})
		for _, want := range []string{"CAP_NET_RAW", "sip.capture_interface"} {
			if !strings.Contains(line, want) {
				t.Errorf("the line does not name %q", want)
			}
		}
	})
}
