package jail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/decision"
	"github.com/sipwarden/sipwarden/internal/offense"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

type allow map[netip.Addr]string

// Registered: any "registered" address inside p.
func (a allow) Registered(p netip.Prefix) bool {
	for ip, w := range a {
		if w == "registered" && p.Contains(ip) {
			return true
		}
	}
	return false
}

// StaticOverlap: any other entry inside p is a static /32 or /128.
func (a allow) StaticOverlap(p netip.Prefix) (netip.Prefix, bool) {
	for ip, w := range a {
		if w != "registered" && p.Contains(ip) {
			return netip.PrefixFrom(ip, ip.BitLen()), true
		}
	}
	return netip.Prefix{}, false
}

func (a allow) Registrations(ip netip.Addr) int {
	if a[ip] == "registered" {
		return 3
	}
	return 0
}

type env struct {
	j   *Jail
	fw  *ban.DryRun
	clk *clock
	reg *prometheus.Registry
	log *bytes.Buffer
}

func newEnv(t *testing.T, o Options) *env {
	t.Helper()
	e := &env{clk: &clock{t: t0}, reg: prometheus.NewRegistry(), log: &bytes.Buffer{}}
	if o.Now == nil {
		o.Now = e.clk.Now
	}
	if o.UnverifiedFactor == 0 {
		// These tests weigh all evidence alike; TestUnverifiedFactor and
		// the default's own test cover the discount.
		o.UnverifiedFactor = 1
	}
	if o.Firewall == nil {
		e.fw = ban.NewDryRun(ban.DryRunOptions{Now: o.Now})
		o.Firewall = e.fw
	}
	if o.HostAddrs == nil {
		o.HostAddrs = func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8:ffff::1")}, nil
		}
	}
	o.Registerer = e.reg
	o.Logger = slog.New(slog.NewTextHandler(&syncWriter{w: e.log}, nil))
	j, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.j = j
	return e
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (e *env) offend(ip string, r offense.Rule, at time.Duration) {
	e.j.Offend(offense.Offense{IP: netip.MustParseAddr(ip), Rule: r, Source: offense.SourceESL, Time: t0.Add(at), User: "1003"})
}

func (e *env) state(ip string) Offender {
	for _, o := range e.j.AllOffenders() {
		if name(o.IP, o.Prefix) == ip {
			return o
		}
	}
	return Offender{}
}

func (e *env) banned(ip string) bool {
	for _, b := range e.j.Bans() {
		if name(b.IP, b.Prefix) == ip {
			return true
		}
	}
	return false
}

func name(ip netip.Addr, p netip.Prefix) string {
	if p.IsValid() {
		return p.String()
	}
	return ip.String()
}

func TestScoringWindow(t *testing.T) {
	const ip = "203.0.113.7"
	tests := []struct {
		name  string
		times []time.Duration
		want  bool
	}{
		{"five at once", []time.Duration{0, 0, 0, 0, 0}, true},
		{"four", []time.Duration{0, 1, 2, 3}, false},
		{"five within findtime", []time.Duration{0, 2 * time.Minute, 4 * time.Minute, 6 * time.Minute, 9 * time.Minute}, true},
		{"five spread over an hour", []time.Duration{0, 15 * time.Minute, 30 * time.Minute, 45 * time.Minute, 60 * time.Minute}, false},
		{"old ones decayed", []time.Duration{0, 0, 0, 0, 25 * time.Minute}, false},
		{"previous window weighs in", []time.Duration{9 * time.Minute, 9 * time.Minute, 9 * time.Minute, 9 * time.Minute, 10*time.Minute + time.Second, 10*time.Minute + time.Second}, true},
		{"late record in previous window", []time.Duration{10 * time.Minute, 10 * time.Minute, 10 * time.Minute, 10 * time.Minute, 9 * time.Minute}, true},
		{"record older than two windows", []time.Duration{30 * time.Minute, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute, 5 * time.Minute}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{Findtime: 10 * time.Minute, MaxRetry: 5})
			for _, at := range tc.times {
				e.clk.Set(t0.Add(at))
				e.offend(ip, offense.AuthFailure, at)
			}
			if got := e.banned(ip); got != tc.want {
				t.Fatalf("banned = %v, want %v (offenders %+v)", got, tc.want, e.j.AllOffenders())
			}
		})
	}
}

func TestReplayGivesLiveVerdicts(t *testing.T) {
	// Same records, different wall clocks: same decisions.
	run := func(now time.Time) []Offender {
		e := newEnv(t, Options{})
		e.clk.Set(now)
		for i := range 12 {
			e.offend(fmt.Sprintf("198.51.100.%d", i%3), offense.AuthFailure, time.Duration(i)*40*time.Second)
		}
		return e.j.AllOffenders()
	}
	a := fmt.Sprint(run(t0.Add(time.Hour))) // "live": clock just after
	b := fmt.Sprint(run(t0.Add(time.Hour)))
	if a != b {
		t.Fatalf("verdicts differ:\n%s\n%s", a, b)
	}
	e := newEnv(t, Options{})
	for i := range 5 {
		e.offend("198.51.100.9", offense.AuthFailure, time.Duration(i)*time.Second)
	}
	e.clk.Set(t0.Add(48 * time.Hour)) // replay long after: the offender still shows its ban history
	if o := e.state("198.51.100.9"); o.Bans != 1 || o.BanSeconds != 3600 {
		t.Fatalf("replay view %+v", o)
	}
}

