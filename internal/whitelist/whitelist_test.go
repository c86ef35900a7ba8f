package whitelist

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable fake time source.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 11, 25, 19, 46, 14, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time               { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration)          { c.ns.Add(int64(d)) }
func (c *clock) In(d time.Duration) time.Time { return c.Now().Add(d) }

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func newWL(t testing.TB, c *clock, static ...string) (*Whitelist, *prometheus.Registry) {
	t.Helper()
	var ps []netip.Prefix
	for _, s := range static {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	reg := prometheus.NewRegistry()
	return New(Options{Static: ps, Now: c.Now, Registerer: reg}), reg
}

// reg1000 is user 1000's registration as the A_vanilla fixture shows it.
func reg1000(c *clock, addr string) Registration {
	return Registration{
		IP: ip(addr), User: "1000", Realm: "127.0.0.1", Profile: "internal",
		Contact: "sip:1000@127.0.0.1:15060;transport=UDP", CallID: "1-9887@127.0.0.1",
		UserAgent: "SIPp-reg-test", Node: "127.0.0.1:8021", ExpiresAt: c.In(3600 * time.Second),
	}
}

func TestStatic(t *testing.T) {
	c := newClock()
	w, reg := newWL(t, c, "192.0.2.0/24", "2001:db8::/64", "::ffff:198.51.100.7/128", "203.0.113.9/32", "10.1.2.3/8")
	for _, tc := range []struct {
		name string
		ip   string
		want bool
	}{
		{"v4 in /24", "192.0.2.77", true},
		{"v4 outside", "192.0.3.1", false},
		{"v4-mapped lookup", "::ffff:192.0.2.1", true},
		{"mapped prefix unmapped", "198.51.100.7", true},
		{"host route", "203.0.113.9", true},
		{"host route neighbour", "203.0.113.10", false},
		{"unmasked prefix is masked", "10.200.0.1", true},
		{"v6 in /64", "2001:db8::1234", true},
		{"v6 outside", "2001:db8:0:1::1", false},
		{"zero addr", "0.0.0.0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why, ok := w.Allowed(ip(tc.ip))
			if ok != tc.want {
				t.Fatalf("Allowed(%s) = %q,%v want %v", tc.ip, why, ok, tc.want)
			}
			if ok && why != ReasonStatic {
				t.Fatalf("why = %q", why)
			}
		})
	}
	if _, ok := w.Allowed(netip.Addr{}); ok {
		t.Fatal("invalid address allowed")
	}
	if got := testutil.ToFloat64(w.mStatic); got != 5 {
		t.Fatalf("static gauge = %v", got)
	}
	w.SetStatic(nil)
	if _, ok := w.Allowed(ip("192.0.2.77")); ok {
		t.Fatal("still allowed after SetStatic(nil)")
	}
	if n, _ := testutil.GatherAndCount(reg, "sipwarden_whitelist_ips"); n != 2 {
		t.Fatalf("whitelist_ips series = %d", n)
	}
}

