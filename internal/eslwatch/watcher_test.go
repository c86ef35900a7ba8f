package eslwatch

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

const wait = 10 * time.Second // generous: CI machines are slow, success is fast

type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(fixedNow.UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// harness runs a Watcher against esltest servers with a fake clock.
type harness struct {
	t        *testing.T
	clock    *fakeClock
	wl       *whitelist.Whitelist
	w        *Watcher
	reg      *prometheus.Registry
	offenses chan offense.Offense

	mu      sync.Mutex
	counts  map[string]int
	changed chan struct{}

	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, addrs []string, mod func(*Options)) *harness {
	t.Helper()
	h := &harness{
		t: t, clock: newFakeClock(), reg: prometheus.NewRegistry(),
		offenses: make(chan offense.Offense, 100), counts: map[string]int{}, changed: make(chan struct{}),
	}
	h.wl = whitelist.New(whitelist.Options{Now: h.clock.Now, Registerer: h.reg})
	opts := Options{
		Addresses: addrs, Password: "ClueCon",
		DialTimeout: 2 * time.Second, CommandTimeout: 2 * time.Second,
		BackoffMin: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
		Whitelist: h.wl, Offenses: offense.SinkFunc(func(o offense.Offense) { h.offenses <- o }),
		Registerer: h.reg, Now: h.clock.Now,
	}
	if mod != nil {
		mod(&opts)
	}
	w, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	w.testHook = func(what string) {
		h.mu.Lock()
		h.counts[what]++
		close(h.changed)
		h.changed = make(chan struct{})
		h.mu.Unlock()
	}
	h.w = w
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- w.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run = %v", err)
		}
	case <-time.After(wait):
		h.t.Errorf("Run did not return after cancel")
	}
}

// waitFor waits until the hook has seen n of what ("event", "resync").
func (h *harness) waitFor(what string, n int) {
	h.t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		got, ch := h.counts[what], h.changed
		h.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			h.t.Fatalf("timed out waiting for %d %s (have %d)", n, what, got)
		}
	}
}

func (h *harness) count(what string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[what]
}

// waitMetric waits until a counter reaches want; metrics have no event to
// wait on, so this polls.
func (h *harness) waitMetric(name string, c prometheus.Collector, want float64) {
	h.t.Helper()
	deadline := time.Now().Add(wait)
	for testutil.ToFloat64(c) < want {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s = %v, want >= %v", name, testutil.ToFloat64(c), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (h *harness) allowed(ip string) bool {
	_, ok := h.wl.Allowed(netip.MustParseAddr(ip))
	return ok
}

// fixtureEvents returns the event frames of a capture, byte for byte.
func fixtureEvents(t testing.TB, file string) []string {
	t.Helper()
	evs, err := esltest.EventFrames(esltest.Fixture(t, file))
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestConnectAuthSubscribeResync(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	srv.SetRegistrations(listingA)
	h := start(t, []string{srv.Addr}, nil)
	h.waitFor("ready", 1)
	if !h.allowed("127.0.0.1") {
		t.Fatal("listed registration not whitelisted after the connect resync")
	}
	e, _ := h.wl.Lookup(netip.MustParseAddr("127.0.0.1"))
	if len(e.Registrations) != 1 || e.Registrations[0].Node != srv.Addr || e.Registrations[0].CallID != "1-9887@127.0.0.1" {
		t.Fatalf("entry %+v", e)
	}
	want := []string{"auth ClueCon", Subscription, ResyncCommand}
	if got := srv.Commands(); !slices.Equal(got, want) {
		t.Fatalf("commands %q, want %q", got, want)
	}
	if reason, ok := h.w.Ready(); !ok {
		t.Fatalf("not ready: %s", reason)
	}
	if got := testutil.ToFloat64(h.w.m.connected); got != 1 {
		t.Fatalf("esl_connected = %v", got)
	}
	h.stop()
	if got := testutil.ToFloat64(h.w.m.connected); got != 0 {
		t.Fatalf("esl_connected after stop = %v", got)
	}
}

func TestAuthRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mode   esltest.AuthMode
		pass   string
		reason string
	}{
		{"-ERR invalid", esltest.AuthCheck, "wrong", "auth"},
		{"text/rude-rejection", esltest.AuthRude, "ClueCon", "rejected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := esltest.NewServer(t, "ClueCon")
			srv.SetAuthMode(tc.mode)
			h := start(t, []string{srv.Addr}, func(o *Options) { o.Password = tc.pass })
			c := h.w.m.disconnects.WithLabelValues(tc.reason)
			h.waitMetric("disconnects{"+tc.reason+"}", c, 3) // and it keeps trying
			if reason, ok := h.w.Ready(); ok || !strings.Contains(reason, srv.Addr) {
				t.Fatalf("Ready = %q, %v", reason, ok)
			}
			if srv.Subscribed() != 0 {
				t.Fatal("subscribed without authentication")
			}
			// The peer mends its ways: the watcher gets in.
			srv.SetAuthMode(esltest.AuthCheck)
			if tc.pass == "wrong" {
				return // the password is ours to fix; nothing more to see
			}
			h.waitFor("ready", 1)
			if _, ok := h.w.Ready(); !ok {
				t.Fatal("not ready after the rejection ended")
			}
		})
	}
}