func TestWeights(t *testing.T) {
	tests := []struct {
		name    string
		weights map[offense.Rule]float64
		rule    offense.Rule
		n       int
		want    bool
	}{
		{"scanner bans at once", nil, offense.ScannerUserAgent, 1, true},
		{"toll fraud weight 5", nil, offense.TollFraudInvite, 1, true},
		{"extension scan weight 5", nil, offense.ExtensionScan, 1, true},
		{"flood weight 5", nil, offense.Flood, 1, true},
		{"sip injection weight 5", nil, offense.SIPInjection, 1, true},
		{"auth challenge never scores", nil, offense.AuthChallenge, 100, false},
		{"unknown user 4", nil, offense.UnknownUser, 4, false},
		{"unknown user 5", nil, offense.UnknownUser, 5, true},
		{"malformed 5", nil, offense.MalformedSIP, 5, true},
		{"custom half weight", map[offense.Rule]float64{offense.AuthFailure: 0.5}, offense.AuthFailure, 9, false},
		{"custom half weight ten", map[offense.Rule]float64{offense.AuthFailure: 0.5}, offense.AuthFailure, 10, true},
		{"disabled scanner", map[offense.Rule]float64{offense.ScannerUserAgent: 0}, offense.ScannerUserAgent, 50, false},
		{"unknown rule weight 1", nil, offense.Rule("future_rule"), 5, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{Weights: tc.weights})
			for i := range tc.n {
				e.offend("203.0.113.9", tc.rule, time.Duration(i)*time.Second)
			}
			if got := e.banned("203.0.113.9"); got != tc.want {
				t.Fatalf("banned = %v, want %v", got, tc.want)
			}
			// A rule of weight 0 (disabled) is not tracked per address.
			want := tc.n
			if c, _ := compile(Policy{Weights: tc.weights}); c.weights[ruleIndex(tc.rule)] == 0 {
				want = 0
			}
			if got := e.state("203.0.113.9").Offenses; tc.rule.Known() && got[tc.rule] != want {
				t.Fatalf("offenses %v, want %d %s", got, want, tc.rule)
			}
		})
	}
}

