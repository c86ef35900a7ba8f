package protect

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipwarden/sipwarden/internal/offense"
)

var (
	officeIP = netip.MustParseAddr("198.51.100.10")
	t0       = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	ladder   = Ladder{Bantime: time.Hour, MaxBantime: 24 * time.Hour, Factor: 2}
)

func fail(port uint16, user string, verified bool) offense.Offense {
	return offense.Offense{IP: officeIP, Port: port, Rule: offense.AuthFailure, Source: offense.SourceESL,
		User: user, Detail: "Yealink SIP-T46S", Verified: verified}
}

func newGuard(t *testing.T, now *time.Time) (*Guard, *DryRun, *prometheus.Registry) {
	t.Helper()
	fw := NewDryRun()
	reg := prometheus.NewRegistry()
	g, err := New(Options{Firewall: fw, Registerer: reg, Now: func() time.Time { return *now },
		Accounts: func(netip.Addr) []string { return []string{"1002", "1001", "1001"} }})
	if err != nil {
		t.Fatal(err)
	}
	return g, fw, reg
}

type step struct {
	o        offense.Offense
	action   Action
	mapping  Mapping // for quarantine
	new      bool
	d        time.Duration
	accounts bool // registered accounts named
}

func TestLadder(t *testing.T) {
	q := func(port uint16) Mapping { return Mapping{IP: officeIP, Port: port} }
	scanner := offense.Offense{IP: officeIP, Port: 40100, Transport: offense.TransportUDP, Rule: offense.ScannerUserAgent,
		Source: offense.SourceCapture, Verified: true}
	tollTLS := offense.Offense{IP: officeIP, Port: 5061, Transport: offense.TransportTLS, Rule: offense.TollFraudInvite,
		Source: offense.SourceHEP, Verified: true}
	noPort := scanner
	noPort.Port, noPort.Source = 0, offense.SourceLog
	unverified := scanner
	unverified.Verified = false
	logFail := fail(0, "1004", true)
	logFail.Source = offense.SourceLog
	acl := fail(40004, "", true)
	acl.Rule = offense.ACLReject
	var guesser []step
	for i := range 4 {
		s := step{o: fail(uint16(50000+i), fmt.Sprintf("20%d", i), true), action: Quarantine, mapping: q(uint16(50000 + i)), new: true,
			d: ladder.duration(i + 1)}
		if i == 3 {
			s = step{o: s.o, action: Throttle, new: true, d: time.Hour}
		}
		guesser = append(guesser, s)
	}
	var hour []step
	for i := range DefaultMaxPerHour + 1 {
		s := step{o: fail(40004, "1004", true), action: Quarantine, mapping: q(40004)}
		if i == 0 {
			s.new, s.d = true, time.Hour
		}
		if i == DefaultMaxPerHour {
			s = step{o: s.o, action: Throttle, new: true, d: time.Hour}
		}
		hour = append(hour, s)
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"stale password: its mapping only, once", []step{
			{o: fail(40004, "1004", true), action: Quarantine, mapping: q(40004), new: true, d: time.Hour},
			{o: fail(40004, "1004", true), action: Quarantine, mapping: q(40004)},
		}},
		{"unverified credential failure is reported", []step{{o: fail(40004, "1004", false), action: Watch}}},
		{"log-only failure (no port) is reported", []step{{o: logFail, action: Watch}}},
		{"other rules are reported", []step{{o: acl, action: Watch}}},
		{"guesser rotating ports and users: throttled past the budget", guesser},
		{"failures per hour past the budget", hour},
		{"scanner from a protected address: quarantined at once, accounts named", []step{
			{o: scanner, action: Quarantine, mapping: Mapping{IP: officeIP, Transport: offense.TransportUDP, Port: 40100}, new: true, d: time.Hour, accounts: true},
		}},
		{"toll fraud over TLS: the tcp mapping", []step{
			{o: tollTLS, action: Quarantine, mapping: Mapping{IP: officeIP, Transport: offense.TransportTCP, Port: 5061}, new: true, d: time.Hour, accounts: true},
		}},
		{"never-excused without a port: throttled", []step{{o: noPort, action: Throttle, new: true, d: time.Hour, accounts: true}}},
		{"unverified scanner is reported", []step{{o: unverified, action: Watch, accounts: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := t0
			g, fw, _ := newGuard(t, &now)
			for i, s := range tc.steps {
				now = now.Add(time.Second)
				s.o.Time = now
				r := g.Offend(s.o, ladder)
				if r.Action != s.action || r.New != s.new || r.Duration != s.d {
					t.Fatalf("step %d: %s new=%v %s (%s), want %s new=%v %s", i, r.Action, r.New, r.Duration, r.Why, s.action, s.new, s.d)
				}
				if s.action == Quarantine && r.Mapping != s.mapping {
					t.Fatalf("step %d: quarantined %s, want %s", i, r.Mapping, s.mapping)
				}
				if s.accounts && s.action != Watch && fmt.Sprint(r.Accounts) != "[1001 1002]" {
					t.Fatalf("step %d: accounts %v, want [1001 1002]", i, r.Accounts)
				}
			}
			g.Drain(context.Background())
			wantMaps, wantThr := 0, 0
			for _, s := range tc.steps {
				if s.new && s.action == Quarantine {
					wantMaps++
				}
				if s.new && s.action == Throttle {
					wantThr++
				}
			}
			if got := len(fw.Mappings()); got != wantMaps {
				t.Errorf("kernel holds %d mappings %v, want %d", got, fw.Mappings(), wantMaps)
			}
			if got := len(fw.Throttled()); got != wantThr {
				t.Errorf("kernel holds %d throttled, want %d", got, wantThr)
			}
			if _, ok := fw.Throttled()[officeIP]; wantThr == 0 && ok {
				t.Error("officeIP throttled")
			}
		})
	}
}

