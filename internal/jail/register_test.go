package jail

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// A registration event lifts at once a ban resting on credential failures
// only; a ban with any other evidence, a manual ban, and a ban on an
// address that is not (yet) registered stay.
func TestRegisteredLiftsCredentialOnlyBans(t *testing.T) {
	cases := []struct {
		name     string
		rules    []offense.Rule
		manual   bool
		register bool // the allowlist knows the registration
		lifted   bool
	}{
		{name: "auth failures", rules: rep(offense.AuthFailure, 5), register: true, lifted: true},
		{name: "unknown users and auth failures", rules: append(rep(offense.UnknownUser, 3), rep(offense.AuthFailure, 2)...), register: true, lifted: true},
		{name: "scanner", rules: []offense.Rule{offense.ScannerUserAgent}, register: true},
		{name: "auth failures then toll fraud", rules: append(rep(offense.AuthFailure, 4), offense.TollFraudInvite), register: true},
		{name: "flood", rules: []offense.Rule{offense.Flood}, register: true},
		{name: "acl reject", rules: rep(offense.ACLReject, 5), register: true},
		{name: "not registered", rules: rep(offense.AuthFailure, 5)},
		{name: "manual", manual: true, register: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			al := allow{}
			e := newEnv(t, Options{Allowlist: al, Bantime: time.Hour})
			const ip = "198.51.100.7"
			a := netip.MustParseAddr(ip)
			for i, r := range tc.rules {
				e.offend(ip, r, time.Duration(i)*time.Second)
			}
			if tc.manual {
				if err := e.j.Ban(context.Background(), a, time.Hour, "by hand"); err != nil {
					t.Fatal(err)
				}
			}
			e.flush()
			if !e.banned(ip) || !e.fw.Contains(single(a)) {
				t.Fatalf("not banned before the registration: %+v", e.j.Bans())
			}
			if tc.register {
				al[a] = "registered"
			}
			got := e.j.Registered(context.Background(), a)
			e.flush()
			if got.IsValid() != tc.lifted || e.banned(ip) == tc.lifted || e.fw.Contains(single(a)) == tc.lifted {
				t.Fatalf("lifted %v (want %v); jail bans %+v; kernel has it: %v", got, tc.lifted, e.j.Bans(), e.fw.Contains(single(a)))
			}
			if tc.lifted {
				if s := e.state(ip).State; s != StateProtected {
					t.Errorf("state after the lift %q, want %q", s, StateProtected)
				}
				if n := testutil.ToFloat64(e.j.m.regLifted); n != 1 {
					t.Errorf("lifted counter %v", n)
				}
				if !strings.Contains(e.log.String(), "every offense was a credential failure") {
					t.Errorf("no lift line in the log:\n%s", e.log)
				}
			}
			if tc.register && !tc.lifted && !tc.manual && testutil.ToFloat64(e.j.m.regKept) != 1 {
				t.Errorf("kept counter %v", testutil.ToFloat64(e.j.m.regKept))
			}
		})
	}
}

// A registration of a phone inside a banned IPv6 prefix does not lift the
// prefix ban of another offender: the resync narrows it to the offender.
func TestRegisteredPrefixBanOfAnother(t *testing.T) {
	al := allow{}
	e := newEnv(t, Options{Allowlist: al, Bantime: time.Hour, V6Prefix: 64})
	for i := range 5 {
		e.offend("2001:db8:1:2::66", offense.AuthFailure, time.Duration(i)*time.Second)
	}
	p := netip.MustParsePrefix("2001:db8:1:2::/64")
	e.flush()
	if !e.fw.Contains(p) {
		t.Fatalf("prefix not banned: %+v", e.j.Bans())
	}
	phone := netip.MustParseAddr("2001:db8:1:2::10")
	al[phone] = "registered"
	if got := e.j.Registered(context.Background(), phone); got.IsValid() {
		t.Fatalf("lifted %v: the offender is not the phone", got)
	}
	e.flush()
	if err := e.j.resync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e.fw.Contains(p) || !e.fw.Contains(single(netip.MustParseAddr("2001:db8:1:2::66"))) {
		t.Fatalf("after the resync: prefix %v, offender %v", e.fw.Contains(p), e.fw.Contains(single(netip.MustParseAddr("2001:db8:1:2::66"))))
	}
}

func rep(r offense.Rule, n int) []offense.Rule {
	out := make([]offense.Rule, n)
	for i := range out {
		out[i] = r
	}
	return out
}