func TestEscalation(t *testing.T) {
	c, err := compile(Policy{Bantime: time.Hour, Factor: 2, MaxBantime: 10 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range map[int]time.Duration{1: time.Hour, 2: 2 * time.Hour, 3: 4 * time.Hour, 4: 8 * time.Hour, 5: 10 * time.Hour, 500: 10 * time.Hour} {
		if got := c.banDuration(n); got != want {
			t.Errorf("banDuration(%d) = %s, want %s", n, got, want)
		}
	}
	// through the jail: ban, expire, ban again
	e := newEnv(t, Options{Bantime: time.Hour, Factor: 3, MaxBantime: 5 * time.Hour})
	at := time.Duration(0)
	for round, want := range []time.Duration{time.Hour, 3 * time.Hour, 5 * time.Hour} {
		for range 5 {
			e.offend("203.0.113.50", offense.AuthFailure, at)
		}
		bans := e.j.Bans()
		if len(bans) != 1 || bans[0].ExpiresAt.Sub(bans[0].CreatedAt) != want || bans[0].Count != round+1 {
			t.Fatalf("round %d: bans %+v, want %s", round, bans, want)
		}
		at += want + time.Minute
		e.clk.Set(t0.Add(at))
		e.j.Sweep()
		if e.banned("203.0.113.50") {
			t.Fatalf("round %d: ban not expired", round)
		}
	}
	if testutil.ToFloat64(e.j.m.bansC[authFailureIdx]) != 3 {
		t.Fatal("bans_total")
	}
}

func TestDecisionOrder(t *testing.T) {
	al := allow{
		netip.MustParseAddr("203.0.113.10"): "registered",
		netip.MustParseAddr("203.0.113.11"): "static",
		netip.MustParseAddr("10.9.0.5"):     "registered", // also in never_ban: never_ban wins
	}
	tests := []struct {
		ip     string
		reason decision.Reason
		state  string
		why    string
	}{
		{"127.0.0.1", decision.NeverBan, StateNeverBan, "loopback"},
		{"::1", decision.NeverBan, StateNeverBan, "loopback"},
		{"fe80::1", decision.NeverBan, StateNeverBan, "link-local"},
		{"169.254.1.1", decision.NeverBan, StateNeverBan, "link-local"},
		{"0.0.0.0", decision.NeverBan, StateNeverBan, "unspecified"},
		{"239.1.1.1", decision.NeverBan, StateNeverBan, "multicast"},
		{"192.0.2.1", decision.NeverBan, StateNeverBan, "own address"},
		{"10.9.0.5", decision.NeverBan, StateNeverBan, "never_ban 10.9.0.0/16"},
		{"203.0.113.11", decision.Static, StateProtected, "static 203.0.113.11/32"},
		{"203.0.113.10", decision.Registered, StateProtected, "registered"},
		{"203.0.113.12", decision.Ban, StateBanned, ""},
	}
	for _, tc := range tests {
		t.Run(tc.ip, func(t *testing.T) {
			e := newEnv(t, Options{Allowlist: al, NeverBan: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}})
			for i := range 12 {
				e.offend(tc.ip, offense.AuthFailure, time.Duration(i)*time.Second)
			}
			o := e.state(tc.ip)
			if o.State != tc.state || o.Why != tc.why {
				t.Fatalf("state %q why %q, want %q %q", o.State, o.Why, tc.state, tc.why)
			}
			for _, r := range decision.Reasons {
				want := 0.0
				if r == tc.reason {
					want = 1 // logged and counted once per findtime, not per offense
				}
				if got := testutil.ToFloat64(e.j.m.skipped.WithLabelValues(r.String())); got != want {
					t.Errorf("skipped{%s} = %v, want %v", r, got, want)
				}
			}
			if tc.reason == decision.Registered {
				if !strings.Contains(e.log.String(), "office 203.0.113.10 protected: 5 auth_failure for 1003 while 3 registrations live") {
					t.Errorf("log: %s", e.log)
				}
				if n := strings.Count(e.log.String(), "protected:"); n != 1 {
					t.Errorf("logged %d times", n)
				}
			}
			if tc.state != StateBanned && e.fw.Len() != 0 {
				t.Fatal("backend written")
			}
			// manual bans go through the same checks
			err := e.j.Ban(context.Background(), netip.MustParseAddr(tc.ip), time.Hour, "test")
			switch tc.reason {
			case decision.NeverBan:
				if !errors.Is(err, ban.ErrNeverBan) {
					t.Fatalf("manual ban: %v", err)
				}
			case decision.Static, decision.Registered:
				if !errors.Is(err, ban.ErrWhitelisted) {
					t.Fatalf("manual ban: %v", err)
				}
			default:
				if err != nil {
					t.Fatalf("manual ban: %v", err)
				}
			}
		})
	}
}

func TestProtectedThenRegistrationGone(t *testing.T) {
	al := allow{netip.MustParseAddr("203.0.113.10"): "registered"}
	e := newEnv(t, Options{Allowlist: al})
	for i := range 6 {
		e.offend("203.0.113.10", offense.AuthFailure, time.Duration(i)*time.Second)
	}
	if e.banned("203.0.113.10") {
		t.Fatal("banned while registered")
	}
	delete(al, netip.MustParseAddr("203.0.113.10"))
	e.offend("203.0.113.10", offense.AuthFailure, 10*time.Second)
	if !e.banned("203.0.113.10") {
		t.Fatal("not banned once the registration is gone")
	}
	// a second skip is logged again only after findtime
	al[netip.MustParseAddr("203.0.113.20")] = "registered"
	for i := range 30 {
		e.clk.Set(t0.Add(time.Duration(i) * time.Minute))
		e.offend("203.0.113.20", offense.AuthFailure, time.Duration(i)*time.Minute)
	}
	if got := testutil.ToFloat64(e.j.m.skipped.WithLabelValues(decision.Registered.String())); got != 3+1 {
		t.Fatalf("skips = %v (once per findtime)", got)
	}
}

func TestDedupAcrossSources(t *testing.T) {
	e := newEnv(t, Options{})
	ip := netip.MustParseAddr("203.0.113.30")
	send := func(src offense.Source, user string, at time.Duration) {
		e.j.Offend(offense.Offense{IP: ip, Rule: offense.AuthFailure, Source: src, User: user, Time: t0.Add(at)})
	}
	// the same 4 failures seen by ESL, the log and HEP: 4, not 12
	for i := range 4 {
		at := time.Duration(i) * 500 * time.Millisecond
		send(offense.SourceESL, "1003", at)
		send(offense.SourceLog, "1003", at+100*time.Millisecond)
		send(offense.SourceHEP, "1003", at+50*time.Millisecond)
	}
	if e.banned(ip.String()) {
		t.Fatalf("banned on duplicates: %+v", e.state(ip.String()))
	}
	if s := e.state(ip.String()).Score; s != 4 {
		t.Fatalf("score %v, want 4", s)
	}
	// out of order still counts once: log first, ESL later
	send(offense.SourceLog, "1003", 2*time.Second)
	if !e.banned(ip.String()) {
		t.Fatalf("5th failure did not ban: %+v", e.state(ip.String()))
	}
	if got := testutil.ToFloat64(e.j.m.deduplicated); got != 8 {
		t.Fatalf("deduplicated = %v", got)
	}
	// another user, or outside the window, counts again
	e2 := newEnv(t, Options{})
	ip2 := "203.0.113.31"
	e2.j.Offend(offense.Offense{IP: netip.MustParseAddr(ip2), Rule: offense.AuthFailure, Source: offense.SourceESL, User: "1003", Time: t0})
	e2.j.Offend(offense.Offense{IP: netip.MustParseAddr(ip2), Rule: offense.AuthFailure, Source: offense.SourceLog, User: "1004", Time: t0})
	e2.j.Offend(offense.Offense{IP: netip.MustParseAddr(ip2), Rule: offense.AuthFailure, Source: offense.SourceLog, User: "1004", Time: t0.Add(5 * time.Second)})
	if s := e2.state(ip2).Score; s != 3 {
		t.Fatalf("score %v, want 3", s)
	}
}

func TestMaxOffendersEviction(t *testing.T) {
	e := newEnv(t, Options{MaxOffenders: 100})
	for i := range 5 { // one banned address that must survive
		e.offend("198.51.100.1", offense.AuthFailure, time.Duration(i))
	}
	for i := range 5000 {
		ip := netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})
		e.j.Offend(offense.Offense{IP: ip, Rule: offense.AuthFailure, Time: t0.Add(time.Second)})
	}
	n := len(e.j.AllOffenders())
	if n > 101 {
		t.Fatalf("%d offenders tracked, cap 100", n)
	}
	if got := testutil.ToFloat64(e.j.m.evictions); got < 4800 {
		t.Fatalf("evictions = %v", got)
	}
	if !e.banned("198.51.100.1") || e.state("198.51.100.1").State != StateBanned {
		t.Fatal("banned address evicted")
	}
}

