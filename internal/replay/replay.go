// Package replay runs recorded evidence — FreeSWITCH logs (plain or .gz)
// and pcap/pcapng captures — through the same analyzers, jail and decision
// as the daemon, with time taken from the records, and reports one verdict
// per source address. It bans nothing: the jail gets a dry-run backend.
package replay

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/eslwatch"
	"github.com/sipwarden/sipwarden/internal/jail"
	"github.com/sipwarden/sipwarden/internal/logwatch"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/pipeline"
	"github.com/sipwarden/sipwarden/internal/protect"
	"github.com/sipwarden/sipwarden/internal/sip"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// Verdicts, as SPEC.md names them.
const (
	VerdictBan            = "ban"
	VerdictProtected      = "protected"
	VerdictNeverBan       = "never-ban"
	VerdictBelowThreshold = "below-threshold"
)

// Options configures a replay.
type Options struct {
	Config        config.Config
	Files         []string
	Registrations string    // `show registrations as json` output; optional
	Progress      io.Writer // progress lines for long inputs; nil for none
	// Now is used for year inference of year-less log lines; default time.Now.
	Now func() time.Time
}

// Row is one source address's verdict.
type Row struct {
	IP         netip.Addr     `json:"ip"`
	Offenses   map[string]int `json:"offenses"`
	Score      float64        `json:"score"`
	Verdict    string         `json:"verdict"`
	BanSeconds int64          `json:"ban_seconds"`
	Why        string         `json:"why,omitempty"`
}

// Report is the result of a replay.
type Report struct {
	Rows     []Row
	Lines    int64 // log lines read
	Packets  int   // capture packets read
	Offenses int   // offenses found
	// Learned says which registrations the captures' 200 OKs taught, and
	// from which FreeSWITCH addresses.
	Learned string
	// Servers are the FreeSWITCH addresses inferred from the captures (when
	// sip.servers is not set).
	Servers []netip.Addr
}

// regLog collects the registrations FreeSWITCH confirmed in the captures
// (the analyzer reports them as events, with their time).
type regLog struct {
	mu     sync.Mutex
	events []sip.RegistrationEvent
}

func (l *regLog) Registration(e sip.RegistrationEvent) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

// Upsert is not called (the analyzer prefers Registration); were it, the
// registration would count from the start of its capped lifetime at most.
func (l *regLog) Upsert(r whitelist.Registration) {
	l.Registration(sip.RegistrationEvent{At: r.ExpiresAt.Add(-sip.DefaultMaxRegistrationExpiry), Registration: r})
}

func (l *regLog) sorted() []sip.RegistrationEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.SortStableFunc(l.events, func(a, b sip.RegistrationEvent) int { return a.At.Compare(b.At) })
	return l.events
}

// summary is one line: how many registrations, of how many addresses, from
// which servers.
func (l *regLog) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ips := map[netip.Addr]bool{}
	servers := map[netip.Addr]bool{}
	n := 0
	for _, e := range l.events {
		if e.Ended {
			continue
		}
		n++
		ips[e.Registration.IP] = true
		servers[e.Server] = true
	}
	if n == 0 {
		return ""
	}
	var from []string
	for s := range servers {
		from = append(from, s.String())
	}
	sort.Strings(from)
	return fmt.Sprintf("learned %d registrations of %d addresses from FreeSWITCH at %s (each from its 200 OK on, for at most %s)",
		n, len(ips), strings.Join(from, ", "), sip.DefaultMaxRegistrationExpiry)
}

// clock is the replay's "now": the time of the record being judged.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time) {
	if !t.IsZero() {
		c.ns.Store(t.UnixNano())
	}
}

