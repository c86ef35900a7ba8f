package jail

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/ipset"
	"github.com/sipwarden/sipwarden/internal/offense"

	"github.com/sipwarden/sipwarden/internal/testenv"
)

var (
	speedN     = flag.Int("speed.n", 20000, "TestBanSpeedReport: bans through the jail and lines through ipset restore")
	speedProcs = flag.Int("speed.procs", 200, "TestBanSpeedReport: ipset add processes")
)

func benchAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// countingFW counts successful adds and remembers when each landed.
type countingFW struct {
	ban.Firewall
	n    atomic.Int64
	done []atomic.Int64 // unix ns per index, when latency is wanted
}

func (c *countingFW) Add(ctx context.Context, p netip.Prefix, d time.Duration) error {
	err := c.Firewall.Add(ctx, p, d)
	if err == nil {
		if c.done != nil {
			a := p.Addr().As4()
			c.done[int(a[1])<<16|int(a[2])<<8|int(a[3])].Store(time.Now().UnixNano())
		}
		c.n.Add(1)
	}
	return err
}

func (c *countingFW) AddBatch(ctx context.Context, es []ban.Entry, errs []error) error {
	err := c.Firewall.(ban.BatchAdder).AddBatch(ctx, es, errs)
	if err != nil {
		return err
	}
	now := time.Now().UnixNano()
	for i, e := range es {
		if errs[i] == nil {
			if c.done != nil {
				a := e.Prefix.Addr().As4()
				c.done[int(a[1])<<16|int(a[2])<<8|int(a[3])].Store(now)
			}
			c.n.Add(1)
		}
	}
	return nil
}

// BenchmarkBanThroughput: offense -> decision -> queue -> writer -> netlink
// -> kernel, b.N distinct attackers each banned by one offense.
func BenchmarkBanThroughput(b *testing.B) {
	ns := testenv.NewNS(b, "t")
	s := newTestIPSet(b, ns, ipset.Options{MaxElem: 1 << 24})
	fw := &countingFW{Firewall: s}
	j, err := New(Options{UnverifiedFactor: 1, Firewall: fw, QueueSize: b.N + 1, MaxOffenders: b.N + 1, HostAddrs: func() ([]netip.Addr, error) { return nil, nil }})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- j.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitReady(b, j)
	now := time.Now()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j.Offend(offense.Offense{IP: benchAddr(i), Rule: offense.ScannerUserAgent, Source: offense.SourceHEP, Time: now})
	}
	for fw.n.Load() < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "bans/s")
	// process CPU (user+system, kernel ipset work included) per ban: the
	// figure that does not depend on how busy the machine is
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/ban")
}

// BenchmarkOffendDistinct: jail throughput and memory with b.N distinct
// offenders below the threshold (run with -benchtime=1000000x for 1M).
func BenchmarkOffendDistinct(b *testing.B) {
	j, err := New(Options{UnverifiedFactor: 1, MaxOffenders: b.N + 1, HostAddrs: func() ([]netip.Addr, error) { return nil, nil }})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	var before, after runtimeMem
	before.read()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j.Offend(offense.Offense{IP: benchAddr(i), Rule: offense.AuthFailure, Source: offense.SourceLog, Time: now, User: "1003"})
	}
	b.StopTimer()
	after.read()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "offenses/s")
	b.ReportMetric(float64(after.heap-before.heap)/float64(b.N), "bytes/offender")
	if int(j.count.Load()) != b.N {
		b.Fatalf("%d offenders", int(j.count.Load()))
	}
}

// BenchmarkOffendHot: the same attacker over and over (scoring only).
func BenchmarkOffendHot(b *testing.B) {
	j, err := New(Options{UnverifiedFactor: 1, MaxRetry: 1e12})
	if err != nil {
		b.Fatal(err)
	}
	ip := netip.MustParseAddr("203.0.113.1")
	now := time.Now()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		j.Offend(offense.Offense{IP: ip, Rule: offense.AuthFailure, Source: offense.SourceLog, Time: now.Add(time.Duration(i)), User: "1003"})
	}
}