func TestLeastScoredEvicted(t *testing.T) {
	e := newEnv(t, Options{MaxOffenders: 8})
	// 7 addresses with score 3, then a stream of singletons: the score-3 ones stay
	for i := range 7 {
		for range 3 {
			e.offend(fmt.Sprintf("198.51.100.%d", i), offense.AuthFailure, 0)
		}
	}
	for i := range 200 {
		e.j.Offend(offense.Offense{IP: netip.AddrFrom4([4]byte{100, 64, 0, byte(i)}), Rule: offense.AuthFailure, Time: t0})
	}
	kept := 0
	for i := range 7 {
		if e.state(fmt.Sprintf("198.51.100.%d", i)).Score == 3 {
			kept++
		}
	}
	if kept != 7 {
		t.Fatalf("high scorers evicted: %d of 7 kept", kept)
	}
}

func TestSweep(t *testing.T) {
	e := newEnv(t, Options{HistoryTTL: 24 * time.Hour})
	e.offend("203.0.113.1", offense.AuthFailure, 0)
	for range 5 {
		e.offend("203.0.113.2", offense.AuthFailure, 0)
	}
	e.clk.Set(t0.Add(30 * time.Minute))
	e.j.Sweep()
	if len(e.j.AllOffenders()) != 1 || !e.banned("203.0.113.2") {
		t.Fatalf("after 30m: %+v", e.j.AllOffenders())
	}
	e.clk.Set(t0.Add(2 * time.Hour))
	e.j.Sweep()
	if o := e.j.AllOffenders(); len(o) != 1 || o[0].State != StateWatching || o[0].Bans != 1 {
		t.Fatalf("ban history must outlive the ban: %+v", o)
	}
	if testutil.ToFloat64(e.j.m.bansActive) != 0 {
		t.Fatal("bans_active")
	}
	e.clk.Set(t0.Add(26 * time.Hour))
	e.j.Sweep()
	if n := len(e.j.AllOffenders()); n != 0 {
		t.Fatalf("history not forgotten: %d", n)
	}
}

func TestV6(t *testing.T) {
	e := newEnv(t, Options{})
	for i := range 5 {
		e.offend(fmt.Sprintf("2001:db8:1::%d", i+1), offense.AuthFailure, 0)
	}
	if len(e.j.Bans()) != 0 {
		t.Fatal("exact addresses by default")
	}
	for range 5 {
		e.offend("::ffff:203.0.113.5", offense.AuthFailure, 0) // mapped: unmapped
	}
	if !e.banned("203.0.113.5") {
		t.Fatalf("mapped address: %+v", e.j.Bans())
	}

	p := newEnv(t, Options{V6Prefix: 64})
	for i := range 5 {
		p.offend(fmt.Sprintf("2001:db8:1::%d", i+1), offense.AuthFailure, 0)
	}
	if !p.banned("2001:db8:1::/64") {
		t.Fatalf("prefix ban: %+v", p.j.Bans())
	}
	if err := p.j.Unban(context.Background(), netip.MustParseAddr("2001:db8:1::77")); err != nil {
		t.Fatal(err)
	}
	// a prefix holding one of our own addresses is narrowed to the offender
	for range 5 {
		p.offend("2001:db8:ffff::99", offense.AuthFailure, 0)
	}
	if !p.banned("2001:db8:ffff::99") || p.banned("2001:db8:ffff::/64") || p.fw.Contains(netip.MustParsePrefix("2001:db8:ffff::/64")) {
		t.Fatalf("own prefix not narrowed: %+v", p.j.Bans())
	}
}

