package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
)

// TestESLDownHoldsCredentialBans: esl.down_policy: hold (the default).
// Once synced, the Event Socket server stops; auth failures from one
// address then reach the ban threshold, and the ban is held (scored, not
// applied) — /readyz says so, sipwarden_esl_credential_bans_held is 1 —
// because the offices' registrations can no longer be refreshed. When the
// Event Socket is back and synced the held ban is decided at once.
func TestESLDownHoldsCredentialBans(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	srv.SetRegistrations(esltest.NoRegistrations)
	dir := t.TempDir()
	logf := filepath.Join(dir, "freeswitch.log")
	os.WriteFile(logf, nil, 0o644)
	addr := freePort(t)
	cfg := filepath.Join(dir, "sipwarden.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`esl:
  address: %s
  backoff_min: 20ms
  backoff_max: 100ms
sip:
  hep_listen: ""
jail:
  state_file: %s/state.json
ban:
  backend: dry-run
api:
  listen: %s
  token_file: %s/api.token
logs:
  files: [%s]
  poll_interval: 20ms
`, srv.Addr, dir, addr, dir, logf)), 0o600)
	cmd := exec.Command(binary, "run", "-config", cfg)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stderr := &syncBuf{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	get := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		if tok, err := os.ReadFile(filepath.Join(dir, "api.token")); err == nil {
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor := func(path, want string) string {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			_, body := get(path)
			if strings.Contains(body, want) {
				return body
			}
			select {
			case err := <-exited:
				t.Fatalf("daemon exited: %v\n%s", err, stderr.String())
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no %q in %s\n%s", path, want, body, stderr.String())
			}
		}
	}
	waitFor("/readyz", `"ready": true`)
	waitFor("/metrics", "sipwarden_esl_credential_bans_held 0")
	// FreeSWITCH's Event Socket goes away: connections cut, new ones refused
	srv.SetAuthMode(esltest.AuthRude)
	srv.Drop()
	body := waitFor("/readyz", "credential-class bans held")
	if !strings.Contains(body, `"ready": false`) {
		t.Errorf("/readyz: %s", body)
	}
	waitFor("/metrics", "sipwarden_esl_credential_bans_held 1")

	f, err := os.OpenFile(logf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		ts := time.Now().Add(time.Duration(i-8) * time.Second).Format("2006-01-02 15:04:05.000000")
		fmt.Fprintf(f, "%s [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [100%d@127.0.0.1] from ip 203.0.113.66\n", ts, i)
	}
	f.Close()
	waitFor("/metrics", "sipwarden_jail_held_total 1")
	if _, bans := get("/v1/bans"); strings.Contains(bans, "203.0.113.66") {
		t.Fatalf("credential ban applied while the Event Socket is down: %s", bans)
	}
	if _, offenders := get("/v1/offenders"); !strings.Contains(offenders, "203.0.113.66") {
		t.Errorf("the address is not scored: %s", offenders)
	}
	// back: the held crossing is decided within seconds (not at the 30 s sweep)
	srv.SetAuthMode(esltest.AuthCheck)
	start := time.Now()
	waitFor("/v1/bans", "203.0.113.66")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("held ban decided %v after the Event Socket came back", d)
	}
	waitFor("/metrics", "sipwarden_esl_credential_bans_held 0")
}