func TestFixtureStreamA(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	h := start(t, []string{srv.Addr}, nil)
	h.waitFor("resync", 1)
	evs := fixtureEvents(t, "A_vanilla_esl_custom_sofia_events.raw.txt")
	// Up to and including sofia::register (the third event).
	if err := srv.Push(strings.Join(evs[:3], "")); err != nil {
		t.Fatal(err)
	}
	h.waitFor("event", 3)
	if !h.allowed("127.0.0.1") {
		t.Fatal("not whitelisted after sofia::register")
	}
	if len(h.offenses) != 0 {
		t.Fatal("pre_register or register_attempt reported as an offense")
	}
	// The wrong password, the unauthenticated INVITE, the un-REGISTER.
	if err := srv.Push(strings.Join(evs[3:], "")); err != nil {
		t.Fatal(err)
	}
	h.waitFor("event", len(evs))
	if h.allowed("127.0.0.1") {
		t.Fatal("still whitelisted after sofia::unregister (new call-id, same user and contact)")
	}
	if len(h.offenses) != 1 {
		t.Fatalf("%d offenses, want the one register_failure", len(h.offenses))
	}
	o := <-h.offenses
	want := offense.Offense{
		IP: netip.MustParseAddr("127.0.0.1"), Rule: offense.AuthFailure, Source: offense.SourceESL,
		Time: time.UnixMicro(1795635981939693).UTC(), User: "1001", Method: "REGISTER",
		Detail: "SIPp-reg-test", Verified: true, Port: 15061, // network-port: the NAT mapping
	}
	if o != want {
		t.Fatalf("offense\n got %+v\nwant %+v", o, want)
	}
	for ev, n := range map[string]float64{
		"sofia::pre_register": 4, "sofia::register_attempt": 3, "sofia::register": 1,
		"sofia::register_failure": 1, "sofia::unregister": 1, "other": 0,
	} {
		if got := testutil.ToFloat64(h.w.m.event([]byte(ev))); got != n {
			t.Errorf("esl_events_total{event=%q} = %v, want %v", ev, got, n)
		}
	}
}

func TestFixtureStreamC(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	h := start(t, []string{srv.Addr}, nil)
	h.waitFor("resync", 1)
	evs := fixtureEvents(t, "C_extras_esl_custom_sofia_events.raw.txt")
	if err := srv.Push(strings.Join(evs, "")); err != nil {
		t.Fatal(err)
	}
	h.waitFor("event", len(evs))
	var got []string
	for len(h.offenses) > 0 {
		o := <-h.offenses
		got = append(got, fmt.Sprintf("%s %s %s %s", o.Rule, o.Method, o.User, o.Detail))
		// The capture's clock is minutes ahead of ours: our time is used.
		if !o.Time.Equal(fixedNow) {
			t.Errorf("offense time %v, want the local %v", o.Time, fixedNow)
		}
	}
	want := []string{
		"auth_failure REGISTER 5555 SIPp-reg-test",
		"auth_failure INVITE 999 SIPp-invite-auth-test", // to-user is the dialled number
	}
	if !slices.Equal(got, want) {
		t.Fatalf("offenses %q, want %q", got, want)
	}
	// 1003 stays; 1002 (Expires 10) left with sofia::expire (absolute expires).
	e, ok := h.wl.Lookup(netip.MustParseAddr("127.0.0.1"))
	if !ok || len(e.Registrations) != 1 || e.Registrations[0].User != "1003" || e.Registrations[0].UserAgent != "py-noqop-test" {
		t.Fatalf("entry %+v", e)
	}
}