// Run replays the files and returns the verdicts, ordered by verdict
// severity then score.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	reg := prometheus.NewRegistry()
	// Until judging starts the clock stays at the epoch, so that the
	// whitelist keeps every registration it is given (a snapshot taken at
	// the end of the night must still cover the night); the judgment then
	// asks it at each offense's own time.
	clk := &clock{}
	clk.set(time.Unix(0, 0))
	wopt := pipeline.WhitelistOptions(o.Config)
	wopt.Now = clk.now
	wopt.Registerer = reg
	wl := whitelist.New(wopt)
	if o.Registrations != "" {
		data, err := os.ReadFile(o.Registrations)
		if err != nil {
			return nil, fmt.Errorf("registrations: %w", err)
		}
		regs, _, err := eslwatch.ParseRegistrations(data, "replay")
		if err != nil {
			return nil, fmt.Errorf("registrations %s: %w", o.Registrations, err)
		}
		for _, r := range regs {
			wl.Upsert(r)
		}
	}
	// The daemon's jail and analyzers, judging at the replay clock and
	// banning nothing.
	pl, err := pipeline.New(o.Config, pipeline.Parts{
		Allowlist:  allowAt{wl, clk},
		Firewall:   ban.NewDryRun(ban.DryRunOptions{Now: clk.now}),
		Registerer: reg,
		Now:        clk.now,
		Offline:    true,
	})
	if err != nil {
		return nil, err
	}
	jail := pl.Jail()

	// Pass 1: captures. Their offenses wait, sorted by time, and so do the
	// registrations FreeSWITCH's 200 OKs confirmed: each protects its
	// address from its own time on (never retroactively), for its capped
	// lifetime.
	var captured []offense.Offense
	var mu sync.Mutex
	collect := offense.SinkFunc(func(of offense.Offense) {
		mu.Lock()
		captured = append(captured, of)
		mu.Unlock()
	})
	learned := &regLog{}
	analyzer, err := pl.SIPAnalyzer(collect, learned)
	if err != nil {
		return nil, err
	}
	rep := &Report{}
	var logs []string
	for _, path := range o.Files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		isCapture, err := readInput(path, o.Progress, func(br *bufio.Reader, capture bool) error {
			if !capture {
				return nil
			}
			hep := pl.HEPOptions()
			n, err := sip.ReadCapture(ctx, br, analyzer, sip.CaptureOptions{HEP: &hep})
			rep.Packets += n
			return err
		})
		if err != nil {
			return nil, err
		}
		if !isCapture {
			logs = append(logs, path)
		}
	}
	slices.SortStableFunc(captured, func(a, b offense.Offense) int { return a.Time.Compare(b.Time) })
	events := learned.sorted()
	rep.Learned, rep.Servers = learned.summary(), analyzer.InferredServers()
	if o.Progress != nil && rep.Learned != "" {
		fmt.Fprintf(o.Progress, "replay: %s\n", rep.Learned)
	}
	nextReg := 0
	judge := func(of offense.Offense) {
		for ; nextReg < len(events) && !events[nextReg].At.After(of.Time); nextReg++ {
			e := events[nextReg]
			if e.Ended {
				r := e.Registration
				wl.Remove(r.Node, r.IP, r.User, r.Realm, r.CallID)
			} else {
				wl.Upsert(e.Registration)
			}
		}
		clk.set(of.Time)
		jail.Offend(of)
		rep.Offenses++
	}
	// Pass 2: the logs, streamed (memory does not grow with their size),
	// each offense judged at its own time, merged with the captures'.
	next := 0
	fromLogs := offense.SinkFunc(func(of offense.Offense) {
		for next < len(captured) && !captured[next].Time.After(of.Time) {
			judge(captured[next])
			next++
		}
		judge(of)
	})
	parser := pl.LogParser(o.Now)
	for _, path := range logs {
		_, err := readInput(path, o.Progress, func(br *bufio.Reader, _ bool) error {
			n, err := logwatch.ScanLimit(ctx, br, parser, fromLogs, nil, o.Config.Logs.MaxLineBytes)
			rep.Lines += n
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	for ; next < len(captured); next++ {
		judge(captured[next])
	}
	pl.Guard().Drain(ctx) // nil-safe: nothing queued when disabled
	rep.Rows = rows(jail.AllOffenders(), pl.Guard())
	return rep, nil
}

// readInput opens path (plain or gzip), tells whether it is a capture (by
// its magic number) and hands the reader to fn, with progress on w for
// inputs that take long.
func readInput(path string, w io.Writer, fn func(br *bufio.Reader, capture bool) error) (capture bool, err error) {
	rc, err := logwatch.Open(path)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	var size int64
	if st, err := os.Stat(path); err == nil {
		size = st.Size()
	}
	cr := &countingReader{r: rc}
	stop := startProgress(w, path, cr, size)
	defer stop()
	br := bufio.NewReaderSize(cr, 256<<10)
	head, _ := br.Peek(64)
	capture = sip.IsCapture(head)
	if err := fn(br, capture); err != nil {
		return capture, fmt.Errorf("%s: %w", path, err)
	}
	return capture, nil
}

// allowAt asks the whitelist at the replay clock, not at the wall clock.
type allowAt struct {
	wl  *whitelist.Whitelist
	clk *clock
}

func (a allowAt) Allowed(ip netip.Addr) (string, bool) { return a.wl.AllowedAt(ip, a.clk.now()) }

// Registered and StaticOverlap: the whitelist runs on the replay clock.
func (a allowAt) Registered(p netip.Prefix) bool { return a.wl.Registered(p) }
func (a allowAt) StaticOverlap(p netip.Prefix) (netip.Prefix, bool) {
	return a.wl.StaticOverlap(p)
}
func (a allowAt) Registrations(ip netip.Addr) int { return a.wl.Registrations(ip) }

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// startProgress reports on w every 2 s while a file is read; nothing for
// inputs that finish sooner.
func startProgress(w io.Writer, path string, cr *countingReader, size int64) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				mb := float64(cr.n.Load()) / (1 << 20)
				fmt.Fprintf(w, "replay: %s: %.1f MiB read (file %.1f MiB)\n", path, mb, float64(size)/(1<<20))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func rows(offenders []jail.Offender, g *protect.Guard) []Row {
	out := make([]Row, 0, len(offenders))
	for _, of := range offenders {
		r := Row{IP: of.IP, Offenses: map[string]int{}, Score: of.PeakScore}
		for rule, n := range of.Offenses {
			r.Offenses[string(rule)] = n
		}
		switch {
		case of.Bans > 0:
			r.Verdict = VerdictBan
			r.BanSeconds = int64(of.BanDuration / time.Second)
			r.Why = "threshold reached"
			if of.Bans > 1 {
				r.Why = fmt.Sprintf("banned %d times (escalated)", of.Bans)
			}
			if of.User != "" {
				r.Why += "; target " + of.User
			}
		case of.Skipped == jail.StateProtected && g != nil && g.Ever(of.IP) != "":
			r.Verdict, r.Why = protectVerdict(g, of.IP)
		case of.Skipped == jail.StateProtected:
			r.Verdict = VerdictProtected
			r.Why = of.SkippedWhy
			if of.SkippedWhy == "registered" {
				r.Why = "registered office"
				if of.User != "" {
					r.Why += "; user " + of.User + " keeps failing (stale password?)"
				}
			}
		case of.Skipped == jail.StateNeverBan:
			r.Verdict = VerdictNeverBan
			r.Why = of.SkippedWhy
		default:
			r.Verdict = VerdictBelowThreshold
		}
		out = append(out, r)
	}
	rank := map[string]int{VerdictBan: 0, VerdictThrottled: 1, VerdictQuarantined: 1, VerdictProtected: 1, VerdictNeverBan: 2, VerdictBelowThreshold: 3}
	sort.SliceStable(out, func(i, j int) bool {
		if c := cmp.Compare(rank[out[i].Verdict], rank[out[j].Verdict]); c != 0 {
			return c < 0
		}
		if out[i].Score != out[j].Score {
			return out[i].Score > out[j].Score
		}
		return out[i].IP.Less(out[j].IP)
	})
	return out
}

// WriteJSON writes one object per line.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, row := range r.Rows {
		if err := enc.Encode(row); err != nil {
			return err
		}
	}
	return nil
}

