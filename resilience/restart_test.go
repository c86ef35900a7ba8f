package resilience_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
)

// authFailures appends n FreeSWITCH auth failure lines from ip, stamped now
// (UTC), to the log at path.
func authFailures(t *testing.T, path, ip, user string, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for range n {
		ts := time.Now().UTC().Format("2006-01-02 15:04:05.000000")
		fmt.Fprintf(f, "%s 97.00%% [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [%s@pbx.example.com] from ip %s\n", ts, user, ip)
	}
}

// TestRestartProtectsOffices: a registered office has a phone with a stale
// password. The daemon restarts with a state file that holds the office's
// score just below maxretry and its live registration; FreeSWITCH is slow
// to answer the first `show registrations as json`. One more failure from
// the office right after the start must not ban it: the state file
// whitelists it at once, and no automatic ban (log offenses included) is
// applied before the first listing. An unregistered attacker's failures in
// the same window are held too, and banned once the listing arrives.
func TestRestartProtectsOffices(t *testing.T) {
	t.Parallel()
	const (
		pw       = "restart-Pw-9120"
		office   = "203.0.113.60"
		attacker = "198.51.100.61"
	)
	srv := esltest.NewServer(t, pw)
	srv.SetRegistrations(listing(office, "1001", time.Now().Add(time.Hour)))
	dir := t.TempDir()
	state := filepath.Join(dir, "state.json")
	api := freeAddr(t)
	config := func(logFile string) string {
		return fmt.Sprintf(`
esl:
  address: %s
  password: %s
  backoff_min: 100ms
  backoff_max: 200ms
  resync_interval: 1h
logs:
  files: [%s]
  from_start: true
  timezone: UTC
sip:
  hep_listen: ""
ban:
  backend: dry-run
jail:
  state_file: %s
api:
  listen: %s
`, srv.Addr, pw, logFile, state, api)
	}
	whitelisted := func(p *daemonProc) bool { c, _ := p.get("/v1/whitelist/" + office); return c == http.StatusOK }

	// The previous run: the office is registered (listing) and its stale
	// phone has failed 4 times (maxretry 5).
	log1 := filepath.Join(dir, "run1.log")
	authFailures(t, log1, office, "1003", 4)
	prev := startReady(t, procOpts{api: api, config: config(log1)})
	waitFor(t, 5*time.Second, "the office whitelisted by the listing", func() bool { return whitelisted(prev) })
	waitFor(t, 5*time.Second, "the 4 failures read", func() bool {
		return prev.metric("sipwarden_offenses_total", "rule=auth_failure") >= 4
	})
	prev.stop()
	if b, err := os.ReadFile(state); err != nil || !strings.Contains(string(b), office) {
		t.Fatalf("the previous run left no state for the office: %v %s", err, b)
	}

	// The restart: FreeSWITCH holds the first listing back until released.
	release := make(chan struct{})
	srv.SetHandler(func(cmd string) (string, bool) {
		if cmd != "api show registrations as json" {
			return "", false
		}
		<-release
		return "", false // the server answers the listing itself
	})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	log2 := filepath.Join(dir, "run2.log")
	authFailures(t, log2, office, "1003", 1)
	authFailures(t, log2, attacker, "admin", 5)
	p := startReady(t, procOpts{api: api, config: config(log2)})
	if !whitelisted(p) {
		t.Error("the office is not whitelisted from the state file before the first listing")
	}
	waitFor(t, 5*time.Second, "the failures read", func() bool {
		return p.metric("sipwarden_offenses_total", "rule=auth_failure") >= 6
	})
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		bans := p.bans()
		if _, ok := bans[office]; ok {
			t.Fatal("the registered office was banned right after the restart")
		}
		if _, ok := bans[attacker]; ok {
			t.Fatal("an automatic ban was applied before the first registration listing")
		}
		time.Sleep(50 * time.Millisecond)
	}

	close(release)
	waitFor(t, 5*time.Second, "the attacker banned once the listing arrived", func() bool {
		_, ok := p.bans()[attacker]
		return ok
	})
	if _, ok := p.bans()[office]; ok {
		t.Error("the registered office was banned after the listing")
	}
	if got := p.metric("sipwarden_ban_skipped_total", "reason=registered"); got < 1 {
		t.Errorf(`sipwarden_ban_skipped_total{reason="registered"} = %v`, got)
	}
}
