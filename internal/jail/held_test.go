package jail

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/offense"
)

// Regression (issue 11 item 3): right after a restart the whitelist is
// empty until the first registration listing; one failure then banned a
// registered office. Crossings wait for RegistrationsSynced.
func TestNoAutomaticBanBeforeRegistrationsSynced(t *testing.T) {
	synced := make(chan struct{})
	al := allow{}
	e := newEnv(t, Options{Allowlist: al, RegistrationsSynced: synced})
	for i := range 6 {
		e.offend("203.0.113.10", offense.AuthFailure, time.Duration(i)*time.Second) // the office, not yet known
		e.offend("203.0.113.66", offense.AuthFailure, time.Duration(i)*time.Second) // an attacker
	}
	e.flush()
	if len(e.j.Bans()) != 0 || e.fw.Len() != 0 {
		t.Fatalf("banned before the registrations were synced: %+v", e.j.Bans())
	}
	if s := e.state("203.0.113.66").Score; s < 5 {
		t.Fatalf("scores must still accumulate: %v", s)
	}
	if got := testutil.ToFloat64(e.j.m.held); got != 2 {
		t.Fatalf("jail_held_total = %v, want 2 (once per address)", got)
	}
	// manual bans are not held
	if err := e.j.Ban(context.Background(), netip.MustParseAddr("198.51.100.7"), time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	// the listing arrives: the office is registered; then the sync closes
	al[netip.MustParseAddr("203.0.113.10")] = "registered"
	close(synced)
	e.offend("198.51.100.200", offense.AuthFailure, 10*time.Second) // the first offense after the close decides the held ones
	e.flush()
	if !e.banned("203.0.113.66") || !e.fw.Contains(netip.MustParsePrefix("203.0.113.66/32")) {
		t.Fatalf("held attacker not banned at sync: %+v", e.j.Bans())
	}
	if e.banned("203.0.113.10") || e.fw.Contains(netip.MustParsePrefix("203.0.113.10/32")) {
		t.Fatal("registered office banned")
	}
	if st := e.state("203.0.113.10"); st.State != StateProtected {
		t.Fatalf("office: %+v", st)
	}
	// from now on crossings are decided at once
	for i := range 5 {
		e.offend("203.0.113.67", offense.AuthFailure, time.Duration(20+i)*time.Second)
	}
	if !e.banned("203.0.113.67") {
		t.Fatalf("after sync: %+v", e.j.Bans())
	}
}

// Run decides the held crossings as soon as the channel closes, without
// waiting for another offense.
func TestRunDecidesHeldCrossingsAtSync(t *testing.T) {
	synced := make(chan struct{})
	fw := &signalFW{DryRun: ban.NewDryRun(ban.DryRunOptions{}), added: make(chan netip.Prefix, 16)}
	e := newEnv(t, Options{Firewall: fw, RegistrationsSynced: synced, Now: time.Now})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.j.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for range 5 {
		e.j.Offend(offense.Offense{IP: netip.MustParseAddr("203.0.113.66"), Rule: offense.AuthFailure, Time: time.Now()})
	}
	if len(e.j.Bans()) != 0 {
		t.Fatal("banned before sync")
	}
	close(synced)
	select {
	case p := <-fw.added:
		if p != netip.MustParsePrefix("203.0.113.66/32") {
			t.Fatalf("added %v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("held crossing not decided at sync: %+v", e.j.Bans())
	}
}

type extra struct {
	saved []byte
	got   []byte
	err   error
}

func (x *extra) MarshalState() ([]byte, error) { return x.saved, x.err }
func (x *extra) UnmarshalState(b []byte) error {
	x.got = append([]byte(nil), b...)
	return x.err
}

func TestStateExtraInTheStateFile(t *testing.T) {
	path := t.TempDir() + "/state.json"
	x := &extra{saved: []byte(`{"registrations":[{"ip":"203.0.113.10","expires":"2026-11-25T13:00:00Z"}]}`)}
	e := newEnv(t, Options{StateFile: path, StateExtra: x})
	e.offend("203.0.113.66", offense.AuthFailure, 0)
	if err := e.j.saveNow(); err != nil {
		t.Fatal(err)
	}
	y := &extra{}
	e2 := newEnv(t, Options{StateFile: path, StateExtra: y})
	if string(y.got) != string(x.saved) {
		t.Fatalf("extra read back %q, want %q", y.got, x.saved)
	}
	if e2.state("203.0.113.66").Offenses[offense.AuthFailure] != 1 {
		t.Fatal("offenders not read back with the extra state")
	}
	// an extra that cannot be marshalled fails the save, loudly
	x.err = errors.New("boom")
	if err := e.j.saveNow(); err == nil {
		t.Fatal("save with a failing extra succeeded")
	}
	x.err, x.saved = nil, []byte("not json")
	if err := e.j.saveNow(); err == nil {
		t.Fatal("non-JSON extra saved")
	}
	// a file written before the field existed still loads
	old, _ := json.Marshal(map[string]any{"version": stateVersion, "saved_at": t0, "offenders": []map[string]any{{"ip": "198.51.100.1", "counts": map[string]int{"auth_failure": 2}}}})
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	z := &extra{}
	e3 := newEnv(t, Options{StateFile: path, StateExtra: z})
	if z.got != nil || e3.state("198.51.100.1").Offenses[offense.AuthFailure] != 2 {
		t.Fatalf("old file: extra %q, offender %+v", z.got, e3.state("198.51.100.1"))
	}
}
