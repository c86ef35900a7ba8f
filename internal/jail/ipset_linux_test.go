package jail

import (
	"context"
	"errors"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/ipset"
	"github.com/sipwarden/sipwarden/internal/offense"
)

func newTestIPSet(t testing.TB, ns *testNS, o ipset.Options) *ipset.Set {
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
func kernelTimeouts(t testing.TB, ns *testNS, set string) map[string]int {
	t.Helper()
	out := ns.exec(t, "ipset", "list", set)
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

func TestIpsetFullJail(t *testing.T) {
	ns := newNS(t, "f")
	s := newTestIPSet(t, ns, ipset.Options{MaxElem: 4})
	ctx := context.Background()
	for i := range 4 {
		if err := s.Add(ctx, netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 32), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	// through the jail: counted, reported, no crash; readiness is not lost for a full set
	e := newEnv(t, Options{Firewall: s, Now: time.Now})
	ctxRun, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- e.j.Run(ctxRun) }()
	e.j.Offend(offense.Offense{IP: netip.MustParseAddr("198.51.100.1"), Rule: offense.ScannerUserAgent, Time: time.Now()})
	if err := e.j.Ban(ctx, netip.MustParseAddr("198.51.100.2"), time.Hour, ""); !errors.Is(err, ban.ErrSetFull) {
		t.Fatalf("manual ban on a full set: %v", err)
	}
	cancel()
	<-done
	if got := testutil.ToFloat64(e.j.m.errors.WithLabelValues("add")); got < 2 {
		t.Fatalf("ban_errors_total{op=add} = %v", got)
	}
	if _, ok := e.j.Ready(); !ok {
		t.Fatal("a full set must not make the backend unready")
	}
}

func TestIpsetJailRestartAndResync(t *testing.T) {
	ns := newNS(t, "r")
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
	if err := e.j.Resync(ctx); err != nil { // the queued write happens on the writer; Ban waited, Resync too
		t.Fatal(err)
	}
	stop()
	if m := kernelTimeouts(t, ns, "swt4"); !near(m["203.0.113.1"], 3600, 5) {
		t.Fatalf("kernel %v", m)
	}

	// restart with the state file lost; an admin also added one by hand
	ns.exec(t, "ipset", "add", "swt4", "198.51.100.9", "timeout", "600")
	s2 := newTestIPSet(t, ns, ipset.Options{})
	e2 := newEnv(t, Options{Firewall: s2, Now: time.Now})
	stop = run(e2.j)
	defer stop()
	if err := e2.j.Resync(ctx); err != nil {
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
	ns.exec(t, "ipset", "flush", "swt4")
	if err := e2.j.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if m := kernelTimeouts(t, ns, "swt4"); len(m) != 2 {
		t.Fatalf("after flush+resync %v", m)
	}
	ns.exec(t, "ipset", "destroy")
	if err := e2.j.Resync(ctx); err != nil {
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