func TestManualBanUnban(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	ip := netip.MustParseAddr("203.0.113.40")
	if err := e.j.Unban(ctx, ip); !errors.Is(err, ban.ErrNotBanned) {
		t.Fatalf("unban: %v", err)
	}
	if err := e.j.Ban(ctx, ip, 0, "by hand"); err != nil {
		t.Fatal(err)
	}
	b := e.j.Bans()
	if len(b) != 1 || b[0].Rule != "manual" || b[0].Reason != "by hand" || b[0].ExpiresAt.Sub(b[0].CreatedAt) != time.Hour {
		t.Fatalf("bans %+v", b)
	}
	if !e.fw.Contains(netip.PrefixFrom(ip, 32)) {
		t.Fatal("not in backend (before Run, manual writes happen in the caller)")
	}
	if err := e.j.Unban(ctx, ip); err != nil {
		t.Fatal(err)
	}
	if e.fw.Contains(netip.PrefixFrom(ip, 32)) || len(e.j.Bans()) != 0 {
		t.Fatal("still banned")
	}
	// failure writing leaves no ban behind
	full := newEnv(t, Options{Firewall: ban.NewDryRun(ban.DryRunOptions{MaxElem: 1})})
	if err := full.j.Ban(ctx, netip.MustParseAddr("203.0.113.1"), time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	err := full.j.Ban(ctx, netip.MustParseAddr("203.0.113.2"), time.Hour, "")
	if !errors.Is(err, ban.ErrSetFull) || len(full.j.Bans()) != 1 {
		t.Fatalf("full: %v %+v", err, full.j.Bans())
	}
	if testutil.ToFloat64(full.j.m.errors.WithLabelValues("add")) != 1 {
		t.Fatal("ban_errors_total{op=add}")
	}
}

func TestPolicyValidation(t *testing.T) {
	for name, p := range map[string]Options{
		"negative findtime": {Findtime: -1},
		"factor below 1":    {Factor: 0.5},
		"max below bantime": {Bantime: 2 * time.Hour, MaxBantime: time.Hour},
		"negative weight":   {Weights: map[offense.Rule]float64{offense.Flood: -1}},
		"v6 prefix":         {V6Prefix: 129},
	} {
		if _, err := New(p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	e := newEnv(t, Options{})
	if err := e.j.SetPolicy(Policy{MaxRetry: 2, UnverifiedFactor: 1}); err != nil {
		t.Fatal(err)
	}
	e.offend("203.0.113.60", offense.AuthFailure, 0)
	e.offend("203.0.113.60", offense.AuthFailure, 0)
	if !e.banned("203.0.113.60") {
		t.Fatal("SetPolicy not applied")
	}
	if err := e.j.SetPolicy(Policy{Factor: 0.1}); err == nil || e.j.Policy().MaxRetry != 2 {
		t.Fatal("bad policy applied")
	}
}

func TestInvalidAndMetrics(t *testing.T) {
	e := newEnv(t, Options{})
	e.j.Offend(offense.Offense{Rule: offense.AuthFailure}) // no address
	e.j.Offend(offense.Offense{IP: netip.MustParseAddr("203.0.113.70"), Rule: offense.Flood, Source: offense.SourceHEP, Time: t0})
	if testutil.ToFloat64(e.j.m.invalid) != 1 {
		t.Fatal("invalid")
	}
	if got := testutil.ToFloat64(e.j.m.offenses.WithLabelValues("flood", "hep")); got != 1 {
		t.Fatalf("offenses_total = %v", got)
	}
	if got := testutil.ToFloat64(e.j.m.bansTotal.WithLabelValues("flood")); got != 1 {
		t.Fatalf("bans_total = %v", got)
	}
	if got := testutil.ToFloat64(e.j.m.bansActive); got != 1 {
		t.Fatalf("bans_active = %v", got)
	}
	// the writer is not running: the ban waits in the queue
	if len(e.j.queue) != 1 {
		t.Fatal("not queued")
	}
}

func TestQueueFullDropsAndResyncRepairs(t *testing.T) {
	e := newEnv(t, Options{QueueSize: 1})
	for i := range 3 {
		e.j.Offend(offense.Offense{IP: netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), Rule: offense.Flood, Time: t0})
	}
	if got := testutil.ToFloat64(e.j.m.dropped); got != 2 {
		t.Fatalf("dropped = %v", got)
	}
	if err := e.j.resync(context.Background()); err != nil {
		t.Fatal(err)
	}
	l, _ := e.fw.List(context.Background())
	if len(l) != 3 {
		t.Fatalf("backend holds %d after resync", len(l))
	}
}

// fw wraps ban.DryRun to signal each Add.
type signalFW struct {
	*ban.DryRun
	added chan netip.Prefix
}

func (s *signalFW) Add(ctx context.Context, p netip.Prefix, d time.Duration) error {
	err := s.DryRun.Add(ctx, p, d)
	s.added <- p
	return err
}

func TestRunWritesFromOneGoroutine(t *testing.T) {
	fw := &signalFW{DryRun: ban.NewDryRun(ban.DryRunOptions{}), added: make(chan netip.Prefix, 16)}
	e := newEnv(t, Options{Firewall: fw, Now: time.Now})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.j.Run(ctx) }()
	e.j.Offend(offense.Offense{IP: netip.MustParseAddr("203.0.113.80"), Rule: offense.ScannerUserAgent, Time: time.Now()})
	select {
	case p := <-fw.added:
		if p != netip.MustParsePrefix("203.0.113.80/32") {
			t.Fatal(p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not written")
	}
	if r, ok := e.j.Ready(); !ok {
		t.Fatalf("not ready: %s", r)
	}
	// manual ban through the running writer
	go func() { <-fw.added }()
	if err := e.j.Ban(ctx, netip.MustParseAddr("203.0.113.81"), time.Minute, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.j.Unban(ctx, netip.MustParseAddr("203.0.113.81")); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var m dtoHist
	if n := m.count(t, e.reg, "sipwarden_ban_latency_seconds"); n < 2 {
		t.Fatalf("latency observations %d", n)
	}
}

type dtoHist struct{}

func (dtoHist) count(t *testing.T, g prometheus.Gatherer, name string) uint64 {
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	e := newEnv(t, Options{StateFile: path})
	for range 5 {
		e.offend("203.0.113.90", offense.AuthFailure, 0)
	}
	for range 3 {
		e.offend("203.0.113.91", offense.UnknownUser, 0)
	}
	if err := e.j.Ban(context.Background(), netip.MustParseAddr("2001:db8::5"), 2*time.Hour, "manual test"); err != nil {
		t.Fatal(err)
	}
	if err := e.j.saveNow(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file %v %v", fi, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(m) != 0 {
		t.Fatalf("temp files left: %v", m)
	}

	e2 := newEnv(t, Options{StateFile: path})
	if a, b := fmt.Sprint(e.j.Bans()), fmt.Sprint(e2.j.Bans()); a != b {
		t.Fatalf("bans differ:\n%s\n%s", a, b)
	}
	if a, b := fmt.Sprint(e.j.AllOffenders()), fmt.Sprint(e2.j.AllOffenders()); a != b {
		t.Fatalf("offenders differ:\n%s\n%s", a, b)
	}
	// escalation continues after the restart
	e2.clk.Set(t0.Add(2 * time.Hour))
	e2.j.Sweep()
	for range 5 {
		e2.offend("203.0.113.90", offense.AuthFailure, 2*time.Hour)
	}
	found := false
	for _, b := range e2.j.Bans() {
		if b.IP.String() == "203.0.113.90" {
			found = true
			if b.Count != 2 || b.ExpiresAt.Sub(b.CreatedAt) != 2*time.Hour {
				t.Fatalf("escalation lost: %+v", b)
			}
		}
	}
	if !found {
		t.Fatalf("not banned again: %+v", e2.j.Bans())
	}
	// two more unknown_user for .91 complete its score of 5 saved before the restart
	e2.offend("203.0.113.91", offense.UnknownUser, 2*time.Hour)
	e2.offend("203.0.113.91", offense.UnknownUser, 2*time.Hour)
	if e2.banned("203.0.113.91") {
		t.Fatal("scores saved 2h ago should have decayed")
	}
}

func TestCorruptState(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	good := newEnv(t, Options{StateFile: path})
	for range 5 {
		good.offend("203.0.113.99", offense.AuthFailure, 0)
	}
	if err := good.j.saveNow(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	for name, content := range map[string][]byte{
		"truncated":     b[:len(b)/2],
		"garbage":       []byte("\x00\x01not json"),
		"wrong version": []byte(`{"version":99,"offenders":[]}`),
		"empty":         {},
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			j, err := New(Options{StateFile: path, Firewall: ban.NewDryRun(ban.DryRunOptions{})})
			if !errors.Is(err, ban.ErrBadState) || j == nil {
				t.Fatalf("New: %v, jail %v", err, j != nil)
			}
			if _, err := os.Stat(path + ".corrupt"); err != nil {
				t.Fatalf("not moved aside: %v", err)
			}
			// the jail works and can save a fresh state
			j.Offend(offense.Offense{IP: netip.MustParseAddr("203.0.113.5"), Rule: offense.Flood})
			if err := j.saveNow(); err != nil {
				t.Fatal(err)
			}
			os.Remove(path + ".corrupt")
		})
	}
}

func TestRestartRecoveryFromBackend(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0}
	fw := ban.NewDryRun(ban.DryRunOptions{Now: clk.Now})
	// a previous run banned two addresses, state file lost
	fw.Add(ctx, netip.MustParsePrefix("203.0.113.100/32"), 30*time.Minute)
	fw.Add(ctx, netip.MustParsePrefix("2001:db8::100/128"), 0)
	e := newEnv(t, Options{Firewall: fw, Now: clk.Now})
	if err := e.j.resync(ctx); err != nil {
		t.Fatal(err)
	}
	bans := e.j.Bans()
	if len(bans) != 2 || bans[0].Rule != "kernel" {
		t.Fatalf("adopted %+v", bans)
	}
	for _, b := range bans {
		if b.IP.String() == "203.0.113.100" && b.ExpiresAt != t0.Add(30*time.Minute) {
			t.Fatalf("expiry %+v", b)
		}
		if b.IP.String() == "2001:db8::100" && !b.ExpiresAt.IsZero() {
			t.Fatalf("permanent %+v", b)
		}
	}
	// an admin flushes the set: resync writes the bans back
	fw.Flush()
	if err := e.j.resync(ctx); err != nil {
		t.Fatal(err)
	}
	if !fw.Contains(netip.MustParsePrefix("203.0.113.100/32")) || !fw.Contains(netip.MustParsePrefix("2001:db8::100/128")) {
		t.Fatal("not re-added")
	}
	if got := testutil.ToFloat64(e.j.m.readded); got != 2 {
		t.Fatalf("readded = %v", got)
	}
	// unban removes from both
	if err := e.j.Unban(ctx, netip.MustParseAddr("203.0.113.100")); err != nil {
		t.Fatal(err)
	}
	if fw.Contains(netip.MustParsePrefix("203.0.113.100/32")) {
		t.Fatal("still in backend")
	}
}

func TestConcurrentOffend(t *testing.T) {
	e := newEnv(t, Options{QueueSize: 1 << 16})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				e.j.Offend(offense.Offense{IP: netip.AddrFrom4([4]byte{100, byte(g), byte(i >> 8), byte(i)}), Rule: offense.AuthFailure, Time: t0})
				if i%500 == 0 {
					e.j.AllOffenders()
				}
			}
		}()
	}
	wg.Wait()
	if n := len(e.j.AllOffenders()); n != 16000 {
		t.Fatalf("%d offenders", n)
	}
}