func TestNATTwoRegistrationsOneLeaves(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	h := start(t, []string{srv.Addr}, nil)
	h.waitFor("resync", 1)
	a := fixtureEvents(t, "A_vanilla_esl_custom_sofia_events.raw.txt")
	const nat = "198.51.100.7"
	reg1000 := esltest.Rewrite(a[2], map[string]string{"network-ip": nat})
	reg1001 := esltest.Rewrite(a[2], map[string]string{"network-ip": nat, "from-user": "1001", "username": "1001",
		"call-id": "77-1001@198.51.100.7", "contact": `"" <sip:1001@198.51.100.7:5062>`})
	unreg1000 := esltest.Rewrite(a[9], map[string]string{"network-ip": nat})
	unreg1001 := esltest.Rewrite(a[9], map[string]string{"network-ip": nat, "from-user": "1001", "username": "1001",
		"call-id": "77-1001@198.51.100.7"})

	srv.Push(reg1000 + reg1001)
	h.waitFor("event", 2)
	if ips, regs := h.wl.Len(); ips != 1 || regs != 2 || !h.allowed(nat) {
		t.Fatalf("Len = %d,%d allowed=%v", ips, regs, h.allowed(nat))
	}
	srv.Push(unreg1000)
	h.waitFor("event", 3)
	if !h.allowed(nat) {
		t.Fatal("NAT address lost its whitelist while 1001 is still registered")
	}
	srv.Push(unreg1001)
	h.waitFor("event", 4)
	if h.allowed(nat) {
		t.Fatal("whitelisted after its last registration left")
	}
	if got := testutil.ToFloat64(h.w.m.event([]byte("sofia::unregister"))); got != 2 {
		t.Fatalf("unregister events = %v", got)
	}
}

func TestExpireByTimeWithoutEvent(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	h := start(t, []string{srv.Addr}, nil)
	h.waitFor("resync", 1)
	c := fixtureEvents(t, "C_extras_esl_custom_sofia_events.raw.txt")
	var reg1002 string
	for _, f := range c {
		if strings.Contains(f, "sofia%3A%3Aregister\n") && strings.Contains(f, "expires: 10\n") {
			reg1002 = esltest.Rewrite(f, map[string]string{"network-ip": "203.0.113.5"})
		}
	}
	if reg1002 == "" {
		t.Fatal("no Expires 10 register in the C capture")
	}
	srv.Push(reg1002)
	h.waitFor("event", 1)
	if !h.allowed("203.0.113.5") {
		t.Fatal("not whitelisted")
	}
	h.clock.Add(10*time.Second + whitelist.DefaultGrace - time.Second)
	h.wl.Sweep()
	if !h.allowed("203.0.113.5") {
		t.Fatal("expired inside the grace period")
	}
	h.clock.Add(time.Second)
	h.wl.Sweep() // what whitelist.Run does every second; no event arrives
	if h.allowed("203.0.113.5") {
		t.Fatal("still whitelisted after expiry + grace")
	}
}

func TestDisconnectNoticeReconnectResync(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	srv.SetRegistrations(listingA)
	h := start(t, []string{srv.Addr}, nil)
	h.waitFor("resync", 1)
	if !h.allowed("127.0.0.1") {
		t.Fatal("not whitelisted after the first resync")
	}
	// FreeSWITCH restarts; while it was away the registration left.
	srv.SetRegistrations(esltest.NoRegistrations)
	srv.Disconnect()
	h.waitFor("ready", 2)
	if h.allowed("127.0.0.1") {
		t.Fatal("the resync after reconnecting did not replace the node's set")
	}
	if got := testutil.ToFloat64(h.w.m.reconnects); got != 1 {
		t.Fatalf("esl_reconnects_total = %v", got)
	}
	if got := testutil.ToFloat64(h.w.m.disconnects.WithLabelValues("disconnect_notice")); got != 1 {
		t.Fatalf("disconnects{disconnect_notice} = %v", got)
	}
	if n := strings.Count(strings.Join(srv.Commands(), "\n"), ResyncCommand); n != 2 {
		t.Fatalf("%d resync commands", n)
	}
	// Cut without a word: same recovery.
	srv.Drop()
	h.waitFor("ready", 3)
	if _, ok := h.w.Ready(); !ok {
		t.Fatal("not ready after the drop")
	}
}

func TestPeriodicResync(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	h := start(t, []string{srv.Addr}, func(o *Options) { o.ResyncEvery = 20 * time.Millisecond })
	h.waitFor("resync", 1)
	srv.SetRegistrations(listingA) // a registration no event told us about
	h.waitFor("resync", 3)
	if !h.allowed("127.0.0.1") {
		t.Fatal("periodic resync did not heal the missed registration")
	}
	if srv.Subscribed() != 1 {
		t.Fatalf("%d connections for periodic resyncs", srv.Subscribed())
	}
}

