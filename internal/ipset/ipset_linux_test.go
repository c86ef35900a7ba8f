package ipset

import (
	"bytes"
	"context"
	"errors"
	"log"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/ban"

	"github.com/sipwarden/sipwarden/internal/testenv"
)

func newTestIPSet(t testing.TB, ns *testenv.NS, o Options) *Set {
	t.Helper()
	o.NetNS = int(ns.H)
	if o.SetV4 == "" {
		o.SetV4, o.SetV6 = "swt4", "swt6"
	}
	s, err := New(o)
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

func TestIpsetKernel(t *testing.T) {
	ns := testenv.NewNS(t, "k")
	s := newTestIPSet(t, ns, Options{MaxElem: 1000})
	ctx := context.Background()

	hdr := ns.Exec(t, "ipset", "list", "-t")
	for _, want := range []string{"Name: swt4", "Type: hash:ip", "family inet ", "Name: swt6", "family inet6 ", "maxelem 1000", "timeout 0"} {
		if !strings.Contains(hdr, want) {
			t.Fatalf("sets: missing %q in\n%s", want, hdr)
		}
	}
	v4 := netip.MustParsePrefix("203.0.113.7/32")
	v6 := netip.MustParsePrefix("2001:db8::7/128")
	if err := s.Add(ctx, v4, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(ctx, v6, 30*time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := kernelTimeouts(t, ns, "swt4")["203.0.113.7"]; !near(got, 3600, 5) {
		t.Fatalf("v4 timeout %d", got)
	}
	if got := kernelTimeouts(t, ns, "swt6")["2001:db8::7"]; !near(got, 1800, 5) {
		t.Fatalf("v6 timeout %d", got)
	}
	// refresh (-exist) and the kernel cap
	if err := s.Add(ctx, v4, 100*24*time.Hour); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if got := kernelTimeouts(t, ns, "swt4")["203.0.113.7"]; !near(got, 2147483, 5) {
		t.Fatalf("capped timeout %d", got)
	}
	if err := s.Add(ctx, v4, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := kernelTimeouts(t, ns, "swt4")["203.0.113.7"]; !near(got, 90, 5) {
		t.Fatalf("shortened timeout %d", got)
	}
	// read back
	l, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 2 || l[0].Prefix != v4 || l[1].Prefix != v6 || l[0].Timeout > 90*time.Second || l[0].Timeout < 80*time.Second {
		t.Fatalf("list %+v", l)
	}
	// unban, twice
	for range 2 {
		if err := s.Del(ctx, v4); err != nil {
			t.Fatal(err)
		}
	}
	if m := kernelTimeouts(t, ns, "swt4"); len(m) != 0 {
		t.Fatalf("after del: %v", m)
	}
	// the IPv6 set is hash:net even without v6_prefix (as ipset.conf makes it)
	if !strings.Contains(ns.Exec(t, "ipset", "list", "swt6", "-t"), "Type: hash:net") {
		t.Fatal("swt6 not hash:net")
	}
	// an IPv6 set made hash:ip by an older sipwarden is still used, for
	// single addresses only
	ns.Exec(t, "ipset", "create", "old6", "hash:ip", "family", "inet6", "timeout", "0")
	old := newTestIPSet(t, ns, Options{SetV4: "old4", SetV6: "old6"})
	if err := old.Add(ctx, v6, time.Hour); err != nil {
		t.Fatalf("exact v6 in an old hash:ip set: %v", err)
	}
	if err := old.Add(ctx, netip.MustParsePrefix("2001:db8::/64"), time.Hour); err == nil {
		t.Fatal("prefix accepted by hash:ip")
	}
	// a second backend on the existing sets (a restart) works and sees the entry
	s2 := newTestIPSet(t, ns, Options{MaxElem: 1000})
	if l, err := s2.List(ctx); err != nil || len(l) != 1 || l[0].Prefix != v6 {
		t.Fatalf("after restart: %+v %v", l, err)
	}
	// an existing set of another type is refused
	ns.Exec(t, "ipset", "create", "other4", "hash:net", "timeout", "0")
	if _, err := New(Options{NetNS: int(ns.H), SetV4: "other4", SetV6: "other6"}); err == nil || !strings.Contains(err.Error(), "exists as hash:net") {
		t.Fatalf("type mismatch: %v", err)
	}
}

func TestIpsetV6Prefix(t *testing.T) {
	ns := testenv.NewNS(t, "p")
	s := newTestIPSet(t, ns, Options{V6Prefix: 64})
	ctx := context.Background()
	if !strings.Contains(ns.Exec(t, "ipset", "list", "swt6", "-t"), "Type: hash:net") {
		t.Fatal("not hash:net")
	}
	p := netip.MustParsePrefix("2001:db8:1:2::/64")
	if err := s.Add(ctx, p, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := kernelTimeouts(t, ns, "swt6")["2001:db8:1:2::/64"]; !near(got, 3600, 5) {
		t.Fatalf("timeout %d (%s)", got, ns.Exec(t, "ipset", "list", "swt6"))
	}
	if l, err := s.List(ctx); err != nil || len(l) != 1 || l[0].Prefix != p {
		t.Fatalf("list %+v %v", l, err)
	}
	// the set matches every address of the prefix
	ns.Exec(t, "ipset", "test", "swt6", "2001:db8:1:2::abcd")
	if err := s.Del(ctx, p); err != nil {
		t.Fatal(err)
	}
}

func TestIpsetFullIsAnError(t *testing.T) {
	ns := testenv.NewNS(t, "f")
	s := newTestIPSet(t, ns, Options{MaxElem: 4})
	ctx := context.Background()
	var err error
	for i := range 10 {
		if err = s.Add(ctx, netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 32), time.Hour); err != nil {
			break
		}
	}
	if !errors.Is(err, ban.ErrSetFull) {
		t.Fatalf("full set: %v", err)
	}
}

func TestIpsetListMultiMessage(t *testing.T) {
	ns := testenv.NewNS(t, "m")
	s := newTestIPSet(t, ns, Options{MaxElem: 100000})
	ctx := context.Background()
	const n = 40000 // far more than one netlink message (~64 KiB) holds
	for i := range n {
		if err := s.Add(ctx, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		if err := s.Add(ctx, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}), 128), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	l, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Prefix]bool{}
	for _, e := range l {
		seen[e.Prefix] = true
	}
	if len(l) != n+100 || len(seen) != n+100 {
		t.Fatalf("read back %d (%d distinct), want %d", len(l), len(seen), n+100)
	}
	if c := len(kernelTimeouts(t, ns, "swt4")); c != n {
		t.Fatalf("ipset list shows %d", c)
	}
}

func TestIpsetAddBatch(t *testing.T) {
	ns := testenv.NewNS(t, "ba")
	s := newTestIPSet(t, ns, Options{MaxElem: 600, V6Prefix: 64})
	ctx := context.Background()
	var es []ban.Entry
	for i := range 500 {
		es = append(es, ban.Entry{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 32), Timeout: time.Duration(i+1) * time.Minute})
	}
	es = append(es,
		ban.Entry{Prefix: netip.MustParsePrefix("2001:db8:5::/64"), Timeout: time.Hour},
		ban.Entry{Prefix: netip.MustParsePrefix("2001:db8:6::1/128"), Timeout: 0},
		ban.Entry{Prefix: netip.MustParsePrefix("198.18.0.0/16")},                          // refused before the kernel
		ban.Entry{Prefix: netip.MustParsePrefix("198.18.0.1/32"), Timeout: 10 * time.Hour}, // refresh within the batch
	)
	errs := make([]error, len(es))
	if err := s.AddBatch(ctx, es, errs); err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if (err != nil) != (i == 502) {
			t.Fatalf("entry %d %s: %v", i, es[i].Prefix, err)
		}
	}
	m4, m6 := kernelTimeouts(t, ns, "swt4"), kernelTimeouts(t, ns, "swt6")
	if len(m4) != 500 || !near(m4["198.18.0.0"], 60, 3) || !near(m4["198.18.1.243"], 500*60, 3) || !near(m4["198.18.0.1"], 36000, 3) {
		t.Fatalf("v4: %d entries, %v %v %v", len(m4), m4["198.18.0.0"], m4["198.18.1.243"], m4["198.18.0.1"])
	}
	if !near(m6["2001:db8:5::/64"], 3600, 3) {
		t.Fatalf("v6: %v", m6)
	}
	if !strings.Contains(ns.Exec(t, "ipset", "list", "swt6"), "2001:db8:6::1 timeout 0") {
		t.Fatal("permanent v6 entry")
	}
	// past maxelem: the entries that do not fit fail one by one, the batch goes on
	es = es[:0]
	for i := range 200 {
		es = append(es, ban.Entry{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, 0, byte(i)}), 32), Timeout: time.Hour})
	}
	errs = make([]error, len(es))
	if err := s.AddBatch(ctx, es, errs); err != nil {
		t.Fatal(err)
	}
	full := 0
	for _, err := range errs {
		if errors.Is(err, ban.ErrSetFull) {
			full++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if full != 100 || len(kernelTimeouts(t, ns, "swt4")) != 600 {
		t.Fatalf("%d full errors, %d in the set", full, len(kernelTimeouts(t, ns, "swt4")))
	}
}

// Sets made beforehand by the ipset tool (examples/firewall/ipset.conf, at
// boot) are newer revisions with more header attributes: accepted, read back.
func TestIpsetSetsFromIpsetTool(t *testing.T) {
	ns := testenv.NewNS(t, "c")
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "ipset", "restore", "-exist")
	cmd.Stdin = strings.NewReader("create sw4 hash:ip family inet timeout 0 maxelem 65536\ncreate sw6 hash:net family inet6 timeout 0 maxelem 65536\nadd sw4 192.0.2.77 timeout 500\nadd sw6 2001:db8:77::/64 timeout 600\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ipset restore: %v: %s", err, out)
	}
	var logged bytes.Buffer
	log.SetOutput(&logged) // the netlink library prints unknown attributes here
	defer log.SetOutput(os.Stderr)
	s := newTestIPSet(t, ns, Options{SetV4: "sw4", SetV6: "sw6", V6Prefix: 64})
	l, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 2 || l[0].Prefix != netip.MustParsePrefix("192.0.2.77/32") || l[1].Prefix != netip.MustParsePrefix("2001:db8:77::/64") ||
		l[0].Timeout < 490*time.Second || l[1].Timeout < 590*time.Second {
		t.Fatalf("list %+v", l)
	}
	if logged.Len() != 0 {
		t.Fatalf("stray log lines: %s", logged.String())
	}
	// exact IPv6 bans (no v6_prefix) also use the hash:net set made at boot
	exact := newTestIPSet(t, ns, Options{SetV4: "sw4", SetV6: "sw6"})
	if err := exact.Add(context.Background(), netip.MustParsePrefix("2001:db8:78::1/128"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := kernelTimeouts(t, ns, "sw6")["2001:db8:78::1"]; !near(got, 3600, 5) {
		t.Fatalf("exact v6 in hash:net: %v", kernelTimeouts(t, ns, "sw6"))
	}
	// a hash:ip IPv6 set where prefixes are configured is refused with a reason
	ns.Exec(t, "ipset", "create", "ip6", "hash:ip", "family", "inet6", "timeout", "0")
	if _, err := New(Options{NetNS: int(ns.H), SetV4: "sw4", SetV6: "ip6", V6Prefix: 64}); err == nil || !strings.Contains(err.Error(), "want hash:net") {
		t.Fatalf("v6 type mismatch: %v", err)
	}
}

func FuzzParseSetDump(f *testing.F) {
	f.Add(appendIpsetAdd(nil, 1, "sw4", []byte{192, 0, 2, 1}, 0, 60)[20:])
	f.Add(appendIpsetAdd(nil, 1, "sw6", make([]byte, 16), 64, 0)[20:])
	f.Add([]byte{8, 0, 8, 0x80, 4, 0, 7, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		var info setInfo
		info.parse(b)
		parseEntry(b)
		for _, e := range info.entries {
			if !e.Prefix.IsValid() {
				t.Fatal("invalid prefix returned")
			}
		}
	})
}