// WriteTable writes a terminal-sized table and a summary line.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IP\tRULES HIT\tSCORE\tVERDICT\tBAN\tWHY")
	for _, row := range r.Rows {
		ban := "-"
		if row.BanSeconds > 0 {
			ban = (time.Duration(row.BanSeconds) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%s\t%s\n", row.IP, rulesHit(row.Offenses), row.Score, row.Verdict, ban, clip(row.Why, 50))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	counts := map[string]int{}
	for _, row := range r.Rows {
		counts[row.Verdict]++
	}
	graduated := ""
	if n := counts[VerdictQuarantined] + counts[VerdictThrottled]; n > 0 {
		graduated = fmt.Sprintf(", %d quarantined, %d throttled", counts[VerdictQuarantined], counts[VerdictThrottled])
	}
	_, err := fmt.Fprintf(w, "\n%d sources: %d ban, %d protected%s, %d never-ban, %d below-threshold (%d log lines, %d packets, %d offenses)\n",
		len(r.Rows), counts[VerdictBan], counts[VerdictProtected], graduated, counts[VerdictNeverBan], counts[VerdictBelowThreshold],
		r.Lines, r.Packets, r.Offenses)
	return err
}

func rulesHit(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s x%d", k, m[k])
	}
	return clip(strings.Join(parts, ", "), 40)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
