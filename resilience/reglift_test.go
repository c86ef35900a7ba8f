package resilience_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
)

// TestRegistrationLiftsCredentialBan: a phone with a stale password is
// banned in the kernel by its register failures (FreeSWITCH's own word);
// its user fixes the password and the phone registers. The sofia::register
// event lifts the kernel entry at once (within 1 s; the resync runs hourly
// here, so it cannot be what lifts it). A manual ban on another address
// that then registers stays: an operator's ban is not credential evidence.
func TestRegistrationLiftsCredentialBan(t *testing.T) {
	t.Parallel()
	const (
		pw     = "reglift-Pw-8812"
		phone  = "198.51.100.33"
		manual = "198.51.100.34"
	)
	ns := newNS(t)
	srv := eslIn(t, ns, pw)
	api := "127.0.0.1:9093"
	p := startReady(t, procOpts{ns: ns, api: api, config: fmt.Sprintf(`
esl:
  address: %s
  password: %s
  resync_interval: 1h
sip:
  hep_listen: ""
ban:
  resync_interval: 1h
api:
  listen: %s
`, srv.Addr, pw, api)})
	srv.WaitSubscribed(1, 5*time.Second)
	waitFor(t, 5*time.Second, "/readyz 200", func() bool { c, _ := p.get("/readyz"); return c == 200 })

	for range 8 {
		if err := srv.Push(esltest.RegisterFailureEvent(t, phone, "1005", "REGISTER")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "the stale phone banned in the kernel", func() bool { return inSet(ns, "sipwarden4", phone) })
	p.ban(manual, "1h", "by hand")
	waitFor(t, 5*time.Second, "the manual ban in the kernel", func() bool { return inSet(ns, "sipwarden4", manual) })

	if err := srv.Push(esltest.RegisterEvent(t, phone, "1005", "reglift-1@office", 3600)); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, time.Second, "the kernel entry lifted by the registration", func() bool { return !inSet(ns, "sipwarden4", phone) })
	t.Logf("lifted %v after the register event", took.Round(time.Millisecond))
	if _, banned := p.bans()[phone]; banned {
		t.Error("the API still lists the lifted ban")
	}
	if got := p.metric("sipwarden_bans_lifted_on_registration_total"); got != 1 {
		t.Errorf("sipwarden_bans_lifted_on_registration_total = %v, want 1", got)
	}

	if err := srv.Push(esltest.RegisterEvent(t, manual, "1006", "reglift-2@office", 3600)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the second phone whitelisted", func() bool { c, _ := p.get("/v1/whitelist/" + manual); return c == 200 })
	if !inSet(ns, "sipwarden4", manual) {
		t.Error("a registration lifted a manual ban")
	}
}
