package eslwatch

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// BenchmarkEventsToWhitelist measures sofia::register events (the A_vanilla
// capture's, 1.4 kB each, from 10k addresses) through a real socket, the
// frame reader, the decoder and into the whitelist: one op is one event.
// It reports events/s (wall clock, both ends of the socket in this
// process), allocs/op (allocations per event) and cpu-us/event (CPU time
// of the whole process, server included, per event: what the storm costs
// regardless of how busy the machine is). Run with -cpu 1 for the
// one-core figure.
func BenchmarkEventsToWhitelist(b *testing.B) {
	srv := esltest.NewServer(b, "ClueCon")
	wl := whitelist.New(whitelist.Options{})
	w, err := New(Options{Addresses: []string{srv.Addr}, Password: "ClueCon", Whitelist: wl,
		Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	events := make(chan struct{}, 1)
	var seen, want int
	w.testHook = func(what string) {
		if what == "ready" {
			events <- struct{}{}
			return
		}
		if what != "event" {
			return
		}
		seen++
		if seen == want {
			events <- struct{}{}
		}
	}
	const pool = 10_000
	frames := []byte(registerBurst(b, pool))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-events // ready

	// Offsets of each frame in the burst (they differ in length).
	offs := make([]int, 0, pool+1)
	for i := 0; i < len(frames); {
		offs = append(offs, i)
		i += len(esltest.EventPlain("")) + frameBodyLen(string(frames[i:min(i+64, len(frames))]))
	}
	offs = append(offs, len(frames))
	b.SetBytes(int64(len(frames) / pool))
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	t0 := time.Now()
	want = b.N
	for sent := 0; sent < b.N; sent += pool {
		n := min(pool, b.N-sent)
		if err := srv.PushBytes(frames[:offs[n]]); err != nil {
			b.Fatal(err)
		}
	}
	<-events
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "events/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/1e3/float64(b.N), "cpu-us/event")
	if ips, _ := wl.Len(); ips != min(b.N, pool) {
		b.Fatalf("%d addresses whitelisted, want %d", ips, min(b.N, pool))
	}
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDecode measures the frame reader and the event decoder alone.
func BenchmarkDecode(b *testing.B) {
	frame := []byte(fixtureEvents(b, "A_vanilla_esl_custom_sofia_events.raw.txt")[2])
	stream := bytes.Repeat(frame, 1000)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	r := bytes.NewReader(stream)
	fr := newFrameReader(r, DefaultMaxFrame)
	var ev event
	for b.Loop() {
		f, err := fr.next()
		if err == io.EOF {
			r.Reset(stream)
			f, err = fr.next()
		}
		if err != nil {
			b.Fatal(err)
		}
		if err := ev.parsePlain(f.body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseRegistrations measures decoding a resync listing (rows in
// the real format) of 10k and of 100k registrations (about 29 MB).
func BenchmarkParseRegistrations(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		body := []byte(generateListing(n))
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				regs, _, err := ParseRegistrations(body, "n")
				if err != nil || len(regs) != n {
					b.Fatal(len(regs), err)
				}
			}
		})
	}
}

// BenchmarkResync100k measures a whole resync of 100k registrations over
// the socket: the command, the 29 MB reply, its parse and the whitelist
// update, into an empty whitelist (the first resync after a start).
func BenchmarkResync100k(b *testing.B) {
	srv := esltest.NewServer(b, "ClueCon")
	srv.SetRegistrations(generateListing(100_000))
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		now := func() time.Time { return fixedNow } // the capture's rows expire an hour later
		wl := whitelist.New(whitelist.Options{Now: now})
		w, err := New(Options{Addresses: []string{srv.Addr}, Password: "ClueCon", Whitelist: wl,
			Registerer: prometheus.NewRegistry(), CommandTimeout: time.Minute, Now: now})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		b.StartTimer()
		go func() { done <- w.Run(ctx) }()
		<-w.Synced()
		b.StopTimer()
		cancel()
		<-done
		if ips, _ := wl.Len(); ips != 100_000 {
			b.Fatalf("%d addresses", ips)
		}
		b.StartTimer()
	}
}

// frameBodyLen is the Content-Length of the frame at the start of s, plus
// the digits it takes beyond an empty frame's "0".
func frameBodyLen(s string) int {
	v, _, _ := strings.Cut(strings.TrimPrefix(s, "Content-Length: "), "\n")
	n, _ := parseLength(v)
	return n + len(v) - 1
}