func TestStalls(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stall  func(srv *esltest.Server)
		reason string
	}{
		{"mid-frame", func(srv *esltest.Server) {
			f := fixtureEvents(t, "A_vanilla_esl_custom_sofia_events.raw.txt")[2]
			srv.Push(f[:len(f)/2])
		}, "timeout"},
		{"mid-headers", func(srv *esltest.Server) { srv.Push("Content-Length: 811\nContent-Ty") }, "timeout"},
		{"no api reply", nil, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := esltest.NewServer(t, "ClueCon")
			var silent atomic.Bool
			srv.SetHandler(func(cmd string) (string, bool) {
				return "", cmd == ResyncCommand && silent.Load()
			})
			h := start(t, []string{srv.Addr}, func(o *Options) {
				o.CommandTimeout = 200 * time.Millisecond
				o.ResyncEvery = 50 * time.Millisecond
			})
			h.waitFor("resync", 1)
			if tc.stall != nil {
				tc.stall(srv)
			} else {
				silent.Store(true)
			}
			h.waitMetric("disconnects{"+tc.reason+"}", h.w.m.disconnects.WithLabelValues(tc.reason), 1)
			silent.Store(false)
			srv.WaitSubscribed(2, wait)
			h.waitFor("resync", 2)
		})
	}
}

func TestUnknownContentTypesSkipped(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	h := start(t, []string{srv.Addr}, nil)
	h.waitFor("resync", 1)
	reg := fixtureEvents(t, "A_vanilla_esl_custom_sofia_events.raw.txt")[2]
	xml := "<event>\n  <headers><Event-Name>HEARTBEAT</Event-Name></headers>\n</event>\n"
	srv.Push("Content-Type: log/data\nContent-Length: 6\nLog-Level: 7\n\nhello\n" +
		"Content-Length: " + fmt.Sprint(len(xml)) + "\nContent-Type: text/event-xml\n\n" + xml +
		"Content-Type: x-hostile/whatever\n\n" +
		"Content-Type: command/reply\nReply-Text: +OK nobody asked\n\n" +
		reg)
	h.waitFor("event", 1)
	if !h.allowed("127.0.0.1") {
		t.Fatal("event after the unknown frames lost")
	}
	if got := testutil.ToFloat64(h.w.m.skipped.WithLabelValues("unknown_type")); got != 3 {
		t.Fatalf("skipped{unknown_type} = %v", got)
	}
	if got := testutil.ToFloat64(h.w.m.skipped.WithLabelValues("unexpected_reply")); got != 1 {
		t.Fatalf("skipped{unexpected_reply} = %v", got)
	}
	if srv.Subscribed() != 1 {
		t.Fatal("reconnected over skippable frames")
	}
}

// TestOversizedEventSkipped is issue 12 item 5 / issue 11 item 6: one event
// over the frame limit (a pre_register carrying a huge User-Agent) is
// counted and skipped; the connection, later events and the resync go on.
func TestOversizedEventSkipped(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	srv.SetRegistrations(listingA) // what FreeSWITCH lists once the register below is in
	h := start(t, []string{srv.Addr}, func(o *Options) {
		o.MaxFrame = 64 << 10
		o.ResyncEvery = 30 * time.Millisecond
	})
	h.waitFor("resync", 1)
	evs := fixtureEvents(t, "A_vanilla_esl_custom_sofia_events.raw.txt")
	huge := esltest.Rewrite(evs[0], map[string]string{"user-agent": strings.Repeat("friendly-scanner ", 12_000)})
	if len(huge) < 200<<10 {
		t.Fatalf("the oversized event is only %d bytes", len(huge))
	}
	if err := srv.Push(huge + evs[2]); err != nil {
		t.Fatal(err)
	}
	h.waitFor("event", 1)
	if !h.allowed("127.0.0.1") {
		t.Fatal("the register after the oversized event was lost")
	}
	if got := testutil.ToFloat64(h.w.m.skipped.WithLabelValues("oversized")); got != 1 {
		t.Fatalf("skipped{oversized} = %v", got)
	}
	if got := testutil.ToFloat64(h.w.m.event([]byte("sofia::pre_register"))); got != 0 {
		t.Fatalf("the oversized pre_register was decoded (%v)", got)
	}
	// The resync still works on the same connection.
	srv.SetRegistrations(strings.ReplaceAll(listingA, `"network_ip":"127.0.0.1"`, `"network_ip":"192.0.2.77"`))
	n := h.count("resync")
	h.waitFor("resync", n+2)
	if !h.allowed("192.0.2.77") {
		t.Fatal("the resync after the oversized event did not apply")
	}
	if srv.Subscribed() != 1 {
		t.Fatalf("%d connections: the oversized event dropped one", srv.Subscribed())
	}
	if n, _ := testutil.GatherAndCount(h.reg, "sipwarden_esl_disconnects_total"); n != 0 {
		t.Fatalf("%d disconnect series", n)
	}
}