// TestBanSpeedReport compares the three ways to put n entries into a set
// and measures offense -> kernel latency; numbers go to the log (-v).
//
//	go test -run TestBanSpeedReport -v ./ban -speed.n 100000 -speed.procs 1000
func TestBanSpeedReport(t *testing.T) {
	n := *speedN
	if testing.Short() {
		n = min(n, 2000)
	}
	ctx := context.Background()

	// 1. the jail: decision + queue + netlink
	ns := testenv.NewNS(t, "s")
	s := newTestIPSet(t, ns, ipset.Options{MaxElem: 1 << 20})
	fw := &countingFW{Firewall: s, done: make([]atomic.Int64, n)}
	j, err := New(Options{UnverifiedFactor: 1, Firewall: fw, QueueSize: n + 1, MaxOffenders: n + 1, HostAddrs: func() ([]netip.Addr, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- j.Run(c) }()
	defer func() { cancel(); <-done }()
	waitReady(t, j)
	seen := make([]int64, n)
	start := time.Now()
	for i := range n {
		seen[i] = time.Now().UnixNano()
		j.Offend(offense.Offense{IP: benchAddr(i), Rule: offense.ScannerUserAgent, Time: start})
	}
	waitCount(t, &fw.n, int64(n))
	jailRate := float64(n) / time.Since(start).Seconds()
	burst := latencies(fw.done, seen)

	// paced: 10k bans/s, the queue stays short
	fw2 := &countingFW{Firewall: s, done: make([]atomic.Int64, n)}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	j2, err := New(Options{UnverifiedFactor: 1, Firewall: fw2, QueueSize: n + 1, MaxOffenders: n + 1, HostAddrs: func() ([]netip.Addr, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- j2.Run(c) }()
	defer func() { cancel(); <-done }()
	waitReady(t, j2)
	m := min(n, 5000)
	tick := time.NewTicker(100 * time.Microsecond)
	for i := range m {
		<-tick.C
		seen[i] = time.Now().UnixNano()
		j2.Offend(offense.Offense{IP: benchAddr(i), Rule: offense.ScannerUserAgent, Time: time.Now()})
	}
	tick.Stop()
	waitCount(t, &fw2.n, int64(m))
	paced := latencies(fw2.done[:m], seen[:m])

	// 2. one `ipset add` process per entry (as a fail2ban action does)
	p := min(n, *speedProcs)
	var procRate float64
	if err := testenv.InNS(ns.H, func() error {
		st := time.Now()
		for i := range p {
			a := netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)})
			if out, err := exec.Command("ipset", "add", "swt4", a.String(), "timeout", "3600", "-exist").CombinedOutput(); err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
		}
		procRate = float64(p) / time.Since(st).Seconds()
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// 3. one `ipset restore` process for all entries
	var sb strings.Builder
	for i := range n {
		a := netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})
		fmt.Fprintf(&sb, "add swt4 %s timeout 3600 -exist\n", a)
	}
	var restoreRate float64
	if err := testenv.InNS(ns.H, func() error {
		st := time.Now()
		cmd := exec.Command("ipset", "restore")
		cmd.Stdin = strings.NewReader(sb.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		restoreRate = float64(n) / time.Since(st).Seconds()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("bans/s: jail+netlink %.0f (%d bans), ipset add processes %.0f (%d), ipset restore %.0f (%d lines); jail/process = %.0fx",
		jailRate, n, procRate, p, restoreRate, n, jailRate/procRate)
	t.Logf("offense->kernel latency, burst of %d: p50 %s p99 %s max %s", n, burst[0], burst[1], burst[2])
	t.Logf("offense->kernel latency, paced 10k/s (%d): p50 %s p99 %s max %s", m, paced[0], paced[1], paced[2])
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func waitCount(t *testing.T, c *atomic.Int64, n int64) {
	deadline := time.Now().Add(60 * time.Second)
	for c.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d written", c.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func latencies(done []atomic.Int64, seen []int64) [3]time.Duration {
	d := make([]time.Duration, len(done))
	for i := range done {
		d[i] = time.Duration(done[i].Load() - seen[i])
	}
	sort.Slice(d, func(a, b int) bool { return d[a] < d[b] })
	return [3]time.Duration{d[len(d)/2], d[len(d)*99/100], d[len(d)-1]}
}