// batchFW is a ban.DryRun that also takes batches, recording their sizes.
type batchFW struct {
	*ban.DryRun
	mu      sync.Mutex
	batches []int
}

func (b *batchFW) AddBatch(ctx context.Context, es []ban.Entry, errs []error) error {
	b.mu.Lock()
	b.batches = append(b.batches, len(es))
	b.mu.Unlock()
	for i, e := range es {
		errs[i] = b.DryRun.Add(ctx, e.Prefix, e.Timeout)
	}
	return nil
}

func TestWriterBatches(t *testing.T) {
	fw := &batchFW{DryRun: ban.NewDryRun(ban.DryRunOptions{MaxElem: 900})}
	e := newEnv(t, Options{Firewall: fw, Now: time.Now, QueueSize: 2000})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.j.Run(ctx) }()
	waitReady(t, e.j)
	for i := range 1000 {
		e.j.Offend(offense.Offense{IP: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), Rule: offense.Flood, Time: time.Now()})
	}
	// a manual unban queued behind the adds is applied after them, in order
	if err := e.j.Unban(ctx, netip.MustParseAddr("198.18.0.5")); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	l, _ := fw.List(context.Background())
	if len(l) != 899 || fw.Contains(netip.MustParsePrefix("198.18.0.5/32")) {
		t.Fatalf("%d entries, unbanned one present: %v", len(l), fw.Contains(netip.MustParsePrefix("198.18.0.5/32")))
	}
	fw.mu.Lock()
	total := 0
	for _, n := range fw.batches {
		total += n
		if n > writerBatch || n < 2 {
			t.Fatalf("batch of %d", n)
		}
	}
	fw.mu.Unlock()
	if total > 1000 {
		t.Fatalf("batches %v", fw.batches)
	}
	if got := testutil.ToFloat64(e.j.m.errors.WithLabelValues("add")); got != 100 {
		t.Fatalf("full-set errors %v", got)
	}
	var h dtoHist
	if n := h.count(t, e.reg, "sipwarden_ban_latency_seconds"); n != 900 {
		t.Fatalf("latency observations %d", n)
	}
}

