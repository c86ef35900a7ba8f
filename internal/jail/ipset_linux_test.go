package jail

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipwarden/sipwarden/internal/ipset"
	"github.com/sipwarden/sipwarden/internal/offense"

	"github.com/sipwarden/sipwarden/internal/testenv"
)

func newTestIPSet(t testing.TB, ns *testenv.NS, o ipset.Options) *ipset.Set {
	t.Helper()
	o.NetNS = int(ns.H)
	if o.SetV4 == "" {
		o.SetV4, o.SetV6 = "swt4", "swt6"
	}
	s, err := ipset.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// kernelTimeouts parses `ipset list SET` into member -> timeout seconds.
func kernelTimeouts(t testing.TB, ns *testenv.NS, set string) map[string]int {
	t.Helper()
	out := ns.Exec(t, "ipset", "list", set)
	m := map[string]int{}
	inMembers := false
	re := regexp.MustCompile(`^(\S+) timeout (\d+)$`)
	for _, l := range strings.Split(out, "\n") {
		if l == "Members:" {
			inMembers = true
			continue
		}
		if inMembers {
			if mm := re.FindStringSubmatch(strings.TrimSpace(l)); mm != nil {
				n, _ := strconv.Atoi(mm[2])
				m[mm[1]] = n
			}
		}
	}
	return m
}

func near(got, want, slack int) bool { return got <= want && got >= want-slack }

// Regression (issue 12 item 2): forged scanner packets filled the set;
// afterwards no ban reached the kernel while /readyz stayed 200. A full set
// makes the jail unready, naming it, and a verified ban takes the place of
// an unverified one.
func TestIpsetFullFailsClosedAndVerifiedBansYield(t *testing.T) {
	ns := testenv.NewNS(t, "f")
	s := newTestIPSet(t, ns, ipset.Options{MaxElem: 4})
	ctx := context.Background()
	e := newEnv(t, Options{Firewall: s, Now: time.Now})
	forged := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}) }
	// the forged flood: one unverified scanner packet each, banned at once
	for i := range 6 {
		e.j.Offend(offense.Offense{IP: forged(i), Rule: offense.ScannerUserAgent, Source: offense.SourceCapture, Time: time.Now()})
	}
	e.flush()
	if n := len(kernelTimeouts(t, ns, "swt4")); n != 4 {
		t.Fatalf("%d entries in a set of 4", n)
	}
	reason, ok := e.j.Ready()
	if ok || reason != "set swt4 full (4/4)" {
		t.Fatalf("Ready() = %q, %v with a full set", reason, ok)
	}
	if got := testutil.ToFloat64(e.j.m.setFull.WithLabelValues("swt4")); got != 1 {
		t.Fatalf("sipwarden_ban_set_full{set=swt4} = %v", got)
	}
	// the real brute-forcer (verified evidence) still gets in
	real := netip.MustParseAddr("203.0.113.66")
	for i := range 5 {
		e.j.Offend(offense.Offense{IP: real, Rule: offense.AuthFailure, Source: offense.SourceESL, Time: time.Now(), User: fmt.Sprint(1000 + i), Verified: true})
	}
	e.flush()
	m := kernelTimeouts(t, ns, "swt4")
	if _, in := m[real.String()]; !in || len(m) != 4 {
		t.Fatalf("verified ban not in the full set: %v", m)
	}
	if got := testutil.ToFloat64(e.j.m.yielded); got != 1 {
		t.Fatalf("sipwarden_bans_yielded_total = %v", got)
	}
	if !e.banned(real.String()) || len(e.j.Bans()) != 4 {
		t.Fatalf("jail bans %+v, want the verified one and the 3 unverified still in the set", e.j.Bans())
	}
	// a manual ban yields too
	if err := e.j.Ban(ctx, netip.MustParseAddr("203.0.113.67"), time.Hour, ""); err != nil {
		t.Fatalf("manual ban on a full set: %v", err)
	}
	// once the verified bans hold the set, another unverified ban fails, loudly
	e.j.Offend(offense.Offense{IP: forged(50), Rule: offense.ScannerUserAgent, Source: offense.SourceCapture, Time: time.Now()})
	e.flush()
	if _, ok := e.j.Ready(); ok {
		t.Fatal("ready with a full set")
	}
	// room again (an admin flushes the set): the next resync says so
	ns.Exec(t, "ipset", "flush", "swt4")
	if err := e.j.resync(ctx); err != nil {
		t.Fatal(err)
	}
	if reason, ok := e.j.Ready(); !ok {
		t.Fatalf("still unready after the set has room: %s", reason)
	}
	if got := testutil.ToFloat64(e.j.m.setFull.WithLabelValues("swt4")); got != 0 {
		t.Fatalf("sipwarden_ban_set_full{set=swt4} = %v after the flush", got)
	}
}