// TestOversizeAnnouncedNeverSent: a Content-Length of 4 GB that never
// arrives costs no memory and, after the frame timeout, a reconnect.
func TestOversizeAnnouncedNeverSent(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	h := start(t, []string{srv.Addr}, func(o *Options) {
		o.MaxFrame = 1 << 20
		o.CommandTimeout = 200 * time.Millisecond
	})
	h.waitFor("resync", 1)
	srv.Push("Content-Length: 4000000000\nContent-Type: text/event-plain\n\n")
	h.waitMetric("disconnects{timeout}", h.w.m.disconnects.WithLabelValues("timeout"), 1)
	h.waitFor("resync", 2)
	srv.Push(fixtureEvents(t, "A_vanilla_esl_custom_sofia_events.raw.txt")[2])
	h.waitFor("event", 1)
	if !h.allowed("127.0.0.1") {
		t.Fatal("not whitelisted on the new connection")
	}
}

// TestOversizedListing: a listing over the frame limit is refused loudly
// (error, metrics, not ready) while the connection and the whitelist's
// entries stay; once it fits, the node is resynced and ready again.
func TestOversizedListing(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	srv.SetRegistrations(listingA)
	h := start(t, []string{srv.Addr}, func(o *Options) {
		o.MaxFrame = 64 << 10
		o.ResyncEvery = 30 * time.Millisecond
	})
	h.waitFor("resync", 1)
	big := generateListing(1000) // about 270 kB
	srv.SetRegistrations(big)
	errs := h.w.m.resyncs.WithLabelValues("error")
	h.waitMetric("resyncs{error}", errs, 2)
	if got := testutil.ToFloat64(h.w.m.skipped.WithLabelValues("oversized")); got < 2 {
		t.Fatalf("skipped{oversized} = %v", got)
	}
	if !h.allowed("127.0.0.1") {
		t.Fatal("the refused listing cost the whitelist its entries")
	}
	if reason, ok := h.w.Ready(); ok || !strings.Contains(reason, "max_frame_bytes") {
		t.Fatalf("Ready = %q,%v: the refusal is not reported", reason, ok)
	}
	// Events still flow on the same connection.
	srv.Push(esltest.RegisterEvent(t, "192.0.2.61", "2000", "cid-61", 120))
	h.waitFor("event", 1)
	if !h.allowed("192.0.2.61") {
		t.Fatal("events stopped after the refused listing")
	}
	if srv.Subscribed() != 1 {
		t.Fatalf("%d connections", srv.Subscribed())
	}
	// The listing shrinks: resynced, ready.
	srv.SetRegistrations(esltest.NoRegistrations)
	n := h.count("resync")
	h.waitFor("resync", n+1)
	if reason, ok := h.w.Ready(); !ok {
		t.Fatalf("not ready after a good listing: %s", reason)
	}
	if h.allowed("127.0.0.1") {
		t.Fatal("the good listing was not applied")
	}
}

// TestListing100k is issue 11 item 6: a listing of 100,000 registrations
// (about 29 MB, rows in the real format of the A_vanilla capture) through
// the Event Socket, with the default frame limit, resyncs the whitelist.
func TestListing100k(t *testing.T) {
	n := 100_000
	if testing.Short() || raceEnabled {
		n = 20_000
	}
	srv := esltest.NewServer(t, "ClueCon")
	body := generateListing(n)
	srv.SetRegistrations(body)
	h := start(t, []string{srv.Addr}, func(o *Options) { o.CommandTimeout = time.Minute })
	h.waitFor("ready", 1)
	t.Logf("%d registrations, %.1f MB listing", n, float64(len(body))/1e6)
	if ips, regs := h.wl.Len(); ips != n || regs != n {
		t.Fatalf("Len = %d,%d, want %d", ips, regs, n)
	}
	for _, i := range []int{0, 1, n / 2, n - 1} {
		if _, ok := h.wl.Allowed(listingIP(i)); !ok {
			t.Fatalf("%s (row %d) not whitelisted", listingIP(i), i)
		}
	}
	if reason, ok := h.w.Ready(); !ok {
		t.Fatal(reason)
	}
	select {
	case <-h.w.Synced():
	default:
		t.Fatal("Synced not closed after the resync")
	}
}

