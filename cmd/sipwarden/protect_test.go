package main

import (
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
)

// TestProtectedOfficeAgainstKernel: the real binary with the shipped
// defaults (ipset backend, install_rule) in a namespace, fed by an Event
// Socket speaking like the fixtures. An office with three phones
// registered on three source ports and a fourth phone failing with a stale
// password on a fourth port: only the fourth mapping reaches the
// quarantine set, the office address never reaches the ban set, and the
// fourth phone's registration lifts the quarantine at once.
func TestProtectedOfficeAgainstKernel(t *testing.T) {
	ns := newNS(t)
	// The Event Socket server listens inside the namespace: a socket
	// belongs to the namespace of the thread that opened it.
	srvc := make(chan *esltest.Server, 1)
	go func() {
		runtime.LockOSThread() // left in ns and discarded
		h, err := netns.GetFromName(ns)
		if err == nil {
			err = netns.Set(h)
		}
		if err != nil {
			t.Error(err)
			srvc <- nil
			return
		}
		srvc <- esltest.NewServer(t, "ClueCon")
	}()
	srv := <-srvc
	if srv == nil {
		t.FailNow()
	}
	srv.SetRegistrations(esltest.NoRegistrations)
	cmd, stderr, exited := startInNS(t, ns, "SIPWARDEN_ESL_ADDRESS="+srv.Addr, "SIPWARDEN_SIP_HEP_LISTEN=",
		"SIPWARDEN_BAN_INSTALL_RULE=true")
	ipset := func(set string) string {
		out, _ := exec.Command("ip", "netns", "exec", ns, "ipset", "list", set).CombinedOutput()
		return string(out)
	}
	wait := func(cond func() bool, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			select {
			case e := <-exited:
				t.Fatalf("daemon exited: %v\n%s", e, stderr.String())
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\n%s", what, stderr.String())
			}
		}
	}
	srv.WaitSubscribed(1, 10*time.Second)
	// After the first resync: the fake server's listing is empty, and a
	// listing replaces what events taught before it (FreeSWITCH's own
	// listing would hold the phones).
	wait(func() bool { return strings.Contains(stderr.String(), "registrations synced") }, "the first resync")

	const office = "203.0.113.10"
	reg := frame(t, "A_vanilla_esl_custom_sofia_events.raw.txt", "register")
	register := func(user, port string) {
		t.Helper()
		if err := srv.Push(reframe(t, reg, "network-ip: 127.0.0.1", "network-ip: "+office,
			"call-id: 1-9887%40127.0.0.1", "call-id: phone-"+user+"-"+port, "1000", user, "15060", port)); err != nil {
			t.Fatal(err)
		}
	}
	for i, port := range []string{"41001", "41002", "41003"} {
		register("100"+string(rune('1'+i)), port)
	}
	fail := frame(t, "A_vanilla_esl_custom_sofia_events.raw.txt", "register_failure")
	for range 6 {
		if err := srv.Push(reframe(t, fail, "network-ip: 127.0.0.1", "network-ip: "+office,
			"to-user: 1001", "to-user: 1004", "network-port: 15061", "network-port: 41004")); err != nil {
			t.Fatal(err)
		}
	}
	wait(func() bool { return strings.Contains(ipset("sipwarden4q"), office+",udp:41004") }, "the fourth mapping quarantined")
	q := ipset("sipwarden4q")
	if !strings.Contains(q, office+",tcp:41004") || strings.Count(q, office+",") != 2 {
		t.Fatalf("quarantine set: want the fourth mapping only (udp and tcp):\n%s", q)
	}
	if b := ipset("sipwarden4"); strings.Contains(b, office) {
		t.Fatalf("the office is in the ban set:\n%s", b)
	}
	if th := ipset("sipwarden4t"); strings.Contains(th, office) {
		t.Fatalf("the office is throttled for one phone:\n%s", th)
	}
	rules, _ := exec.Command("ip", "netns", "exec", ns, "iptables", "-S", "INPUT").CombinedOutput()
	for _, want := range []string{"--match-set sipwarden4q src,src", "--match-set sipwarden4t src -m hashlimit"} {
		if !strings.Contains(string(rules), want) {
			t.Errorf("rule %q missing:\n%s", want, rules)
		}
	}
	// Who is failing, and the verdicts, through the API and the CLI.
	code, body, err := getInNS(t, ns, "http://127.0.0.1:9091/v1/protected")
	if err != nil || code != 200 || !strings.Contains(body, `"user": "1004"`) || !strings.Contains(body, `"port": 41004`) ||
		!strings.Contains(body, `"state": "quarantined"`) {
		t.Errorf("GET /v1/protected: %d %v\n%s", code, err, body)
	}
	if _, body, _ := getInNS(t, ns, "http://127.0.0.1:9091/v1/offenders"); !strings.Contains(body, `"state": "quarantined"`) {
		t.Errorf("GET /v1/offenders: want the office quarantined:\n%s", body)
	}
	out, _ := exec.Command("ip", "netns", "exec", ns, binary, "check", "-api", "http://127.0.0.1:9091", office).CombinedOutput()
	if !strings.Contains(string(out), "whitelisted (registered") || !strings.Contains(string(out), office+" quarantined") {
		t.Errorf("sipwarden check: %q", out)
	}
	// The phone gets its password back and registers (a new NAT mapping).
	register("1004", "41005")
	wait(func() bool { return !strings.Contains(ipset("sipwarden4q"), office) }, "the quarantine lifted by the registration")

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no exit within 5 s of SIGTERM")
	}
	if out, _ := exec.Command("ip", "netns", "exec", ns, "iptables", "-S", "INPUT").CombinedOutput(); strings.Contains(string(out), "match-set") {
		t.Errorf("rules left after stop:\n%s", out)
	}
}