func TestIpsetJailRestartAndResync(t *testing.T) {
	ns := testenv.NewNS(t, "r")
	ctx := context.Background()
	state := t.TempDir() + "/state.json"
	s := newTestIPSet(t, ns, ipset.Options{})

	// first run: two bans, one manual
	e := newEnv(t, Options{Firewall: s, Now: time.Now, StateFile: state})
	run := func(j *Jail) (stop func()) {
		c, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { done <- j.Run(c) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
	stop := run(e.j)
	for range 5 {
		e.j.Offend(offense.Offense{IP: netip.MustParseAddr("203.0.113.1"), Rule: offense.AuthFailure, Time: time.Now()})
	}
	if err := e.j.Ban(ctx, netip.MustParseAddr("2001:db8::2"), 2*time.Hour, "by hand"); err != nil {
		t.Fatal(err)
	}
	if err := e.j.resync(ctx); err != nil { // the queued write happens on the writer; Ban waited, Resync too
		t.Fatal(err)
	}
	stop()
	if m := kernelTimeouts(t, ns, "swt4"); !near(m["203.0.113.1"], 3600, 5) {
		t.Fatalf("kernel %v", m)
	}

	// restart with the state file lost; an admin also added one by hand
	ns.Exec(t, "ipset", "add", "swt4", "198.51.100.9", "timeout", "600")
	s2 := newTestIPSet(t, ns, ipset.Options{})
	e2 := newEnv(t, Options{Firewall: s2, Now: time.Now})
	stop = run(e2.j)
	defer stop()
	if err := e2.j.resync(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]Ban{}
	for _, b := range e2.j.Bans() {
		got[b.IP.String()] = b
	}
	if len(got) != 3 || got["198.51.100.9"].Rule != "kernel" || time.Until(got["2001:db8::2"].ExpiresAt) < 2*time.Hour-10*time.Second {
		t.Fatalf("read back %+v", got)
	}

	// an admin flushes, then destroys the sets: the resync repairs both
	ns.Exec(t, "ipset", "flush", "swt4")
	if err := e2.j.resync(ctx); err != nil {
		t.Fatal(err)
	}
	if m := kernelTimeouts(t, ns, "swt4"); len(m) != 2 {
		t.Fatalf("after flush+resync %v", m)
	}
	ns.Exec(t, "ipset", "destroy")
	if err := e2.j.resync(ctx); err != nil {
		t.Fatal(err)
	}
	if m := kernelTimeouts(t, ns, "swt4"); len(m) != 2 || !near(m["203.0.113.1"], 3600, 10) {
		t.Fatalf("after destroy+resync %v", m)
	}
	if m := kernelTimeouts(t, ns, "swt6"); !near(m["2001:db8::2"], 7200, 10) {
		t.Fatalf("v6 after destroy+resync %v", m)
	}
	if got := testutil.ToFloat64(e2.j.m.recreated); got != 2 {
		t.Fatalf("set_recreated = %v", got)
	}
	if _, ok := e2.j.Ready(); !ok {
		t.Fatal("not ready")
	}
	// unban reaches the kernel
	if err := e2.j.Unban(ctx, netip.MustParseAddr("203.0.113.1")); err != nil {
		t.Fatal(err)
	}
	if _, ok := kernelTimeouts(t, ns, "swt4")["203.0.113.1"]; ok {
		t.Fatal("still in the kernel")
	}
}