// listingIP is the address of row i of generateListing.
func listingIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// generateListing is a `show registrations as json` body of n rows, each
// the A_vanilla capture's row with its own address, call-id and user.
func generateListing(n int) string {
	row := listingA[strings.Index(listingA, "[")+1 : len(listingA)-2]
	var b strings.Builder
	b.Grow(n * (len(row) + 16))
	fmt.Fprintf(&b, `{"row_count":%d,"rows":[`, n)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		r := strings.Replace(row, `"network_ip":"127.0.0.1"`, `"network_ip":"`+listingIP(i).String()+`"`, 1)
		r = strings.Replace(r, "1-9887@", fmt.Sprintf("%08x-%04x-4a1b-9c2d-%012x@", i, i&0xffff, i*7919), 1)
		r = strings.Replace(r, `"reg_user":"1000"`, fmt.Sprintf(`"reg_user":"%d"`, 1000+i%9000), 1)
		b.WriteString(r)
	}
	b.WriteString("]}")
	return b.String()
}

// TestSynced: Synced closes only once every node has applied a listing;
// a node whose listing is refused holds it open.
func TestSynced(t *testing.T) {
	s1 := esltest.NewServer(t, "ClueCon")
	s2 := esltest.NewServer(t, "ClueCon")
	s2.SetRegistrations(generateListing(1000)) // over the limit below
	h := start(t, []string{s1.Addr, s2.Addr}, func(o *Options) {
		o.MaxFrame = 64 << 10
		o.ResyncEvery = 30 * time.Millisecond
	})
	h.waitFor("resync", 1) // node 1
	h.waitMetric("resyncs{error}", h.w.m.resyncs.WithLabelValues("error"), 1)
	select {
	case <-h.w.Synced():
		t.Fatal("Synced closed while node 2 has no listing applied")
	default:
	}
	s2.SetRegistrations(listingA)
	select {
	case <-h.w.Synced():
	case <-time.After(wait):
		t.Fatal("Synced not closed after every node resynced")
	}
	if !h.allowed("127.0.0.1") {
		t.Fatal("closed before node 2's listing was in the whitelist")
	}
	// It stays closed through a disconnect.
	s1.Drop()
	s2.Drop()
	select {
	case <-h.w.Synced():
	default:
		t.Fatal("Synced reopened")
	}
}

func TestMalformedHeaderLines(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	h := start(t, []string{srv.Addr}, nil)
	h.waitFor("resync", 1)
	// Inside an event: the frame boundary holds, the event is skipped.
	srv.Push(esltest.EventPlain("Event-Name: CUSTOM\nthis line has no colon\n\n"))
	srv.Push(esltest.EventPlain("\n\n"))
	h.waitFor("event", 2)
	if got := testutil.ToFloat64(h.w.m.skipped.WithLabelValues("malformed_event")); got != 2 {
		t.Fatalf("skipped{malformed_event} = %v", got)
	}
	if got := testutil.ToFloat64(h.w.m.parseErrors); got != 2 {
		t.Fatalf("parse_errors_total{source=esl} = %v", got)
	}
	if srv.Subscribed() != 1 {
		t.Fatal("dropped the connection over a bad event")
	}
	// In the frame headers: nothing after can be trusted; reconnect.
	srv.Push("Content-Type text/event-plain\n\n")
	h.waitMetric("disconnects{protocol}", h.w.m.disconnects.WithLabelValues("protocol"), 1)
	h.waitFor("resync", 2)
}

func TestBurst10kRegisters(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	h := start(t, []string{srv.Addr}, nil)
	h.waitFor("resync", 1)
	burst := registerBurst(t, 10_000)
	if err := srv.Push(burst); err != nil {
		t.Fatal(err)
	}
	h.waitFor("event", 10_000)
	if ips, regs := h.wl.Len(); ips != 10_000 || regs != 10_000 {
		t.Fatalf("Len = %d,%d: events lost", ips, regs)
	}
	for i := 0; i < 10_000; i++ {
		if _, ok := h.wl.Allowed(burstIP(i)); !ok {
			t.Fatalf("%s not whitelisted", burstIP(i))
		}
	}
	if got := testutil.ToFloat64(h.w.m.event([]byte("sofia::register"))); got != 10_000 {
		t.Fatalf("register events = %v", got)
	}
}

func burstIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)})
}

// registerBurst is n copies of the A_vanilla sofia::register, each from
// its own address with its own call-id.
func registerBurst(t testing.TB, n int) string {
	reg := fixtureEvents(t, "A_vanilla_esl_custom_sofia_events.raw.txt")[2]
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(esltest.Rewrite(reg, map[string]string{
			"network-ip": burstIP(i).String(),
			"call-id":    fmt.Sprintf("burst-%d@127.0.0.1", i),
		}))
	}
	return b.String()
}

func TestMultipleNodes(t *testing.T) {
	s1 := esltest.NewServer(t, "ClueCon")
	s2 := esltest.NewServer(t, "ClueCon")
	s1.SetRegistrations(listingA)
	s2.SetRegistrations(strings.ReplaceAll(listingA, `"network_ip":"127.0.0.1"`, `"network_ip":"127.0.0.2"`))
	h := start(t, []string{s1.Addr, s2.Addr}, nil)
	h.waitFor("ready", 2)
	if !h.allowed("127.0.0.1") || !h.allowed("127.0.0.2") {
		t.Fatal("a node's registrations are missing")
	}
	if reason, ok := h.w.Ready(); !ok {
		t.Fatal(reason)
	}
	e, _ := h.wl.Lookup(netip.MustParseAddr("127.0.0.2"))
	if e.Registrations[0].Node != s2.Addr {
		t.Fatalf("node %q", e.Registrations[0].Node)
	}
	// Node 2 goes away for good: its registrations stay until they expire,
	// and the watcher is not ready.
	s2.Close()
	deadline := time.Now().Add(wait)
	for {
		reason, ok := h.w.Ready()
		if !ok {
			if !strings.Contains(reason, s2.Addr) {
				t.Fatalf("reason %q does not name %s", reason, s2.Addr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still ready with a node down")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !h.allowed("127.0.0.2") {
		t.Fatal("registrations dropped at the outage instead of at expiry")
	}
	// Node 1's resync does not touch node 2's set.
	s1.SetRegistrations(esltest.NoRegistrations)
	s1.Drop()
	h.waitFor("resync", 3)
	if h.allowed("127.0.0.1") || !h.allowed("127.0.0.2") {
		t.Fatal("resync of one node touched another")
	}
}

func TestProfilesFilter(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	srv.SetRegistrations(listingA) // profile internal
	h := start(t, []string{srv.Addr}, func(o *Options) { o.Profiles = []string{"trusted"} })
	h.waitFor("resync", 1)
	a := fixtureEvents(t, "A_vanilla_esl_custom_sofia_events.raw.txt")
	srv.Push(a[2] + esltest.Rewrite(a[2], map[string]string{"profile-name": "trusted", "network-ip": "127.0.0.9"}) + a[5])
	h.waitFor("event", 3)
	if h.allowed("127.0.0.1") {
		t.Fatal("registration of an untrusted profile whitelisted")
	}
	if !h.allowed("127.0.0.9") {
		t.Fatal("registration of a trusted profile ignored")
	}
	if len(h.offenses) != 1 {
		t.Fatal("offenses must come from every profile")
	}
}

func TestCancelWhileWaitingForGreeting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	h := start(t, []string{ln.Addr().String()}, func(o *Options) { o.DialTimeout = time.Minute })
	c := <-accepted // connected, and the server says nothing
	defer c.Close()
	t0 := time.Now()
	h.stop()
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("Run took %v to return after cancel", d)
	}
}

func TestDialRefusedBacksOff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	h := start(t, []string{addr}, nil)
	h.waitMetric("disconnects{dial}", h.w.m.disconnects.WithLabelValues("dial"), 3)
	if _, ok := h.w.Ready(); ok {
		t.Fatal("ready without a connection")
	}
}

