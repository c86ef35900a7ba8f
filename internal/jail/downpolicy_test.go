package jail

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// esl.down_policy: hold. While the registration source is down (after the
// first sync), credential-class crossings wait — an office's phones whose
// registrations the whitelist can no longer refresh must not be banned for
// a password failure — while a scanner still is; when it is back the held
// crossings are decided against the whitelist it refreshed.
func TestHoldCredentialsWhileSourceDown(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	al := allow{}
	e := newEnv(t, Options{Allowlist: al, HoldCredentials: down.Load})
	for i := range 6 {
		at := time.Duration(i) * time.Second
		e.offend("203.0.113.10", offense.AuthFailure, at) // the office, registration not refreshed
		e.offend("203.0.113.66", offense.UnknownUser, at) // a guesser
		e.offend("198.51.100.9", offense.ScannerUserAgent, at)
	}
	e.flush()
	if !e.banned("198.51.100.9") {
		t.Fatalf("scanner not banned while the source is down: %+v", e.j.Bans())
	}
	if e.banned("203.0.113.10") || e.banned("203.0.113.66") {
		t.Fatalf("credential-class ban applied while the source is down: %+v", e.j.Bans())
	}
	if s := e.state("203.0.113.66").Score; s < 5 {
		t.Fatalf("scores must still accumulate: %v", s)
	}
	// a release attempt while still down keeps them held
	e.j.releaseHeld()
	e.flush()
	if len(e.j.Bans()) != 1 {
		t.Fatalf("released while down: %+v", e.j.Bans())
	}
	// back: the refreshed whitelist knows the office
	al[netip.MustParseAddr("203.0.113.10")] = "registered"
	down.Store(false)
	e.j.releaseHeld() // what Run's sweep does
	e.flush()
	if !e.banned("203.0.113.66") {
		t.Fatalf("held guesser not banned once the source is back: %+v", e.j.Bans())
	}
	if e.banned("203.0.113.10") {
		t.Fatal("registered office banned")
	}
	// enforce (no HoldCredentials): the old behaviour, at once
	e2 := newEnv(t, Options{})
	for i := range 5 {
		e2.offend("203.0.113.77", offense.AuthFailure, time.Duration(i)*time.Second)
	}
	if !e2.banned("203.0.113.77") {
		t.Fatalf("enforce: %+v", e2.j.Bans())
	}
}
