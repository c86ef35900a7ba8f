package protect

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// Distributed guessing (issue 13 item 6): failures against one extension
// from many addresses, each far below a ban, make the extension a target
// once DistributedAddresses distinct addresses fail within the window: one
// count, one log line naming it, the gauge, the API list. Other users, the
// same address repeating, and addresses that aged out do not count.
func TestDistributedGuessing(t *testing.T) {
	now := t0
	var log bytes.Buffer
	reg := prometheus.NewRegistry()
	g, err := New(Options{Registerer: reg, Now: func() time.Time { return now }, DistributedAddresses: 10, Window: 10 * time.Minute,
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	failFrom := func(i int, user string, rule offense.Rule) {
		g.Failure(offense.Offense{IP: netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), Rule: rule, User: user,
			Source: offense.SourceESL, Time: now})
	}
	targeted := func() float64 { return testutil.ToFloat64(g.targets.raised) }
	gauge := func() float64 {
		n, err := testutil.GatherAndCount(reg, "sipwarden_protect_targeted_users")
		if err != nil || n != 1 {
			t.Fatalf("gauge: %d %v", n, err)
		}
		mf, _ := reg.Gather()
		for _, f := range mf {
			if f.GetName() == "sipwarden_protect_targeted_users" {
				return f.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}

	// nine addresses, a user with a stale password repeating from one, and
	// a rule that is not a credential failure: nothing
	for i := range 9 {
		failFrom(i, "1001", offense.AuthFailure)
		now = now.Add(time.Second)
	}
	for range 30 {
		failFrom(100, "1002", offense.AuthFailure)
		failFrom(101, "1001", offense.ScannerUserAgent)
	}
	if targeted() != 0 || gauge() != 0 {
		t.Fatalf("below the limit: raised %v, gauge %v", targeted(), gauge())
	}
	// the tenth address (an unknown_user counts as well)
	failFrom(9, "1001", offense.UnknownUser)
	failFrom(10, "1001", offense.AuthFailure)
	if targeted() != 1 || gauge() != 1 {
		t.Fatalf("at the limit: raised %v, gauge %v", targeted(), gauge())
	}
	if !strings.Contains(log.String(), `distributed guessing against user \"1001\": 10 distinct addresses`) ||
		strings.Count(log.String(), "distributed guessing") != 1 {
		t.Fatalf("log:\n%s", log.String())
	}
	list := g.Targeted()
	if len(list) != 1 || list[0].User != "1001" || list[0].Addresses != 11 || !list[0].Targeted || len(list[0].Sample) != 5 {
		t.Fatalf("targets %+v", list)
	}
	// the window passes: forgotten, and counted again when it comes back
	now = now.Add(11 * time.Minute)
	if gauge() != 0 || len(g.Targeted()) != 0 {
		t.Fatalf("after the window: gauge %v, targets %+v", gauge(), g.Targeted())
	}
	for i := range 10 {
		failFrom(50+i, "1001", offense.AuthFailure)
	}
	if targeted() != 2 {
		t.Fatalf("raised %v after a second wave, want 2", targeted())
	}
}

// The users tracked are bounded: a flood of distinct user names never
// grows the map past DefaultMaxTargets, nor the addresses per user past
// maxTargetAddrs.
func TestTargetsBounded(t *testing.T) {
	now := t0
	g, err := New(Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range DefaultMaxTargets + 500 {
		g.Failure(offense.Offense{IP: netip.MustParseAddr("203.0.113.1"), Rule: offense.AuthFailure, User: fmt.Sprint("u", i), Time: now})
	}
	for i := range 1000 {
		g.Failure(offense.Offense{IP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Rule: offense.AuthFailure, User: "1001", Time: now})
	}
	g.targets.mu.Lock()
	n, a := len(g.targets.users), len(g.targets.users["1001"].addrs)
	g.targets.mu.Unlock()
	if n > DefaultMaxTargets || a != maxTargetAddrs {
		t.Fatalf("users %d (max %d), addresses of 1001 %d (want %d)", n, DefaultMaxTargets, a, maxTargetAddrs)
	}
}
