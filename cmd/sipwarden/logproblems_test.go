package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/testenv"
)

// TestLogFileProblems: an unreadable log and a directory given as a log
// path are each one clear ERROR line at start, a /readyz note and
// sipwarden_log_files_unreadable, then quiet retries (no WARN every poll,
// no bogus copytruncate); a file made readable is picked up. The daemon
// runs as nobody, so permissions apply.
func TestLogFileProblems(t *testing.T) {
	testenv.Root(t)
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755) // t.TempDir makes both 0700
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "sipwarden")
	b, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, b, 0o755)
	secret := filepath.Join(dir, "freeswitch.log")
	os.WriteFile(secret, []byte("x\n"), 0o600) // root's: nobody cannot read it
	logdir := filepath.Join(dir, "log")
	os.Mkdir(logdir, 0o755)
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o777)
	addr := freePort(t)
	cfg := filepath.Join(dir, "sipwarden.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`esl:
  disabled: true
sip:
  hep_listen: ""
jail:
  state_file: %s/state.json
ban:
  backend: dry-run
api:
  listen: %s
logs:
  files: [%s, %s]
  poll_interval: 20ms
`, state, addr, secret, logdir)), 0o644)
	cmd := exec.Command(bin, "run", "-config", cfg)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
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
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	waitFor := func(path, want string) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
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
	waitFor("/metrics", "sipwarden_log_files_unreadable 2")
	code, body := get("/readyz")
	if code != http.StatusOK || !strings.Contains(body, secret+": cannot read: permission denied") || !strings.Contains(body, logdir+": is a directory") {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	time.Sleep(500 * time.Millisecond) // 25 polls: still one line each
	log := stderr.String()
	for want, n := range map[string]int{"cannot read log file": 1, "log path is a directory": 1, "copytruncate": 0, "read log file\"": 0} {
		if got := strings.Count(log, want); got != n {
			t.Errorf("%d lines with %q, want %d:\n%s", got, want, n, log)
		}
	}
	if !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "freeswitch group") {
		t.Errorf("the permission line gives no hint:\n%s", log)
	}
	// fixed: picked up at the next poll, the note and gauge follow
	os.Chmod(secret, 0o644)
	waitFor("/metrics", "sipwarden_log_files_unreadable 1")
	if _, body := get("/readyz"); strings.Contains(body, secret) {
		t.Errorf("/readyz still names the readable file: %s", body)
	}
}

// TestStateDirMissing: a jail.state_file in a directory that does not
// exist is one ERROR line at start (not found at stop, with the history
// lost), a /readyz note and sipwarden_state_file_writable 0.
func TestStateDirMissing(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	cfg := filepath.Join(dir, "sipwarden.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`esl:
  disabled: true
sip:
  hep_listen: ""
jail:
  state_file: %s/missing/state.json
ban:
  backend: dry-run
api:
  listen: %s
`, dir, addr)), 0o600)
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
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("daemon exited: %v\n%s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not answering\n%s", stderr.String())
		}
	}
	if !strings.Contains(body, "state: jail.state_file "+dir+"/missing/state.json: directory "+dir+"/missing does not exist") {
		t.Errorf("/readyz: %s", body)
	}
	log := stderr.String()
	if strings.Count(log, "jail.state_file cannot be written") != 1 || !strings.Contains(log, "level=ERROR") {
		t.Errorf("want one ERROR line at start:\n%s", log)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), "sipwarden_state_file_writable 0") {
		t.Errorf("metric: %s", grepLines(string(m), "state_file"))
	}
}