func TestRegisterAndNAT(t *testing.T) {
	c := newClock()
	w, reg := newWL(t, c)
	nat := "198.51.100.10"
	a := reg1000(c, nat)
	b := a
	b.User, b.CallID, b.Contact = "1001", "1-10105@127.0.0.1", "sip:1001@198.51.100.10:15061"
	w.Upsert(a)
	w.Upsert(b)
	w.Upsert(a) // renewal: no duplicate
	if why, ok := w.Allowed(ip(nat)); !ok || why != ReasonRegistered {
		t.Fatalf("Allowed = %q,%v", why, ok)
	}
	if ips, regs := w.Len(); ips != 1 || regs != 2 {
		t.Fatalf("Len = %d,%d", ips, regs)
	}
	if got := testutil.ToFloat64(w.mRegs); got != 2 {
		t.Fatalf("registrations gauge = %v", got)
	}
	w.Remove(a.Node, ip(nat), "1000", "127.0.0.1", a.CallID)
	if _, ok := w.Allowed(ip(nat)); !ok {
		t.Fatal("NAT address lost its whitelist with one registration left")
	}
	e, ok := w.Lookup(ip(nat))
	if !ok || len(e.Registrations) != 1 || e.Registrations[0].User != "1001" {
		t.Fatalf("Lookup = %+v %v", e, ok)
	}
	w.Remove(a.Node, ip(nat), "1001", "127.0.0.1", b.CallID)
	if _, ok := w.Allowed(ip(nat)); ok {
		t.Fatal("allowed after its last registration left")
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP sipwarden_registrations Live SIP registrations held by the whitelist.
# TYPE sipwarden_registrations gauge
sipwarden_registrations 0
`), "sipwarden_registrations"); err != nil {
		t.Fatal(err)
	}
}

func TestRemoveMatching(t *testing.T) {
	node := "127.0.0.1:8021"
	for _, tc := range []struct {
		name                         string
		user, realm, contact, callID string
		otherNode                    bool
		wantLeft                     int
	}{
		{name: "by call-id", callID: "1-9887@127.0.0.1", wantLeft: 2},
		// The A_vanilla un-REGISTER carries a new call-id (1-10333): fall back to user@realm.
		{name: "unknown call-id falls back to user", user: "1000", realm: "127.0.0.1", callID: "1-10333@127.0.0.1", wantLeft: 1},
		{name: "contact narrows the fallback", user: "1000", realm: "127.0.0.1", contact: "sip:1000@192.0.2.5:5062", callID: "x", wantLeft: 2},
		{name: "unknown contact still removes the user", user: "1000", contact: "sip:other", wantLeft: 1},
		{name: "other realm", user: "1000", realm: "example.com", wantLeft: 3},
		{name: "other node", callID: "1-9887@127.0.0.1", otherNode: true, wantLeft: 3},
		{name: "nothing given", wantLeft: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			w, _ := newWL(t, c)
			a := reg1000(c, "192.0.2.5")
			b := a
			b.CallID, b.Contact = "second@phone", "sip:1000@192.0.2.5:5062"
			d := a
			d.User, d.CallID, d.Contact = "1002", "third", "sip:1002@192.0.2.5:5063"
			w.Upsert(a)
			w.Upsert(b)
			w.Upsert(d)
			n := node
			if tc.otherNode {
				n = "10.0.0.1:8021"
			}
			w.RemoveRegistration(Registration{Node: n, IP: ip("192.0.2.5"), User: tc.user, Realm: tc.realm, Contact: tc.contact, CallID: tc.callID})
			if _, regs := w.Len(); regs != tc.wantLeft {
				t.Fatalf("left %d registrations, want %d", regs, tc.wantLeft)
			}
		})
	}
}

func TestRemoveByCallIDWithoutAddress(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c)
	r := reg1000(c, "192.0.2.5")
	w.Upsert(r)
	if n := w.RemoveRegistration(Registration{Node: r.Node, CallID: r.CallID}); n != 1 {
		t.Fatalf("removed %d", n)
	}
}

func TestExpiryByTime(t *testing.T) {
	c := newClock()
	w, reg := newWL(t, c)
	r := reg1000(c, "192.0.2.20")
	r.ExpiresAt = c.In(10 * time.Second)
	w.Upsert(r)
	long := reg1000(c, "192.0.2.21")
	long.CallID = "long"
	w.Upsert(long)

	c.Add(10*time.Second + DefaultGrace - time.Second)
	w.Sweep() // what Run does every SweepEvery
	if _, ok := w.Allowed(ip("192.0.2.20")); !ok {
		t.Fatal("expired before expiry+grace")
	}
	c.Add(time.Second)
	// No event and no sweep yet: every lookup already says no.
	if _, ok := w.Allowed(ip("192.0.2.20")); ok {
		t.Fatal("Allowed true after expiry+grace")
	}
	if _, ok := w.AllowedAt(ip("192.0.2.20"), c.Now()); ok {
		t.Fatal("AllowedAt true after expiry+grace")
	}
	if _, ok := w.Lookup(ip("192.0.2.20")); ok {
		t.Fatal("Lookup still shows the expired registration")
	}
	if ips, regs := w.Len(); ips != 2 || regs != 2 {
		t.Fatalf("before sweep Len = %d,%d", ips, regs)
	}
	if n := w.Sweep(); n != 1 {
		t.Fatalf("Sweep removed %d", n)
	}
	if _, ok := w.Allowed(ip("192.0.2.20")); ok {
		t.Fatal("still allowed after the sweep")
	}
	if ips, regs := w.Len(); ips != 1 || regs != 1 {
		t.Fatalf("after sweep Len = %d,%d", ips, regs)
	}
	if got := testutil.ToFloat64(w.mDynamic); got != 1 {
		t.Fatalf("dynamic gauge = %v", got)
	}
	_ = reg
	if _, ok := w.Allowed(ip("192.0.2.21")); !ok {
		t.Fatal("live neighbour lost")
	}
	// An already dead registration is not added.
	dead := reg1000(c, "192.0.2.22")
	dead.CallID = "dead"
	dead.ExpiresAt = c.In(-2 * DefaultGrace)
	w.Upsert(dead)
	if _, ok := w.Allowed(ip("192.0.2.22")); ok {
		t.Fatal("dead registration allowed")
	}
}

func TestExpiryPartialSweep(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c)
	a := reg1000(c, "192.0.2.30")
	a.ExpiresAt = c.In(5 * time.Second)
	b := reg1000(c, "192.0.2.30")
	b.CallID, b.Contact = "b", "sip:1000@192.0.2.30:5070" // another phone of the same user
	w.Upsert(a)
	w.Upsert(b)
	c.Add(2 * time.Minute)
	if n := w.Sweep(); n != 1 {
		t.Fatalf("swept %d", n)
	}
	if _, ok := w.Allowed(ip("192.0.2.30")); !ok {
		t.Fatal("lost live registration")
	}
	if _, regs := w.Len(); regs != 1 {
		t.Fatalf("regs %d", regs)
	}
}

func TestRunSweeps(t *testing.T) {
	c := newClock()
	w := New(Options{Now: c.Now, SweepEvery: time.Millisecond})
	r := reg1000(c, "192.0.2.40")
	r.ExpiresAt = c.In(time.Second)
	w.Upsert(r)
	c.Add(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, ok := w.Allowed(ip("192.0.2.40"))
		if _, regs := w.Len(); regs == 0 && !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run never swept")
		}
		time.Sleep(time.Millisecond) // polling a state with no event to wait on
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRoamingCallID(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c)
	r := reg1000(c, "192.0.2.50")
	w.Upsert(r)
	r.IP = ip("192.0.2.51")
	w.Upsert(r)
	if _, ok := w.Allowed(ip("192.0.2.50")); ok {
		t.Fatal("old address kept after the call-id moved")
	}
	if _, ok := w.Allowed(ip("192.0.2.51")); !ok {
		t.Fatal("new address not allowed")
	}
	if ips, regs := w.Len(); ips != 1 || regs != 1 {
		t.Fatalf("Len = %d,%d", ips, regs)
	}
}

func TestReplaceNode(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c)
	n1, n2 := "fs1:8021", "fs2:8021"
	keep := reg1000(c, "192.0.2.60")
	keep.Node = n1
	stale := reg1000(c, "192.0.2.61")
	stale.Node, stale.CallID = n1, "stale"
	other := reg1000(c, "192.0.2.61")
	other.Node, other.CallID = n2, "other-node"
	w.Upsert(keep)
	w.Upsert(stale)
	w.Upsert(other)

	// The listing: keep (without user agent, as FreeSWITCH's JSON has none) and a new one.
	listed := keep
	listed.UserAgent = ""
	listed.ExpiresAt = c.In(time.Hour)
	fresh := reg1000(c, "192.0.2.62")
	fresh.CallID, fresh.Node = "fresh", "ignored: ReplaceNode sets the node"
	w.ReplaceNode(n1, []Registration{listed, fresh})

	for _, tc := range []struct {
		ip   string
		want bool
	}{{"192.0.2.60", true}, {"192.0.2.61", true}, {"192.0.2.62", true}} {
		if _, ok := w.Allowed(ip(tc.ip)); ok != tc.want {
			t.Errorf("Allowed(%s) = %v", tc.ip, ok)
		}
	}
	e, _ := w.Lookup(ip("192.0.2.61"))
	if len(e.Registrations) != 1 || e.Registrations[0].Node != n2 {
		t.Fatalf("192.0.2.61 = %+v: stale reg of %s kept or other node's lost", e, n1)
	}
	e, _ = w.Lookup(ip("192.0.2.60"))
	if len(e.Registrations) != 1 || e.Registrations[0].UserAgent != "SIPp-reg-test" {
		t.Fatalf("user agent not merged: %+v", e)
	}
	e, _ = w.Lookup(ip("192.0.2.62"))
	if e.Registrations[0].Node != n1 {
		t.Fatalf("node = %q", e.Registrations[0].Node)
	}
	if ips, regs := w.Len(); ips != 3 || regs != 3 {
		t.Fatalf("Len = %d,%d", ips, regs)
	}
	// Empty listing ({"row_count": 0}) clears the node.
	w.ReplaceNode(n1, nil)
	if ips, regs := w.Len(); ips != 1 || regs != 1 {
		t.Fatalf("after empty resync Len = %d,%d", ips, regs)
	}
}

func TestReplaceNodeAfterKeepsNewerEvents(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c)
	node := "fs1:8021"
	old := reg1000(c, "192.0.2.70")
	old.Node = node
	w.Upsert(old)
	asked := w.Mark()                  // the listing is requested here
	racing := reg1000(c, "192.0.2.71") // an event processed before the listing arrived
	racing.Node, racing.CallID = node, "racing"
	w.Upsert(racing)
	w.ReplaceNodeAfter(node, nil, asked)
	if _, ok := w.Allowed(ip("192.0.2.70")); ok {
		t.Fatal("stale registration survived the resync")
	}
	if _, ok := w.Allowed(ip("192.0.2.71")); !ok {
		t.Fatal("resync undid a newer event")
	}
}

func TestJSON(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c, "192.0.2.0/24")
	w.Upsert(reg1000(c, "127.0.0.1"))
	b, err := json.Marshal(w.Entries())
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"ip":"127.0.0.1","static":false,"registrations":[{"user":"1000","realm":"127.0.0.1","profile":"internal","contact":"sip:1000@127.0.0.1:15060;transport=UDP","call_id":"1-9887@127.0.0.1","user_agent":"SIPp-reg-test","node":"127.0.0.1:8021","expires_at":"2026-11-25T20:46:14Z"}]},` +
		`{"ip":"192.0.2.0","prefix":"192.0.2.0/24","static":true,"registrations":[]}]`
	if string(b) != want {
		t.Fatalf("JSON\n got %s\nwant %s", b, want)
	}
	e, ok := w.Lookup(ip("192.0.2.9"))
	if !ok || !e.Static || e.Prefix.String() != "192.0.2.0/24" {
		t.Fatalf("Lookup static = %+v %v", e, ok)
	}
	if _, ok := w.Lookup(ip("198.51.100.1")); ok {
		t.Fatal("Lookup of a stranger ok")
	}
}

func TestAllowedDoesNotAllocate(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c, "192.0.2.0/24", "2001:db8::/32")
	fill(w, c, 1000)
	for _, a := range []string{"10.0.1.1", "192.0.2.1", "198.51.100.1", "2001:db8::1", "::ffff:10.0.1.2"} {
		addr := ip(a)
		if n := testing.AllocsPerRun(1000, func() { w.Allowed(addr) }); n != 0 {
			t.Errorf("Allowed(%s) allocates %v", a, n)
		}
	}
}

