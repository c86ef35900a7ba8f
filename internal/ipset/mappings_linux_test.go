package ipset

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/protect"
	"github.com/sipwarden/sipwarden/internal/testenv"
)

func newTestMappings(t testing.TB, ns *testenv.NS) *Mappings {
	t.Helper()
	m, err := NewMappings(MappingOptions{NetNS: int(ns.H), QuarantineV4: "swq4", QuarantineV6: "swq6", ThrottleV4: "swth4", ThrottleV6: "swth6", MaxElem: 1024})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// The quarantine and throttle entries land in the kernel with their
// timeouts, read back with the ipset tool, and go away again.
func TestMappingsKernel(t *testing.T) {
	ns := testenv.NewNS(t, "grad")
	m := newTestMappings(t, ns)
	ctx := context.Background()
	office := netip.MustParseAddr("198.51.100.10")
	for _, mp := range []protect.Mapping{
		{IP: office, Transport: offense.TransportUDP, Port: 40004},
		{IP: office, Transport: offense.TransportTLS, Port: 5061},
		{IP: office, Port: 40005}, // the Event Socket names no transport: both
		{IP: netip.MustParseAddr("2001:db8::7"), Transport: offense.TransportUDP, Port: 5062},
	} {
		if err := m.AddMapping(ctx, mp, time.Hour); err != nil {
			t.Fatalf("add %s: %v", mp, err)
		}
	}
	if err := m.AddThrottle(ctx, office, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	got := kernelTimeouts(t, ns, "swq4")
	want := []string{"198.51.100.10,udp:40004", "198.51.100.10,tcp:5061", "198.51.100.10,udp:40005", "198.51.100.10,tcp:40005"}
	if len(got) != len(want) {
		t.Fatalf("swq4 holds %v, want %v", got, want)
	}
	for _, w := range want {
		if !near(got[w], 3600, 5) {
			t.Errorf("swq4 %s timeout %d, want ~3600 (all: %v)", w, got[w], got)
		}
	}
	if got := kernelTimeouts(t, ns, "swq6"); !near(got["2001:db8::7,udp:5062"], 3600, 5) || len(got) != 1 {
		t.Errorf("swq6 holds %v", got)
	}
	if got := kernelTimeouts(t, ns, "swth4"); !near(got["198.51.100.10"], 7200, 5) || len(got) != 1 {
		t.Errorf("swth4 holds %v", got)
	}
	if err := m.AddMapping(ctx, protect.Mapping{IP: office}, time.Hour); err == nil {
		t.Error("a mapping without a port was accepted")
	}
	if err := m.DelMapping(ctx, protect.Mapping{IP: office, Port: 40005}); err != nil {
		t.Fatal(err)
	}
	if err := m.DelMapping(ctx, protect.Mapping{IP: office, Port: 40005}); err != nil {
		t.Fatalf("deleting an absent mapping: %v", err)
	}
	if err := m.DelThrottle(ctx, office); err != nil {
		t.Fatal(err)
	}
	if err := m.DelThrottle(ctx, office); err != nil {
		t.Fatalf("deleting an absent throttle: %v", err)
	}
	if got := kernelTimeouts(t, ns, "swq4"); len(got) != 2 {
		t.Errorf("swq4 after del: %v", got)
	}
	if got := kernelTimeouts(t, ns, "swth4"); len(got) != 0 {
		t.Errorf("swth4 after del: %v", got)
	}
	// an existing set of another type is found, not silently used
	if out := ns.Exec(t, "ipset", "list", "-t", "swq4"); !strings.Contains(out, "hash:ip,port") {
		t.Errorf("swq4 type: %s", out)
	}
}

// The office: three registered phones on three source ports and a fourth,
// with a stale password, on a fourth port. The graduated response
// quarantines the fourth mapping only; the other three keep their answers,
// the office address never reaches the address set. Then a guesser behind
// the same address, rotating ports and users, gets the address throttled:
// past the rate it is dropped, while a phone at its normal rate is answered.
func TestOfficeQuarantineAndThrottle(t *testing.T) {
	testenv.Tool(t, "iptables", "iptables")
	ns := testenv.NewNS(t, "grad")
	ns.Exec(t, "ip", "addr", "add", "127.0.0.2/8", "dev", "lo")
	set := newTestIPSet(t, ns, Options{MaxElem: 1000})
	m := newTestMappings(t, ns)
	var remove func() error
	if err := testenv.InNS(ns.H, func() (err error) {
		remove, err = InstallMappingRules(MappingRuleOptions{QuarantineV4: "swq4", QuarantineV6: "swq6", ThrottleV4: "swth4",
			ThrottleV6: "swth6", Ports: []int{5060}, Rate: 5, Burst: 5})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := testenv.InNS(ns.H, remove); err != nil {
			t.Errorf("remove rules: %v", err)
		}
	})

	// the SIP server: answers every datagram
	var srv *net.UDPConn
	if err := testenv.InNS(ns.H, func() (err error) {
		srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			srv.WriteToUDPAddrPort(append([]byte("SIP/2.0 200 OK\r\n"), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() { srv.Close(); wg.Wait() })

	office := netip.MustParseAddr("127.0.0.2")
	phone := func(port int) *net.UDPConn {
		var c *net.UDPConn
		if err := testenv.InNS(ns.H, func() (err error) {
			c, err = net.DialUDP("udp4", &net.UDPAddr{IP: office.AsSlice(), Port: port}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	answered := func(c *net.UDPConn) bool {
		if _, err := c.Write([]byte("OPTIONS sip:probe SIP/2.0\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 1500)
		_, err := c.Read(buf)
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			t.Fatal(err)
		}
		return err == nil
	}
	phones := []*net.UDPConn{phone(41001), phone(41002), phone(41003), phone(41004)}
	for i, c := range phones {
		if !answered(c) {
			t.Fatalf("phone %d not answered before any quarantine", i+1)
		}
	}

	// the guard sees the fourth phone's verified failures (Event Socket
	// register_failure with network-port) from a protected address
	g, err := protect.New(protect.Options{Firewall: m})
	if err != nil {
		t.Fatal(err)
	}
	ladder := protect.Ladder{Bantime: time.Hour, MaxBantime: 24 * time.Hour, Factor: 2}
	for range 5 {
		r := g.Offend(offense.Offense{IP: office, Port: 41004, Rule: offense.AuthFailure, Source: offense.SourceESL,
			User: "1004", Verified: true, Time: time.Now()}, ladder)
		if r.Action != protect.Quarantine {
			t.Fatalf("stale password: %s (%s)", r.Action, r.Why)
		}
	}
	g.Drain(context.Background())
	q := kernelTimeouts(t, ns, "swq4")
	if len(q) != 2 || q["127.0.0.2,udp:41004"] == 0 || q["127.0.0.2,tcp:41004"] == 0 {
		t.Fatalf("quarantine set %v, want the fourth mapping (udp and tcp) only", q)
	}
	if a := kernelTimeouts(t, ns, "swth4"); len(a) != 0 {
		t.Fatalf("throttle set %v", a)
	}
	for i, c := range phones {
		if got, want := answered(c), i != 3; got != want {
			t.Errorf("phone %d answered=%v, want %v", i+1, got, want)
		}
	}
	if bans, err := set.List(context.Background()); err != nil || len(bans) != 0 {
		t.Fatalf("address set %v (%v): the office must never be banned", bans, err)
	}

	// a guesser behind the same address: four users on four new ports
	var last protect.Result
	for i := range 4 {
		last = g.Offend(offense.Offense{IP: office, Port: uint16(42000 + i), Rule: offense.AuthFailure, Source: offense.SourceESL,
			User: "20" + string(rune('0'+i)), Verified: true, Time: time.Now()}, ladder)
	}
	if last.Action != protect.Throttle {
		t.Fatalf("guesser: %s (%s), want throttled", last.Action, last.Why)
	}
	g.Drain(context.Background())
	if a := kernelTimeouts(t, ns, "swth4"); a["127.0.0.2"] == 0 {
		t.Fatalf("throttle set %v, want the office", a)
	}
	// a burst from the guesser's own port: most of it dropped
	guesser := phone(42010)
	got := 0
	for range 40 {
		if _, err := guesser.Write([]byte("REGISTER sip:x SIP/2.0\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	guesser.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 1500)
	for {
		if _, err := guesser.Read(buf); err != nil {
			break
		}
		got++
	}
	if got > 10 {
		t.Errorf("throttled burst: %d of 40 answered, want <= burst", got)
	}
	// the registered phones at their normal rate (one request each, 1/s) are answered
	time.Sleep(time.Second) // let the hashlimit bucket refill: the rate is the point here
	for i, c := range phones[:3] {
		if !answered(c) {
			t.Errorf("registered phone %d not answered while the office is throttled", i+1)
		}
	}
	if bans, err := set.List(context.Background()); err != nil || len(bans) != 0 {
		t.Fatalf("address set %v (%v): the office must never be banned", bans, err)
	}
}