// A registration lifts a quarantine whose evidence was all credential-class
// at once, never one a scanner earned; a throttle lifts when every failing
// user has registered again.
func TestRegistrationLifts(t *testing.T) {
	now := t0
	g, fw, reg := newGuard(t, &now)
	g.Offend(fail(40004, "1004", true), ladder)
	sc := offense.Offense{IP: officeIP, Port: 40100, Transport: offense.TransportUDP, Rule: offense.ScannerUserAgent, User: "1004", Verified: true, Time: now}
	g.Offend(sc, ladder)
	g.Drain(context.Background())
	if n := len(fw.Mappings()); n != 2 {
		t.Fatalf("%d mappings, want 2", n)
	}
	if g.State(officeIP) != "quarantined" {
		t.Fatalf("state %q", g.State(officeIP))
	}
	if n := g.Registered(officeIP, "1001"); n != 0 {
		t.Fatalf("another user's registration lifted %d", n)
	}
	if n := g.Registered(officeIP, "1004"); n != 1 {
		t.Fatalf("lifted %d, want the credential quarantine only", n)
	}
	g.Drain(context.Background())
	m := fw.Mappings()
	if _, ok := m[Mapping{IP: officeIP, Transport: offense.TransportUDP, Port: 40100}]; !ok || len(m) != 1 {
		t.Fatalf("kernel after lift: %v, want the scanner's mapping only", m)
	}
	if got := testutil.ToFloat64(g.m.lifted); got != 1 {
		t.Errorf("lifted_total %v", got)
	}

	// throttle by stale passwords on four phones; all four fix them
	now2 := t0
	g2, fw2, _ := newGuard(t, &now2)
	for i := range 4 {
		now2 = now2.Add(time.Second)
		o := fail(uint16(40000+i), fmt.Sprint(1000+i), true)
		o.Time = now2
		g2.Offend(o, ladder)
	}
	if g2.State(officeIP) != "throttled" {
		t.Fatalf("state %q, want throttled", g2.State(officeIP))
	}
	for i := range 3 {
		g2.Registered(officeIP, fmt.Sprint(1000+i))
		if g2.State(officeIP) != "throttled" {
			t.Fatalf("throttle lifted after %d of 4 users registered", i+1)
		}
	}
	g2.Registered(officeIP, "1003")
	g2.Drain(context.Background())
	if len(fw2.Throttled()) != 0 || len(fw2.Mappings()) != 0 || g2.State(officeIP) != "" {
		t.Fatalf("after every user registered: throttled %v mappings %v state %q", fw2.Throttled(), fw2.Mappings(), g2.State(officeIP))
	}
	_ = reg
}