func TestConcurrent(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c, "192.0.2.0/24")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				w.Allowed(genIP(i % 500))
				w.Lookup(genIP(i % 500))
			}
		})
	}
	for i := 0; i < 2000; i++ {
		r := genReg(c, i%500)
		w.Upsert(r)
		if i%7 == 0 {
			w.Remove(r.Node, r.IP, r.User, r.Realm, r.CallID)
		}
		if i%300 == 0 {
			w.Entries()
			w.Sweep()
			w.ReplaceNode("node-b", []Registration{genReg(c, i)})
		}
	}
	close(stop)
	wg.Wait()
}

// TestMemoryBudget holds the limit: 100k registrations in <= 50 MB.
func TestMemoryBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 100k registrations")
	}
	per, total := measure(100_000)
	t.Logf("%.0f bytes per registration, %.1f MB for 100k", per, total/1e6)
	if total > 50e6 {
		t.Fatalf("100k registrations take %.1f MB, budget 50 MB", total/1e6)
	}
}

func genIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// genReg builds a realistic registration: a UUID-sized call-id, a contact
// with the public address, a common user agent.
func genReg(c *clock, i int) Registration {
	a := genIP(i)
	return Registration{
		IP: a, User: fmt.Sprintf("%d", 1000+i%9000), Realm: "pbx.example.com", Profile: "internal",
		Contact:   fmt.Sprintf("sip:%d@%s:%d;transport=UDP", 1000+i%9000, a, 5060+i%1000),
		CallID:    fmt.Sprintf("%08x-%04x-4a1b-9c2d-%012x", i, i&0xffff, i*7919),
		UserAgent: "Yealink SIP-T46S 66.86.0.15", Node: "127.0.0.1:8021",
		ExpiresAt: c.In(time.Hour),
	}
}

