package whitelist

import (
	"net/netip"
	"testing"
	"time"
)

// view asks every question the whitelist answers about ip at the clock's
// current reading and fails the test unless they agree; it returns the
// common answer.
func view(t *testing.T, w *Whitelist, c *clock, a netip.Addr) bool {
	t.Helper()
	_, allowed := w.Allowed(a)
	_, at := w.AllowedAt(a, c.Now())
	_, looked := w.Lookup(a)
	n := w.Registrations(a)
	reg := w.Registered(netip.PrefixFrom(a, a.BitLen()))
	listed := false
	for _, e := range w.Entries() {
		listed = listed || e.IP == a && len(e.Registrations) > 0
	}
	if allowed != at || allowed != looked || allowed != (n > 0) || allowed != reg || allowed != listed {
		t.Fatalf("%s at %v: Allowed %v, AllowedAt %v, Lookup %v, Registrations %d, Registered /%d %v, Entries %v",
			a, c.Now().UTC(), allowed, at, looked, n, a.BitLen(), reg, listed)
	}
	return allowed
}

// TestClockSteps is issue 11 item 4: after a wall-clock step back the old
// whitelist's latched clock said "not registered" for a phone that had just
// registered, while Lookup said it was. Expiries are absolute wall-clock
// instants (as in FreeSWITCH), every question reads the clock afresh, and
// protection follows the clock in both directions.
func TestClockSteps(t *testing.T) {
	c := newClock()
	t0 := c.Now()
	w, _ := newWL(t, c)
	a := reg1000(c, "192.0.2.10") // expires t0+1h
	w.Upsert(a)
	if !view(t, w, c, a.IP) {
		t.Fatal("a not protected after registering")
	}

	// NTP steps the clock back two hours.
	c.Add(-2 * time.Hour)
	if !view(t, w, c, a.IP) {
		t.Fatal("a lost its protection after a step back")
	}
	b := reg1000(c, "192.0.2.11") // registered now: expires t0-1h
	b.CallID, b.User = "b", "1001"
	w.Upsert(b)
	if !view(t, w, c, b.IP) {
		t.Fatal("a phone registered after a step back is not protected (the latched-clock bug)")
	}
	w.Sweep() // nothing is due
	if !view(t, w, c, a.IP) || !view(t, w, c, b.IP) {
		t.Fatal("the sweep after a step back dropped live registrations")
	}

	// The clock steps forward again, past b's expiry but inside a's.
	c.Add(2*time.Hour + 30*time.Minute) // t0+30m
	if !view(t, w, c, a.IP) {
		t.Fatal("a not protected inside its lifetime after a step forward")
	}
	if view(t, w, c, b.IP) {
		t.Fatal("b protected past its expiry+grace")
	}
	// To the edge of a's grace, and over it.
	c.Add(t0.Add(time.Hour + DefaultGrace - time.Nanosecond).Sub(c.Now()))
	if !view(t, w, c, a.IP) {
		t.Fatal("a expired inside the grace period")
	}
	c.Add(time.Nanosecond)
	if view(t, w, c, a.IP) {
		t.Fatal("a protected at expiry+grace")
	}
	if n := w.Sweep(); n != 2 {
		t.Fatalf("swept %d, want 2", n)
	}
	// A registration that starts after the step forward is protected.
	d := reg1000(c, "192.0.2.12")
	d.CallID, d.User = "d", "1002"
	w.Upsert(d)
	if !view(t, w, c, d.IP) {
		t.Fatal("a phone registered after a step forward is not protected")
	}
}
