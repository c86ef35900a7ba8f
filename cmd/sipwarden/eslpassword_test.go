package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
)

// TestESLPasswordRefused: a wrong Event Socket password is one clear line
// naming esl.password_file, then quiet retries — not a "connection lost"
// loop — and /readyz says why.
func TestESLPasswordRefused(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	srv.SetRegistrations(esltest.NoRegistrations)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "esl.password"), []byte("wrong\n"), 0o600)
	addr := freePort(t)
	cfg := filepath.Join(dir, "sipwarden.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`esl:
  address: %s
  password_file: %s/esl.password
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
`, srv.Addr, dir, dir, addr)), 0o600)
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
	auths := func() int {
		n := 0
		for _, c := range srv.Commands() {
			if strings.HasPrefix(c, "auth ") {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for auths() < 6 { // several refused attempts
		select {
		case err := <-exited:
			t.Fatalf("daemon exited: %v\n%s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d auth attempts in 10s\n%s", auths(), stderr.String())
		}
	}
	log := stderr.String()
	if n := strings.Count(log, "password refused: check esl.password_file"); n != 1 {
		t.Errorf("%d 'password refused' lines, want 1:\n%s", n, log)
	}
	if strings.Contains(log, "connection lost") {
		t.Errorf("a refused password reported as a lost connection:\n%s", log)
	}
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	body.Write(buf[:n])
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body.String(), "password refused") || !strings.Contains(body.String(), "esl.password_file") {
		t.Errorf("/readyz = %d %s", resp.StatusCode, body.String())
	}
}