func fill(w *Whitelist, c *clock, n int) {
	for i := 0; i < n; i++ {
		w.Upsert(genReg(c, i))
	}
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// measure returns the retained heap per registration and in total for a
// whitelist holding n registrations on n addresses (the worst case: no NAT
// sharing).
func measure(n int) (per, total float64) {
	c := newClock()
	before := heap()
	w := New(Options{Now: c.Now})
	fill(w, c, n)
	after := heap()
	runtime.KeepAlive(w)
	total = float64(after) - float64(before)
	return total / float64(n), total
}

// TestStaticLongList checks the map-probe path (more than linearMax IPv4
// prefixes) against a plain scan.
func TestStaticLongList(t *testing.T) {
	var ps []netip.Prefix
	for i := 0; i < 3*linearMax; i++ {
		bits := 8 + i%25
		ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(11 + i), byte(i * 7), byte(i * 13), 9}), bits).Masked())
	}
	w := New(Options{Static: ps})
	for i := 0; i < 20000; i++ {
		a := netip.AddrFrom4([4]byte{byte(11 + i%60), byte(i * 7), byte(i / 3), byte(i)})
		want := false
		for _, p := range ps {
			want = want || p.Contains(a)
		}
		if _, got := w.Allowed(a); got != want {
			t.Fatalf("Allowed(%s) = %v, want %v", a, got, want)
		}
		if e, got := w.Lookup(a); got != want || (got && !e.Prefix.Contains(a)) {
			t.Fatalf("Lookup(%s) = %+v %v", a, e, got)
		}
	}
}