func waitReady(b testing.TB, j *Jail) {
	for range 1000 {
		if _, ok := j.Ready(); ok {
			return
		}
		time.Sleep(time.Millisecond)
	}
	b.Fatal("jail not ready")
}

func FuzzReadState(f *testing.F) {
	f.Add([]byte(`{"version":1,"offenders":[{"ip":"203.0.113.1","win_start":1,"cur":3,"counts":{"auth_failure":3},"bans":2,"ban":{"prefix":"203.0.113.1/32","rule":"flood","expires_at":"2100-01-01T00:00:00Z"}}]}`))
	f.Add([]byte(`{"version":1,"offenders":[{"ip":"::1","ban":{"prefix":"bogus"}}]}`))
	f.Add([]byte(`{"version":1`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "state.json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		j, err := New(Options{StateFile: path, SkipHostAddrs: true})
		if j == nil {
			t.Fatalf("no jail: %v", err)
		}
		j.Bans()
		j.AllOffenders()
		j.Offend(offense.Offense{IP: netip.MustParseAddr("203.0.113.1"), Rule: offense.Flood})
	})
}

func TestResyncLiftsBansOnRegisteredAddresses(t *testing.T) {
	ctx := context.Background()
	al := allow{}
	e := newEnv(t, Options{Allowlist: al})
	for _, ip := range []string{"203.0.113.10", "203.0.113.11"} {
		if err := e.j.Ban(ctx, netip.MustParseAddr(ip), time.Hour, "test"); err != nil {
			t.Fatal(err)
		}
	}
	// the office registers (e.g. learnt from the Event Socket after a restart)
	al[netip.MustParseAddr("203.0.113.10")] = "registered"
	if err := e.j.resync(ctx); err != nil {
		t.Fatal(err)
	}
	if e.banned("203.0.113.10") || e.fw.Contains(netip.MustParsePrefix("203.0.113.10/32")) || !e.banned("203.0.113.11") {
		t.Fatalf("bans %+v", e.j.Bans())
	}
	if st := e.state("203.0.113.10"); st.State != StateProtected || st.Why != "registered" {
		t.Fatalf("state %+v", st)
	}
	if got := testutil.ToFloat64(e.j.m.lifted.WithLabelValues(decision.Registered.String())); got != 1 {
		t.Fatalf("bans_lifted_total = %v", got)
	}
	if !strings.Contains(e.log.String(), "ban on 203.0.113.10 lifted: registered") {
		t.Fatalf("log: %s", e.log)
	}
}

