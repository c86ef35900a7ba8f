package eslwatch

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// BenchmarkEventsToWhitelist measures sofia::register events (the A_vanilla
// capture's, 1.4 kB each, from 10k addresses) through a real socket, the
// frame reader, the decoder and into the whitelist. Run with -cpu 1 for
// the one-core figure.
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
	frames := registerBurst(b, pool)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-events // ready

	// Offsets of each frame in the burst (they differ in length).
	offs := make([]int, 0, pool+1)
	for i := 0; i < len(frames); {
		offs = append(offs, i)
		i += len(esltest.EventPlain("")) + frameBodyLen(frames[i:])
	}
	offs = append(offs, len(frames))
	b.SetBytes(int64(len(frames) / pool))
	b.ResetTimer()
	t0 := time.Now()
	want = b.N
	for sent := 0; sent < b.N; sent += pool {
		n := min(pool, b.N-sent)
		if err := srv.Push(frames[:offs[n]]); err != nil {
			b.Fatal(err)
		}
	}
	<-events
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "events/s")
	if ips, _ := wl.Len(); ips != min(b.N, pool) {
		b.Fatalf("%d addresses whitelisted, want %d", ips, min(b.N, pool))
	}
}

// BenchmarkDecode measures the frame reader and the event decoder alone.
func BenchmarkDecode(b *testing.B) {
	frame := []byte(fixtureEvents(b, "A_vanilla_esl_custom_sofia_events.raw.txt")[2])
	stream := bytes.Repeat(frame, 1000)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	r := bytes.NewReader(stream)
	fr := newFrameReader(r, DefaultMaxFrame)
	for b.Loop() {
		f, err := fr.next()
		if err == io.EOF {
			r.Reset(stream)
			f, err = fr.next()
		}
		if err != nil {
			b.Fatal(err)
		}
		if _, err := parsePlainEvent(f.body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseRegistrations measures a resync listing of 10k rows.
func BenchmarkParseRegistrations(b *testing.B) {
	row := listingA[strings.Index(listingA, "[")+1 : len(listingA)-2]
	rows := make([]string, 10_000)
	for i := range rows {
		rows[i] = strings.Replace(strings.Replace(row, `"network_ip":"127.0.0.1"`,
			fmt.Sprintf(`"network_ip":"%s"`, burstIP(i)), 1), "1-9887", fmt.Sprint("c-", i), 1)
	}
	body := []byte(`{"row_count":10000,"rows":[` + strings.Join(rows, ",") + `]}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		regs, _, err := ParseRegistrations(body, "n")
		if err != nil || len(regs) != 10_000 {
			b.Fatal(len(regs), err)
		}
	}
}

// frameBodyLen is the Content-Length of the frame at the start of s, plus
// the digits it takes beyond an empty frame's "0".
func frameBodyLen(s string) int {
	v, _, _ := strings.Cut(strings.TrimPrefix(s, "Content-Length: "), "\n")
	n, _ := parseLength(v)
	return n + len(v) - 1
}
