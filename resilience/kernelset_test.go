package resilience_test

import (
	"strings"
	"testing"
	"time"
)

// TestAdminFlushesAndDestroysSets: an admin empties or deletes the kernel
// sets under the running daemon (ban.resync_interval: 1s). The resync puts
// every active ban back and recreates the sets within a few periods, and
// /metrics says so.
func TestAdminFlushesAndDestroysSets(t *testing.T) {
	t.Parallel()
	ns := newNS(t)
	p := startReady(t, procOpts{ns: ns, api: "127.0.0.1:9091", config: `
esl:
  disabled: true
sip:
  hep_listen: ""
ban:
  resync_interval: 1s
api:
  listen: 127.0.0.1:9091
`})
	bans := map[string]string{"198.51.100.1": "sipwarden4", "203.0.113.77": "sipwarden4", "2001:db8::bad": "sipwarden6"}
	for ip := range bans {
		p.ban(ip, "1h", "resilience")
	}
	all := func() bool {
		for ip, set := range bans {
			if !inSet(ns, set, ip) {
				return false
			}
		}
		return true
	}
	if !all() {
		t.Fatal("bans not in the kernel after POST /v1/bans")
	}
	const within = 5 * time.Second // a few resync periods

	readded := p.metric("sipwarden_ban_readded_total")
	// Flush and look in one process: the 1 s resync must not refill the set
	// between the two.
	if out := run(t, "ip", "netns", "exec", ns, "sh", "-c", "ipset flush sipwarden4 && ipset list sipwarden4"); strings.Contains(out, "198.51.100.1") {
		t.Fatalf("flush did not empty the set:\n%s", out)
	}
	took := waitFor(t, within, "bans back after ipset flush", all)
	t.Logf("flush: bans back after %v", took.Round(time.Millisecond))
	if got := p.metric("sipwarden_ban_readded_total") - readded; got < 2 {
		t.Errorf("sipwarden_ban_readded_total moved by %v after the flush, want >= 2", got)
	}

	readded = p.metric("sipwarden_ban_readded_total")
	recreated := p.metric("sipwarden_ban_set_recreated_total")
	// The ban sets only: the quarantine and throttle sets are referenced by
	// nothing here and stay.
	if out := run(t, "ip", "netns", "exec", ns, "sh", "-c", "ipset destroy sipwarden4 && ipset destroy sipwarden6 && ipset list -n"); strings.Contains(out, "sipwarden4\n") || strings.Contains(out, "sipwarden6\n") {
		t.Fatalf("ban sets still there after destroy: %s", out)
	}
	took = waitFor(t, within, "sets recreated and bans back after ipset destroy", all)
	t.Logf("destroy: sets and bans back after %v", took.Round(time.Millisecond))
	if got := p.metric("sipwarden_ban_set_recreated_total") - recreated; got != 2 {
		t.Errorf("sipwarden_ban_set_recreated_total moved by %v, want 2", got)
	}
	if got := p.metric("sipwarden_ban_readded_total") - readded; got < 3 {
		t.Errorf("sipwarden_ban_readded_total moved by %v after the destroy, want >= 3", got)
	}
	// The recreated set keeps the daemon's timeouts (not permanent entries).
	if out := run(t, "ip", "netns", "exec", ns, "ipset", "list", "sipwarden4"); !strings.Contains(out, "198.51.100.1 timeout ") {
		t.Errorf("re-added entry without a timeout:\n%s", out)
	}
	if code, body := p.get("/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s after the repair", code, body)
	}
	if len(p.bans()) != len(bans) {
		t.Errorf("/v1/bans = %v, want the %d bans", p.bans(), len(bans))
	}
}