func TestFutureOffenseTimeClamped(t *testing.T) {
	e := newEnv(t, Options{})
	e.offend("203.0.113.120", offense.AuthFailure, 400*24*time.Hour) // a year-inference error
	for i := range 4 {
		e.offend("203.0.113.120", offense.AuthFailure, time.Duration(i)*time.Second)
	}
	if !e.banned("203.0.113.120") {
		t.Fatalf("a future record froze the window: %+v", e.state("203.0.113.120"))
	}
}

// Spoofing stance: with UnverifiedFactor 0.5, single UDP packets (which a
// forged source can produce) need twice the evidence of verified failures.
func TestUnverifiedFactor(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	fw := ban.NewDryRun(ban.DryRunOptions{})
	j, err := New(Options{Firewall: fw, UnverifiedFactor: 0.5, Now: func() time.Time { return now },
		HostAddrs: func() ([]netip.Addr, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	forged, real := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	for i := range 5 {
		at := now.Add(time.Duration(i) * time.Second)
		j.Offend(offense.Offense{IP: forged, Rule: offense.MalformedSIP, Source: offense.SourceHEP, Time: at})
		j.Offend(offense.Offense{IP: real, Rule: offense.AuthFailure, Source: offense.SourceLog, Time: at, User: fmt.Sprint(1000 + i), Verified: true})
	}
	state := map[netip.Addr]Offender{}
	for _, o := range j.AllOffenders() {
		state[o.IP] = o
	}
	if o := state[forged]; o.Bans != 0 || o.Score != 2.5 {
		t.Errorf("unverified: %+v, want score 2.5 and no ban", o)
	}
	if o := state[real]; o.Bans != 1 {
		t.Errorf("verified: %+v, want banned", o)
	}
	if _, err := New(Options{UnverifiedFactor: 2}); err == nil {
		t.Error("factor 2 accepted")
	}
}

// A flood of forged sources that outscore a real attacker's first failures
// must evict its own entries, not the attacker's verified evidence.
func TestEvictionKeepsVerifiedEvidence(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	j, err := New(Options{MaxOffenders: 64, UnverifiedFactor: 0.5, Now: func() time.Time { return now },
		HostAddrs: func() ([]netip.Addr, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	attacker := netip.MustParseAddr("203.0.113.66")
	j.Offend(offense.Offense{IP: attacker, Rule: offense.AuthFailure, Source: offense.SourceHEP, Time: now, User: "1000", Verified: true})
	for i := range 10_000 {
		forged := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		j.Offend(offense.Offense{IP: forged, Rule: offense.ScannerUserAgent, Source: offense.SourceHEP, Time: now})
	}
	for i := range 4 {
		j.Offend(offense.Offense{IP: attacker, Rule: offense.AuthFailure, Source: offense.SourceHEP, Time: now.Add(time.Duration(i+1) * time.Second), User: fmt.Sprint(1001 + i), Verified: true})
	}
	for _, o := range j.AllOffenders() {
		if o.IP == attacker {
			if o.Bans != 1 {
				t.Fatalf("attacker: %+v, want banned after 5 verified failures", o)
			}
			return
		}
	}
	t.Fatal("attacker evicted by the forged flood")
}

// A state record whose ban the file cannot describe (bad prefix, no expiry)
// does not become a permanent ban.
func TestStateBadBanRecordSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	os.WriteFile(path, []byte(`{"version":1,"offenders":[{"ip":"198.51.100.24","cur":-5,"ban":{"prefix":"nonsense","rule":"x"}},`+
		`{"ip":"198.51.100.25","ban":{"prefix":"203.0.113.0/24","rule":"x"}}]}`), 0o600)
	j, err := New(Options{StateFile: path, HostAddrs: func() ([]netip.Addr, error) { return nil, nil }})
	if j == nil {
		t.Fatalf("no jail: %v", err)
	}
	if b := j.Bans(); len(b) != 0 {
		t.Errorf("bans from bad records: %+v", b)
	}
}