func TestNewValidates(t *testing.T) {
	wl := whitelist.New(whitelist.Options{})
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no address", Options{Whitelist: wl}},
		{"bad address", Options{Addresses: []string{"localhost"}, Whitelist: wl}},
		{"password with newline", Options{Addresses: []string{"127.0.0.1:8021"}, Password: "a\n\nevent plain ALL", Whitelist: wl}},
		{"no whitelist", Options{Addresses: []string{"127.0.0.1:8021"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.opts); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: 30 * time.Second}
	prevCap := time.Duration(0)
	for i := 0; i < 20; i++ {
		d := b.next()
		want := min(100*time.Millisecond<<i, 30*time.Second)
		if d < want/2 || d > want {
			t.Fatalf("attempt %d: %v outside [%v, %v]", i, d, want/2, want)
		}
		prevCap = want
	}
	if prevCap != 30*time.Second {
		t.Fatalf("cap %v", prevCap)
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Fatalf("after reset %v", d)
	}
}

func TestMetricNames(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	srv.SetRegistrations(listingA)
	h := start(t, []string{srv.Addr}, nil)
	h.waitFor("resync", 1)
	for _, name := range []string{
		"sipwarden_esl_connected", "sipwarden_esl_reconnects_total", "sipwarden_esl_events_total",
		"sipwarden_registrations", "sipwarden_whitelist_ips", "sipwarden_esl_resyncs_total",
	} {
		if n, err := testutil.GatherAndCount(h.reg, name); err != nil || n == 0 {
			t.Errorf("%s: %d series, %v", name, n, err)
		}
	}
}

// TestEsltestEventHelpers: the helpers the daemon's tests use decode as
// intended end to end.
func TestEsltestEventHelpers(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	h := start(t, []string{srv.Addr}, nil)
	h.waitFor("ready", 1)
	srv.Push(esltest.RegisterEvent(t, "192.0.2.44", "2000", "cid-1@x", 120) +
		esltest.RegisterFailureEvent(t, "192.0.2.45", "2001", "INVITE"))
	h.waitFor("event", 2)
	e, ok := h.wl.Lookup(netip.MustParseAddr("192.0.2.44"))
	if !ok || e.Registrations[0].User != "2000" || e.Registrations[0].Contact != "sip:2000@192.0.2.44:5060" ||
		!e.Registrations[0].ExpiresAt.Equal(fixedNow.Add(120*time.Second)) {
		t.Fatalf("entry %+v", e)
	}
	o := <-h.offenses
	if o.IP != netip.MustParseAddr("192.0.2.45") || o.User != "2001" || o.Method != "INVITE" {
		t.Fatalf("offense %+v", o)
	}
	srv.Push(esltest.UnregisterEvent(t, "192.0.2.44", "2000", "another-cid"))
	h.waitFor("event", 3)
	if h.allowed("192.0.2.44") {
		t.Fatal("still whitelisted after UnregisterEvent")
	}
}

func TestReasonLabels(t *testing.T) {
	timeoutErr := &net.OpError{Op: "read", Err: timeoutError{}}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("x: %w", ErrAuth), "auth"},
		{ErrRejected, "rejected"},
		{fmt.Errorf("%w: 4000000000", ErrFrameTooLarge), "frame_too_large"},
		{fmt.Errorf("%w: malformed", ErrProtocol), "protocol"},
		{ErrDisconnected, "disconnect_notice"},
		{fmt.Errorf("api: %w", ErrTimeout), "timeout"},
		{timeoutErr, "timeout"},
		{fmt.Errorf("%w: %w", errDial, timeoutErr), "dial"},
		{fmt.Errorf("frame body: %w", net.ErrClosed), "io"},
	} {
		if got := reason(tc.err); got != tc.want {
			t.Errorf("reason(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// TestOffensesHeldUntilFirstResync: a failure from a registered address
// that arrives between the subscription and the listing reaches the sink
// only once the listing is in the whitelist.
func TestOffensesHeldUntilFirstResync(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	listing := strings.ReplaceAll(listingA, `"network_ip":"127.0.0.1"`, `"network_ip":"192.0.2.50"`)
	srv.SetHandler(func(cmd string) (string, bool) {
		if cmd != ResyncCommand {
			return "", false
		}
		srv.Push(esltest.RegisterFailureEvent(t, "192.0.2.50", "1000", "REGISTER"))
		return esltest.APIResponse(listing), true
	})
	seen := make(chan bool, 1)
	start(t, []string{srv.Addr}, func(o *Options) {
		wl := o.Whitelist
		o.Offenses = offense.SinkFunc(func(o offense.Offense) {
			_, ok := wl.Allowed(o.IP)
			seen <- ok
		})
	})
	select {
	case ok := <-seen:
		if !ok {
			t.Fatal("offense delivered before the listing whitelisted its address")
		}
	case <-time.After(wait):
		t.Fatal("held offense never delivered")
	}
}
