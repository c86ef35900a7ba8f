package resilience_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPagingOffendersDoesNotDelayBans: the real binary holds 200,000
// offenders (the size at which one GET /v1/offenders used to hold the jail
// ~0.9 s). While a client pages through /v1/offenders in a loop, 100
// attackers are banned into the kernel set; the daemon's own offense ->
// kernel histogram must put 99% of them within 5 ms.
func TestPagingOffendersDoesNotDelayBans(t *testing.T) {
	t.Parallel()
	const offenders, attackers = 200_000, 100
	ns := newNS(t)
	dir := t.TempDir()
	logFile := filepath.Join(dir, "freeswitch.log")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	ts := time.Now().UTC().Format("2006-01-02 15:04:05.000000")
	for i := range offenders { // one failure each: below maxretry
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		fmt.Fprintf(w, "%s 97.00%% [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [1003@pbx.example.com] from ip %s\n", ts, ip)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := startReady(t, procOpts{ns: ns, api: "127.0.0.1:9091", config: fmt.Sprintf(`
esl:
  disabled: true
logs:
  files: [%s]
  from_start: true
  timezone: UTC
sip:
  hep_listen: ""
jail:
  max_offenders: 400000
api:
  listen: 127.0.0.1:9091
`, logFile)})
	waitFor(t, 120*time.Second, "200,000 offenders read", func() bool {
		return p.metric("sipwarden_offenses_total", "rule=auth_failure") >= offenders
	})

	// bans sends one round of attackers (5 failures each, 10 ms apart) and
	// returns how many reached the kernel set within 5 ms and within
	// 250 ms, of how many, by the daemon's own histogram.
	round := 0
	bans := func() (fast, slow, n float64) {
		t.Helper()
		round++
		count0 := p.metric("sipwarden_ban_latency_seconds_count")
		fast0 := p.metric("sipwarden_ban_latency_seconds_bucket", "le=0.005")
		slow0 := p.metric("sipwarden_ban_latency_seconds_bucket", "le=0.25")
		for i := range attackers {
			authFailures(t, logFile, fmt.Sprintf("198.51.%d.%d", 100+round, i+1), "admin", 5)
			time.Sleep(10 * time.Millisecond)
		}
		waitFor(t, 30*time.Second, "the attackers in the kernel set", func() bool {
			return p.metric("sipwarden_ban_latency_seconds_count")-count0 >= attackers
		})
		for i := range attackers {
			if ip := fmt.Sprintf("198.51.%d.%d", 100+round, i+1); !inSet(ns, "sipwarden4", ip) {
				t.Fatalf("%s not in the kernel set", ip)
			}
		}
		return p.metric("sipwarden_ban_latency_seconds_bucket", "le=0.005") - fast0,
			p.metric("sipwarden_ban_latency_seconds_bucket", "le=0.25") - slow0,
			p.metric("sipwarden_ban_latency_seconds_count") - count0
	}
	// The machine alone first: on a loaded host its own scheduling noise
	// can already exceed 5 ms, which the reader must not add to.
	baseFast, _, baseN := bans()

	var (
		stop  atomic.Bool
		pages atomic.Int64
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() { // a client reading every page, round and round
		defer wg.Done()
		after := ""
		for !stop.Load() {
			path := "/v1/offenders?limit=10000"
			if after != "" {
				path += "&after=" + url.QueryEscape(after)
			}
			code, body := p.get(path)
			if code != 200 {
				t.Errorf("GET %s = %d", path, code)
				return
			}
			var page struct {
				Next string `json:"next"`
			}
			if err := json.Unmarshal([]byte(body), &page); err != nil {
				t.Errorf("GET %s: %v", path, err)
				return
			}
			after = page.Next
			pages.Add(1)
		}
	}()
	waitFor(t, 30*time.Second, "the reader paging", func() bool { return pages.Load() >= 2 })
	fast, slow, n := bans()
	stop.Store(true)
	wg.Wait()
	t.Logf("%d pages read; with the reader %.0f of %.0f bans within 5 ms (%.0f within 250 ms); alone %.0f of %.0f",
		pages.Load(), fast, n, slow, baseFast, baseN)
	if pages.Load() < 3 {
		t.Fatalf("only %d pages read while banning", pages.Load())
	}
	if slow < n {
		t.Fatalf("%.0f of %.0f bans took over 250 ms while /v1/offenders was paged (the jail stalled)", n-slow, n)
	}
	// 100 bans a round: at ~98% within 5 ms, two rounds differ by about 2
	// bans (one standard deviation) from noise alone, so the margin is 5
	// points; the stall itself (0.9 s before the fix) is the 250 ms check.
	if want := min(0.99, baseFast/baseN-0.05); fast/n < want {
		t.Fatalf("%.0f of %.0f bans within 5 ms while /v1/offenders was paged, want >= %.0f%% (alone: %.0f of %.0f)", fast, n, want*100, baseFast, baseN)
	}
}