// Who is failing, and the gauges.
func TestOfficesView(t *testing.T) {
	now := t0
	g, _, reg := newGuard(t, &now)
	o := fail(40004, "1004", true)
	o.Time = now.Add(-time.Minute)
	g.Offend(o, ladder)
	o.Time = now
	g.Offend(o, ladder)
	offs := g.Offices()
	if len(offs) != 1 {
		t.Fatalf("%d offices", len(offs))
	}
	f := offs[0]
	if f.State != "quarantined" || len(f.Failing) != 1 || len(f.Quarantined) != 1 || fmt.Sprint(f.Accounts) != "[1001 1002]" {
		t.Fatalf("officeIP %+v", f)
	}
	u := f.Failing[0]
	if u.User != "1004" || u.Port != 40004 || u.UserAgent != "Yealink SIP-T46S" || u.Count != 2 ||
		!u.FirstSeen.Equal(t0.Add(-time.Minute)) || !u.LastSeen.Equal(t0) {
		t.Fatalf("failing %+v", u)
	}
	if err := testutil.GatherAndCompare(reg, stringsReader(`
# HELP sipwarden_protect_failing_users Users failing within protect.window at addresses a live registration protects (GET /v1/protected names them).
# TYPE sipwarden_protect_failing_users gauge
sipwarden_protect_failing_users 1
# HELP sipwarden_protect_quarantined_mappings NAT mappings (address, transport, port) of protected addresses in quarantine.
# TYPE sipwarden_protect_quarantined_mappings gauge
sipwarden_protect_quarantined_mappings 1
# HELP sipwarden_protect_throttled_addresses Protected addresses throttled (over their failure budget, or a never-excused rule without a port).
# TYPE sipwarden_protect_throttled_addresses gauge
sipwarden_protect_throttled_addresses 0
`), "sipwarden_protect_failing_users", "sipwarden_protect_quarantined_mappings", "sipwarden_protect_throttled_addresses"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	if g.State(officeIP) != "" || g.Ever(officeIP) != "quarantined" {
		t.Fatalf("after expiry: state %q ever %q", g.State(officeIP), g.Ever(officeIP))
	}
	g.sweep()
	if len(g.Offices()) != 0 {
		t.Fatal("sweep kept an idle officeIP")
	}
}

// Memory is bounded: addresses, users per address, mappings per address.
func TestBounded(t *testing.T) {
	now := t0
	fw := NewDryRun()
	g, err := New(Options{Firewall: fw, MaxAddresses: 8, Registerer: prometheus.NewRegistry(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		ip := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		g.Offend(offense.Offense{IP: ip, Rule: offense.AuthFailure, User: "x", Time: now}, ladder) // unverified: nothing in force
	}
	if n := len(g.Offices()); n != 8 {
		t.Fatalf("%d addresses tracked, want 8", n)
	}
	for i := range 10000 {
		g.Offend(offense.Offense{IP: officeIP, Port: uint16(1024 + i), Rule: offense.AuthFailure, User: fmt.Sprint(i), Time: now}, ladder)
	}
	g.mu.Lock()
	of := g.offices[officeIP]
	nu, nm := len(of.users), len(of.maps)
	g.mu.Unlock()
	if nu > DefaultMaxUsersTracked || nm > DefaultMaxMappingsTrack {
		t.Fatalf("users %d mappings %d", nu, nm)
	}
}

func TestLadderDuration(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, time.Hour}, {2, 2 * time.Hour}, {5, 16 * time.Hour}, {6, 24 * time.Hour}, {50, 24 * time.Hour}} {
		if got := ladder.duration(tc.n); got != tc.want {
			t.Errorf("duration(%d) = %s, want %s", tc.n, got, tc.want)
		}
	}
}

// The same phone seen by the Event Socket (no transport) and a capture
// (udp) is one failing port, not two: two stale phones stay within budget.
func TestBudgetCountsPorts(t *testing.T) {
	now := t0
	g, _, _ := newGuard(t, &now)
	for i, port := range []uint16{40004, 40005} {
		for _, tr := range []offense.Transport{"", offense.TransportUDP} {
			now = now.Add(time.Second)
			o := fail(port, fmt.Sprint(1004+i), true)
			o.Transport, o.Time = tr, now
			if r := g.Offend(o, ladder); r.Action != Quarantine {
				t.Fatalf("port %d %q: %s (%s), want quarantined", port, tr, r.Action, r.Why)
			}
		}
	}
}