// TestRefreshWithNewCallID: a refresh with a new call-id and the same
// contact renews the registration instead of adding a second one.
func TestRefreshWithNewCallID(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c)
	r := reg1000(c, "192.0.2.80")
	w.Upsert(r)
	r.CallID = "refreshed@phone"
	r.ExpiresAt = c.In(2 * time.Hour)
	w.Upsert(r)
	e, _ := w.Lookup(r.IP)
	if len(e.Registrations) != 1 || e.Registrations[0].CallID != "refreshed@phone" || !e.Registrations[0].ExpiresAt.Equal(r.ExpiresAt) {
		t.Fatalf("entry %+v", e)
	}
	// Another contact of the same user is another registration.
	r.CallID, r.Contact = "second@phone", "sip:1000@192.0.2.80:5070"
	w.Upsert(r)
	if _, regs := w.Len(); regs != 2 {
		t.Fatalf("%d registrations", regs)
	}
	// The old call-id no longer leads anywhere.
	if n := w.RemoveRegistration(Registration{Node: r.Node, CallID: "1-9887@127.0.0.1"}); n != 0 {
		t.Fatalf("removed %d by a stale call-id", n)
	}
}

func TestRegistrationsCount(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c, "192.0.2.0/24")
	a := reg1000(c, "198.51.100.90")
	w.Upsert(a)
	a.CallID, a.Contact = "other", "sip:1000@198.51.100.90:5070"
	w.Upsert(a)
	for ip, want := range map[string]int{"198.51.100.90": 2, "192.0.2.1": 0, "203.0.113.1": 0} {
		if got := w.Registrations(netip.MustParseAddr(ip)); got != want {
			t.Errorf("Registrations(%s) = %d, want %d", ip, got, want)
		}
	}
}
