package main

import (
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestUnreferencedBanSets: the README's order — start sipwarden, then load
// examples/firewall/. Until the rules are there the daemon says once that
// its bans drop nothing (log, metric, /readyz note, ready stays 200 without
// FreeSWITCH), and says so again when the rules arrive; the example files
// load after the daemon created the sets.
func TestUnreferencedBanSets(t *testing.T) {
	ns := newNS(t)
	_, stderr, exited := startInNS(t, ns, "SIPWARDEN_ESL_DISABLED=true", "SIPWARDEN_BAN_RESYNC_INTERVAL=200ms")
	waitLog := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(stderr.String(), want) {
			select {
			case e := <-exited:
				t.Fatalf("daemon exited: %v\n%s", e, stderr.String())
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %q in\n%s", want, stderr.String())
			}
		}
	}
	waitLog("no firewall rule references the ban sets")
	time.Sleep(time.Second) // five resyncs: still one line
	if n := strings.Count(stderr.String(), "no firewall rule references"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, stderr.String())
	}
	code, body, err := getInNS(t, ns, "http://127.0.0.1:9091/readyz")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "no firewall rule references sipwarden4,sipwarden6") {
		t.Fatalf("/readyz = %d %s %v", code, body, err)
	}
	_, body, _ = getInNS(t, ns, "http://127.0.0.1:9091/metrics")
	if !strings.Contains(body, `sipwarden_ban_set_unreferenced{set="sipwarden6"} 1`) {
		t.Fatalf("metric missing:\n%s", grepLines(body, "unreferenced"))
	}

	sh := func(script string) {
		t.Helper()
		if out, err := exec.Command("ip", "netns", "exec", ns, "sh", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", script, err, out)
		}
	}
	sh("ipset restore -exist < ../../examples/firewall/ipset.conf && iptables-restore -n < ../../examples/firewall/iptables.rules && ip6tables-restore -n < ../../examples/firewall/ip6tables.rules")
	waitLog("ban sets referenced by firewall rules")
	code, body, err = getInNS(t, ns, "http://127.0.0.1:9091/readyz")
	if err != nil || code != http.StatusOK || strings.Contains(body, "references") {
		t.Fatalf("/readyz after the rules = %d %s %v", code, body, err)
	}
	_, body, _ = getInNS(t, ns, "http://127.0.0.1:9091/metrics")
	if !strings.Contains(body, `sipwarden_ban_set_unreferenced{set="sipwarden4"} 0`) || !strings.Contains(body, `sipwarden_ban_set_unreferenced{set="sipwarden6"} 0`) {
		t.Fatalf("metric after the rules:\n%s", grepLines(body, "unreferenced"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
