package jail

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
)

type protector struct {
	mu  sync.Mutex
	got []offense.Offense
	pol Policy
}

func (p *protector) Protected(o offense.Offense, pol Policy) {
	p.mu.Lock()
	p.got = append(p.got, o)
	p.pol = pol
	p.mu.Unlock()
}

// The jail hands the offenses of a registered address to Protect (from the
// crossing on, each one, with the mapping and the policy in force); never
// those of a static or never-ban address, nor of one it bans.
func TestProtectorGetsRegisteredOffenses(t *testing.T) {
	al := allow{netip.MustParseAddr("203.0.113.10"): "registered", netip.MustParseAddr("203.0.113.11"): "static"}
	p := &protector{}
	e := newEnv(t, Options{Allowlist: al, Protect: p, Bantime: 2 * time.Hour})
	for _, ip := range []string{"203.0.113.10", "203.0.113.11", "198.51.100.1", "127.0.0.1"} {
		for i := range 7 {
			e.j.Offend(offense.Offense{IP: netip.MustParseAddr(ip), Port: 40004, Transport: offense.TransportUDP,
				Rule: offense.AuthFailure, Source: offense.SourceESL, Time: t0.Add(time.Duration(i) * time.Second), User: "1004", Verified: true})
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.got) != 3 { // the 5th, 6th and 7th: from the crossing on
		t.Fatalf("protector got %d offenses, want 3: %+v", len(p.got), p.got)
	}
	for _, o := range p.got {
		if o.IP != netip.MustParseAddr("203.0.113.10") || o.Port != 40004 || o.Transport != offense.TransportUDP {
			t.Errorf("handed %+v", o)
		}
	}
	if p.pol.Bantime != 2*time.Hour || p.pol.Factor != 2 {
		t.Errorf("policy %+v", p.pol)
	}
	if !e.banned("198.51.100.1") {
		t.Error("stranger not banned")
	}
}

type targetsRec struct {
	mu  sync.Mutex
	got []offense.Offense
}

func (r *targetsRec) Failure(o offense.Offense) { r.mu.Lock(); r.got = append(r.got, o); r.mu.Unlock() }

// Targets gets every credential failure naming a user, of any address
// (protected, stranger, banned), unmapped; never other rules.
func TestTargetsGetCredentialFailures(t *testing.T) {
	rec := &targetsRec{}
	e := newEnv(t, Options{Allowlist: allow{netip.MustParseAddr("203.0.113.10"): "registered"}, Targets: rec})
	for i := range 7 {
		e.offend("203.0.113.10", offense.AuthFailure, time.Duration(i)*time.Second)
		e.offend("198.51.100.1", offense.UnknownUser, time.Duration(i)*time.Second)
		e.offend("198.51.100.2", offense.ScannerUserAgent, time.Duration(i)*time.Second)
	}
	e.j.Offend(offense.Offense{IP: netip.MustParseAddr("::ffff:198.51.100.3"), Rule: offense.AuthFailure, User: "1009", Time: t0})
	e.j.Offend(offense.Offense{IP: netip.MustParseAddr("198.51.100.4"), Rule: offense.AuthFailure, Time: t0}) // no user
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.got) != 15 {
		t.Fatalf("targets got %d failures, want 15", len(rec.got))
	}
	if last := rec.got[14]; last.IP != netip.MustParseAddr("198.51.100.3") || last.User != "1009" {
		t.Errorf("last %+v", last)
	}
}
