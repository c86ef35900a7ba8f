package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/daemon"
	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
)

// frame returns the first event frame of a fixture stream whose subclass is sub.
func frame(t *testing.T, fixture, sub string) string {
	t.Helper()
	frames, err := esltest.EventFrames(esltest.Fixture(t, fixture))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if strings.Contains(f, "Event-Subclass: sofia%3A%3A"+sub+"\n") {
			return f
		}
	}
	t.Fatalf("%s: no sofia::%s frame", fixture, sub)
	return ""
}

// reframe rewrites a frame's body and fixes its Content-Length.
func reframe(t *testing.T, f string, repl ...string) string {
	t.Helper()
	head, body, ok := strings.Cut(f, "\n\n")
	if !ok || !strings.Contains(head, "text/event-plain") {
		t.Fatalf("not an event-plain frame: %q", head)
	}
	return esltest.EventPlain(strings.NewReplacer(repl...).Replace(body))
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestCheckAgainstRunningDaemon is issue 3's "done when": a daemon fed by an
// Event Socket that speaks like the fixtures; `sipwarden check` answers 0
// for a registered IP and 1 once its last registration has left.
func TestCheckAgainstRunningDaemon(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	srv.SetRegistrations(esltest.NoRegistrations)

	cfg := config.Default()
	cfg.ESL.Address = srv.Addr
	cfg.Ban.Backend = config.BackendDryRun
	cfg.API.Listen = "127.0.0.1:0"
	cfg.SIP.HEPListen = "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(cfg, daemon.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	srv.WaitSubscribed(1, 5*time.Second)
	apiURL := "http://" + d.APIAddr().String()
	check := func(ip string) int {
		return exitCode(exec.Command(binary, "check", "-q", "-api", apiURL, ip).Run())
	}

	const office = "203.0.113.10"
	if got := check(office); got != 1 {
		t.Fatalf("before registering: check = %d, want 1", got)
	}
	// Two phones behind one NAT register (the fixture's REGISTER event with
	// the address and call-ids changed).
	reg := frame(t, "B_logauthfail_true_esl_custom_sofia_events.raw.txt", "register")
	for i, callID := range []string{"phone-a", "phone-b"} {
		port := fmt.Sprint(5060 + i)
		if err := srv.Push(reframe(t, reg, "network-ip: 127.0.0.1", "network-ip: "+office, "call-id: 1-10661%40127.0.0.1", "call-id: "+callID,
			"15060", port)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return check(office) == 0 }, "office whitelisted")
	if got := check("198.51.100.23"); got != 1 {
		t.Errorf("stranger: check = %d, want 1", got)
	}
	unreg := frame(t, "A_vanilla_esl_custom_sofia_events.raw.txt", "unregister")
	push := func(callID, port string) {
		if err := srv.Push(reframe(t, unreg, "network-ip: 127.0.0.1", "network-ip: "+office, "call-id: 1-10333%40127.0.0.1", "call-id: "+callID, "15060", port)); err != nil {
			t.Fatal(err)
		}
	}
	push("phone-a", "5060")
	// One phone left: the office stays whitelisted. Wait until the event is
	// surely applied by sending a marker registration for another IP.
	if err := srv.Push(reframe(t, reg, "network-ip: 127.0.0.1", "network-ip: 192.0.2.99")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return check("192.0.2.99") == 0 }, "marker whitelisted")
	if got := check(office); got != 0 {
		t.Fatalf("after one of two unregistered: check = %d, want 0", got)
	}
	push("phone-b", "5061")
	waitFor(t, func() bool { return check(office) == 1 }, "office no longer whitelisted")
	if got := check("not-an-ip"); got != 2 {
		t.Errorf("bad address: check = %d, want 2", got)
	}
	out, _ := exec.Command(binary, "check", "-api", apiURL, "192.0.2.99").CombinedOutput()
	if !strings.Contains(string(out), "whitelisted (registered, 1 live registrations)") {
		t.Errorf("check output: %q", out)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for: %s", what)
}
