package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
