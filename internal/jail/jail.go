// Package jail scores offenses per address, escalates ban durations, keeps
// the state file and writes bans through a ban.Firewall from one writer
// goroutine, so that Offend never waits on the kernel.
//
// It must not find offenses (sources do that), must not learn registrations
// (the whitelist does) and asks internal/decision, never its own copy of
// the checks, whether an address may be banned.
package jail

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/decision"
	"github.com/sipwarden/sipwarden/internal/offense"
)

// registrationCounter is an optional Allowlist extension used only to say
// more in the "protected" log line: how many live registrations an address
// has.
type registrationCounter interface {
	Registrations(netip.Addr) int
}

// Options configures a Jail. Zero values take the documented defaults.
type Options struct {
	Findtime   time.Duration // scoring window (10m)
	MaxRetry   float64       // score threshold (5)
	Bantime    time.Duration // first ban (1h)
	MaxBantime time.Duration // escalation cap (7d)
	Factor     float64       // escalation factor (2; 1 = none)
	// UnverifiedFactor weighs evidence a forged source could produce, see
	// Policy.UnverifiedFactor (1).
	UnverifiedFactor float64
	// Weights per rule, see Policy.Weights.
	Weights map[offense.Rule]float64
	// MaxOffenders caps the tracked addresses (262144); beyond it the
	// least-scored of a small random sample is evicted
	// (sipwarden_jail_evictions_total). Banned addresses are never evicted.
	MaxOffenders int
	NeverBan     []netip.Prefix
	// V6Prefix > 0 (and < 128) scores and bans IPv6 sources per prefix of
	// that length (the backend must hold prefixes: ipset V6Prefix too);
	// 0 bans the exact address.
	V6Prefix  int
	Allowlist decision.Allowlist // nil: nothing allowlisted
	Firewall  ban.Firewall       // nil: ban.NewDryRun()
	// StateFile keeps ban history, offense counts and active bans across
	// restarts (JSON, written atomically). Empty: no persistence.
	StateFile  string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time

	QueueSize   int           // kernel write queue (4096); full => sipwarden_ban_queue_dropped_total, resync repairs
	DedupWindow time.Duration // the same auth_failure (IP+user) from another source within it counts once (2s)
	HistoryTTL  time.Duration // ban counts are forgotten this long after the last ban (7d)
	SweepEvery  time.Duration // expiry/decay sweep (30s)
	ResyncEvery time.Duration // kernel read-back and repair (1m)
	SaveEvery   time.Duration // state file write when changed (1m)
	// HostAddrs lists the host's own addresses, never banned (nil:
	// net.InterfaceAddrs). Refreshed on every resync.
	HostAddrs func() ([]netip.Addr, error)
	// SkipHostAddrs leaves the host's addresses out of never-ban (replay:
	// the replaying machine's addresses say nothing of the recording).
	SkipHostAddrs bool
}

// Jail scores offenses per address and decides bans. It is safe for
// concurrent use; kernel writes happen on the one writer goroutine of Run.
type Jail struct {
	opt    Options
	log    *slog.Logger
	banMsg string // "banned", or "would ban ..." with the dry-run backend
	now    func() time.Time
	fw     ban.Firewall
	allow  decision.Allowlist
	m      *metrics
	policy atomic.Pointer[compiled]
	dec    atomic.Pointer[decision.Decision]
	own    atomic.Pointer[[]netip.Addr] // the host's addresses, last listed

	mu        sync.Mutex
	offenders map[netip.Addr]*offender
	active    map[netip.Addr]*offender // the banned subset of offenders

	queue   chan op
	wbuf    []op // writer goroutine scratch
	ebuf    []ban.Entry
	ibuf    []int
	errbuf  []error
	running atomic.Bool
	writeMu sync.Mutex // serialises backend calls (writer goroutine, or callers before Run)
	dirty   atomic.Bool
	health  atomic.Pointer[string] // "" healthy

	errLogMu   sync.Mutex
	errLogLast map[string]time.Time
}

type offender struct {
	winStart, last int64 // unix ns, offense time
	cur, prev      float32
	counts         [maxRules]uint32
	state          uint8 // stWatching, stProtected, stNeverBan (banned: ban != nil)
	why            string
	user           string
	skipAt         int64 // last skip counted/logged (offense time)
	dd             *dedup
	hist           *history
	ban            *activeBan
	peak           float32 // highest score reached
	verified       bool    // some of its evidence needed a round trip (cannot be forged)
	skipped        uint8   // the last skip decision (stProtected, stNeverBan), kept after it ages out
}

const (
	stWatching uint8 = iota
	stProtected
	stNeverBan
)

type dedup struct {
	user uint64
	last int64
	n    [numSources]uint16
}

type history struct {
	count int
	last  int64 // unix ns of the last ban
	dur   time.Duration
}

type activeBan struct {
	prefix           netip.Prefix
	rule, reason     string
	created, expires time.Time // expires zero: permanent
	// for an automatic ban the reason is written when asked for (not on the hot path)
	score, maxRetry float64
	n               uint32
	user            string
}

func (b *activeBan) why() string {
	if b.reason != "" || b.n == 0 {
		return b.reason
	}
	r := fmt.Sprintf("score %.4g >= %.4g: %d %s", b.score, b.maxRetry, b.n, b.rule)
	if b.user != "" {
		r += " for " + b.user
	}
	return r
}

type opKind uint8

const (
	opAdd opKind = iota
	opDel
)

type op struct {
	kind    opKind
	prefix  netip.Prefix
	expires time.Time  // opAdd: remaining = expires - now; zero = permanent
	seen    time.Time  // wall clock when the offense reached Offend (latency)
	done    chan error // manual operations wait for the result
}

// New builds a jail. When only the state file is unreadable it returns a
// working jail together with an error wrapping ban.ErrBadState (the file is kept
// aside as StateFile+".corrupt"): log it and go on, the kernel sets are read
// back by Run.
func New(o Options) (*Jail, error) {
	pol, err := compile(o.policy())
	if err != nil {
		return nil, fmt.Errorf("ban: %w", err)
	}
	if o.V6Prefix < 0 || o.V6Prefix > 128 {
		return nil, fmt.Errorf("ban: v6_prefix %d: must be 0..128", o.V6Prefix)
	}
	if o.V6Prefix == 128 {
		o.V6Prefix = 0
	}
	setDefault(&o.MaxOffenders, 1<<18)
	setDefault(&o.QueueSize, 4096)
	setDefault(&o.DedupWindow, 2*time.Second)
	setDefault(&o.HistoryTTL, 7*24*time.Hour)
	setDefault(&o.SweepEvery, 30*time.Second)
	setDefault(&o.ResyncEvery, time.Minute)
	setDefault(&o.SaveEvery, time.Minute)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	if o.Firewall == nil {
		o.Firewall = ban.NewDryRun(ban.DryRunOptions{Now: o.Now})
	}
	if o.SkipHostAddrs {
		o.HostAddrs = func() ([]netip.Addr, error) { return nil, nil }
	}
	if o.HostAddrs == nil {
		o.HostAddrs = interfaceAddrs
	}
	j := &Jail{
		opt:        o,
		log:        o.Logger.With("component", "ban"),
		now:        o.Now,
		fw:         o.Firewall,
		allow:      o.Allowlist,
		offenders:  make(map[netip.Addr]*offender),
		active:     make(map[netip.Addr]*offender),
		queue:      make(chan op, o.QueueSize),
		errLogLast: make(map[string]time.Time),
		banMsg:     "banned",
	}
	if _, dry := o.Firewall.(*ban.DryRun); dry {
		j.banMsg = "would ban (dry-run: nothing is written to the firewall)"
	}
	m, err := newMetrics(o.Registerer, j.countOf(&j.active), j.countOf(&j.offenders))
	if err != nil {
		return nil, fmt.Errorf("ban: metrics: %w", err)
	}
	j.m = m
	j.policy.Store(pol)
	notStarted := "ban: not started"
	j.health.Store(&notStarted)
	j.refreshHostAddrs()
	if o.StateFile != "" {
		if err := j.loadState(o.StateFile); err != nil {
			return j, err
		}
	}
	return j, nil
}

// countOf reads a map's size for a gauge at scrape time.
func (j *Jail) countOf(m *map[netip.Addr]*offender) func() float64 {
	return func() float64 {
		j.mu.Lock()
		defer j.mu.Unlock()
		return float64(len(*m))
	}
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

func (o Options) policy() Policy {
	return Policy{Findtime: o.Findtime, MaxRetry: o.MaxRetry, Bantime: o.Bantime, MaxBantime: o.MaxBantime,
		Factor: o.Factor, Weights: o.Weights, NeverBan: o.NeverBan, UnverifiedFactor: o.UnverifiedFactor}
}

// Policy returns the policy in force, defaults filled in.
func (j *Jail) Policy() Policy { return j.policy.Load().Policy }

// SetPolicy replaces thresholds, weights and never-ban prefixes (config
// reload). Scores already accumulated are kept. On error nothing changes.
func (j *Jail) SetPolicy(p Policy) error {
	c, err := compile(p)
	if err != nil {
		return fmt.Errorf("ban: %w", err)
	}
	j.policy.Store(c)
	var own []netip.Addr
	if p := j.own.Load(); p != nil {
		own = *p
	}
	j.dec.Store(decision.New(c.NeverBan, own, j.allow))
	return nil
}

func interfaceAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

func (j *Jail) refreshHostAddrs() {
	as, err := j.opt.HostAddrs()
	if err != nil {
		j.logErr("host_addrs", "cannot list the host's addresses; keeping the previous list", err)
		if j.own.Load() != nil {
			return
		}
	}
	j.own.Store(&as)
	j.dec.Store(decision.New(j.policy.Load().NeverBan, as, j.allow))
}

// key is the jail's map key for ip: the address, or its masked prefix
// address when IPv6 prefixes are banned.
func (j *Jail) key(ip netip.Addr) (netip.Addr, netip.Prefix) {
	ip = ip.Unmap().WithZone("")
	if ip.Is6() && j.opt.V6Prefix > 0 {
		p := netip.PrefixFrom(ip, j.opt.V6Prefix).Masked()
		return p.Addr(), p
	}
	return ip, netip.PrefixFrom(ip, ip.BitLen())
}

func (j *Jail) prefixOf(k netip.Addr) netip.Prefix {
	if k.Is6() && j.opt.V6Prefix > 0 {
		return netip.PrefixFrom(k, j.opt.V6Prefix)
	}
	return netip.PrefixFrom(k, k.BitLen())
}

// --- scoring: a sliding-window counter, decayed lazily on offense time ---
//
// Two buckets of length Findtime; the score at t is cur + prev*(1-f), f the
// fraction of the current bucket elapsed. The first window starts at the
// first offense, so "MaxRetry within Findtime" is exact there and a linear
// approximation afterwards. It depends only on offense timestamps, so a
// replay gives the live verdicts.

func (of *offender) roll(t, F int64) {
	if of.winStart == 0 {
		of.winStart = t
		return
	}
	if t < of.winStart+F {
		return
	}
	k := (t - of.winStart) / F
	if k == 1 {
		of.prev, of.cur = of.cur, 0
	} else {
		of.prev, of.cur = 0, 0
	}
	of.winStart += k * F
}

func (of *offender) add(t int64, w float32, F int64) {
	if of.winStart == 0 || t >= of.winStart {
		of.roll(t, F)
		of.cur += w
		return
	}
	if t >= of.winStart-F { // late record for the previous bucket
		of.prev += w
	}
	// older than both buckets: counted, not scored
}

func (of *offender) score(t, F int64) float64 {
	if of.winStart == 0 {
		return 0
	}
	cur, prev, ws := of.cur, of.prev, of.winStart
	if t >= ws+F {
		k := (t - ws) / F
		if k == 1 {
			prev, cur = cur, 0
		} else {
			prev, cur = 0, 0
		}
		ws += k * F
	}
	s := float64(cur)
	if t > ws {
		s += float64(prev) * (1 - float64(t-ws)/float64(F))
	} else {
		s += float64(prev)
	}
	return s
}

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// duplicate reports whether this auth_failure is the same failure already
// counted from another source: within DedupWindow of the previous one for
// the same user, the count is the maximum seen by any one source.
func (j *Jail) duplicate(of *offender, user string, si int, t int64) bool {
	u := fnv64(user)
	d := of.dd
	if d == nil {
		d = &dedup{}
		of.dd = d
	}
	win := int64(j.opt.DedupWindow)
	if d.user != u || d.last == 0 || t-d.last > win || d.last-t > win {
		*d = dedup{user: u, last: t}
		d.n[si] = 1
		return false
	}
	if t > d.last {
		d.last = t
	}
	var others uint16
	for i, n := range d.n {
		if i != si && n > others {
			others = n
		}
	}
	if d.n[si] < math.MaxUint16 {
		d.n[si]++
	}
	return d.n[si] <= others
}

var authFailureIdx = ruleIndex(offense.AuthFailure)

// maxFuture is how far ahead of the jail's clock an offense time may be.
const maxFuture = time.Minute

// Offend records one offense; it implements offense.Sink. Scoring and the
// decision are synchronous; the kernel write is queued, never awaited.
func (j *Jail) Offend(o offense.Offense) {
	seen := time.Now()
	ri, si := ruleIndex(o.Rule), sourceIndex(o.Source)
	j.m.offense(ri, si).Inc()
	ip := o.IP.Unmap()
	if !ip.IsValid() {
		j.m.invalid.Inc()
		return
	}
	pol := j.policy.Load()
	if pol.weights[ri] == 0 {
		// A disabled rule (weight 0): counted in the metrics, not tracked
		// per address, so it neither fills the jail nor shows in its views.
		return
	}
	t := o.Time
	if now := j.now(); t.IsZero() || t.After(now.Add(maxFuture)) {
		// a record from the future (a clock or year-inference error) would
		// freeze this address's window: take it as happening now
		t = now
	}
	tn := t.UnixNano()
	F := int64(pol.Findtime)
	key, pfx := j.key(ip)

	j.mu.Lock()
	of := j.offenders[key]
	if of == nil {
		if len(j.offenders) >= j.opt.MaxOffenders {
			j.evictLocked(tn, F)
		}
		of = &offender{}
		j.offenders[key] = of
	}
	// The same failure seen by several sources (Event Socket, log, wire)
	// counts and scores once.
	w := pol.weights[ri]
	if !o.Verified {
		w *= pol.UnverifiedFactor
	}
	if ri == authFailureIdx && j.duplicate(of, o.User, si, tn) {
		w = 0
		j.m.deduplicated.Inc()
	} else if of.counts[ri] < math.MaxUint32 {
		of.counts[ri]++
	}
	if o.User != "" {
		of.user = o.User
	}
	if o.Verified {
		of.verified = true
	}
	of.add(tn, float32(w), F)
	if tn > of.last {
		of.last = tn
	}
	j.dirty.Store(true)
	if of.ban != nil {
		if of.ban.expires.IsZero() || of.ban.expires.After(t) {
			j.mu.Unlock()
			return // already banned
		}
		of.ban = nil
		delete(j.active, key)
	}
	score := of.score(of.last, F)
	if float32(score) > of.peak {
		of.peak = float32(score)
	}
	if w == 0 || score < pol.MaxRetry {
		j.mu.Unlock()
		return
	}
	v := j.decide(ip, pfx)
	if v.Reason != decision.Ban {
		reason, why := v.Reason, v.Why
		skip := of.skipAt == 0 || tn-of.skipAt >= F || tn < of.skipAt
		of.state, of.why = stProtected, why
		if reason == decision.NeverBan {
			of.state = stNeverBan
		}
		of.skipped = of.state
		var cnt uint32
		user := of.user
		if skip {
			of.skipAt = tn
			cnt = of.counts[ri]
		}
		j.mu.Unlock()
		if skip {
			j.m.skipped.WithLabelValues(reason.String()).Inc()
			j.logSkip(ip, reason, why, ri, cnt, user, score)
		}
		return
	}
	pfx = v.Prefix // narrowed when the prefix covers a protected address
	// ban
	h := of.hist
	if h == nil {
		h = &history{}
		of.hist = h
	}
	h.count++
	d := pol.banDuration(h.count)
	h.last, h.dur = tn, d
	// The ban runs from the decision, not from the offense's own time: an
	// offense stamped late (a peer's clock, a backlog) still bans for d.
	start := t
	if now := j.now(); now.After(start) {
		start = now
	}
	b := &activeBan{
		prefix:   pfx,
		rule:     ruleName(ri),
		created:  start,
		expires:  start.Add(d),
		score:    score,
		maxRetry: pol.MaxRetry,
		n:        of.counts[ri],
		user:     of.user,
	}
	of.ban = b
	of.cur, of.prev = 0, 0
	of.state, of.why = stWatching, ""
	j.active[key] = of
	count := h.count
	j.mu.Unlock()

	j.m.bans(ri).Inc()
	select {
	case j.queue <- op{kind: opAdd, prefix: pfx, expires: b.expires, seen: seen}:
	default:
		j.m.dropped.Inc()
	}
	if j.log.Enabled(context.Background(), slog.LevelInfo) {
		j.log.Info(j.banMsg, "ip", pfx.String(), "rule", b.rule, "score", score, "duration", d, "count", count, "source", string(o.Source), "user", b.user)
	}
}

// decide asks the decision in force about a ban on pfx for ip.
func (j *Jail) decide(ip netip.Addr, pfx netip.Prefix) decision.Verdict {
	return j.dec.Load().Decide(ip, pfx)
}

func (j *Jail) logSkip(ip netip.Addr, reason decision.Reason, why string, ri int, cnt uint32, user string, score float64) {
	rule := ruleName(ri)
	for_ := ""
	if user != "" {
		for_ = " for " + user
	}
	switch reason {
	case decision.Registered:
		regs := -1
		if rc, ok := j.allow.(registrationCounter); ok {
			regs = rc.Registrations(ip)
		}
		live := ""
		switch {
		case regs == 1:
			live = " while 1 registration live"
		case regs >= 0:
			live = fmt.Sprintf(" while %d registrations live", regs)
		default:
			live = " while registered"
		}
		j.log.Warn(fmt.Sprintf("office %s protected: %d %s%s%s", ip, cnt, rule, for_, live),
			"ip", ip.String(), "reason", reason, "rule", rule, "count", cnt, "user", user, "score", score, "registrations", regs)
	case decision.Static:
		j.log.Warn(fmt.Sprintf("allowlisted %s protected: %d %s%s (%s)", ip, cnt, rule, for_, why),
			"ip", ip.String(), "reason", reason, "rule", rule, "count", cnt, "user", user, "score", score)
	default:
		j.log.Warn(fmt.Sprintf("%s never banned (%s): %d %s%s", ip, why, cnt, rule, for_),
			"ip", ip.String(), "reason", reason, "why", why, "rule", rule, "count", cnt, "user", user, "score", score)
	}
}

// evictLocked drops the least-scored of a small random sample (map
// iteration order is random), preferring addresses without ban history;
// banned addresses are never evicted.
func (j *Jail) evictLocked(t, F int64) {
	// The victim is the least valuable of a small sample: first by tier —
	// no ban history and no verified evidence (what a forged-source flood
	// creates) goes before verified evidence, which goes before ban
	// history — then by score. So a flood of forged sources evicts its own
	// entries, not the real attacker's half-way score.
	const sample = 8
	var (
		victim   netip.Addr
		best     = math.Inf(1)
		bestTier = 3
		n        int
	)
	for k, of := range j.offenders {
		n++
		if of.ban == nil {
			tier := 0
			if of.verified {
				tier = 1
			}
			if of.hist != nil {
				tier = 2
			}
			s := of.score(t, F)
			if tier < bestTier || (tier == bestTier && s < best) {
				victim, best, bestTier = k, s, tier
			}
		}
		if n >= sample {
			break
		}
	}
	if victim.IsValid() {
		delete(j.offenders, victim)
		j.m.evictions.Inc()
	}
}

// Ban bans ip by hand (API, CLI) after the same never-ban and allowlist
// checks as an automatic ban (ban.ErrNeverBan, ban.ErrWhitelisted). d <= 0 takes
// the escalated bantime. It waits for the kernel write.
func (j *Jail) Ban(ctx context.Context, ip netip.Addr, d time.Duration, reason string) error {
	if !ip.IsValid() {
		return fmt.Errorf("ban: invalid address")
	}
	ip = ip.Unmap().WithZone("")
	pol := j.policy.Load()
	key, pfx := j.key(ip)
	v := j.decide(ip, pfx)
	switch v.Reason {
	case decision.Ban:
		pfx = v.Prefix
	case decision.NeverBan:
		j.m.skipped.WithLabelValues(v.Reason.String()).Inc()
		return fmt.Errorf("ban %s: %w (%s)", ip, ban.ErrNeverBan, v.Why)
	default:
		j.m.skipped.WithLabelValues(v.Reason.String()).Inc()
		return fmt.Errorf("ban %s: %w (%s)", ip, ban.ErrWhitelisted, v.Why)
	}
	now := j.now()
	j.mu.Lock()
	of := j.offenders[key]
	if of == nil {
		of = &offender{}
		j.offenders[key] = of
	}
	if of.hist == nil {
		of.hist = &history{}
	}
	of.hist.count++
	if d <= 0 {
		d = pol.banDuration(of.hist.count)
	}
	of.hist.last, of.hist.dur = now.UnixNano(), d
	if reason == "" {
		reason = "manual"
	}
	b := &activeBan{prefix: pfx, rule: "manual", reason: reason, created: now, expires: now.Add(d)}
	prev := of.ban
	of.ban = b
	of.state, of.why = stWatching, ""
	j.active[key] = of
	j.mu.Unlock()
	j.dirty.Store(true)

	err := j.submit(ctx, op{kind: opAdd, prefix: pfx, expires: b.expires, seen: time.Now()})
	if err != nil {
		j.mu.Lock()
		if of.ban == b {
			of.ban = prev
			if prev == nil {
				delete(j.active, key)
			}
			of.hist.count--
		}
		j.mu.Unlock()
		return fmt.Errorf("ban %s: %w", pfx, err)
	}
	j.m.bansManual.Inc()
	j.log.Info(j.banMsg, "ip", pfx.String(), "rule", "manual", "reason", reason, "duration", d)
	return nil
}

// Unban lifts the ban on ip (or on the prefix containing it). ban.ErrNotBanned
// when there is none. It waits for the kernel write.
func (j *Jail) Unban(ctx context.Context, ip netip.Addr) error {
	if !ip.IsValid() {
		return fmt.Errorf("unban: invalid address")
	}
	key, pfx := j.key(ip)
	now := j.now()
	j.mu.Lock()
	of := j.offenders[key]
	if of == nil || of.ban == nil || (!of.ban.expires.IsZero() && !of.ban.expires.After(now)) {
		j.mu.Unlock()
		return fmt.Errorf("unban %s: %w", ip.Unmap(), ban.ErrNotBanned)
	}
	pfx = of.ban.prefix
	of.ban = nil
	of.cur, of.prev = 0, 0
	delete(j.active, key)
	j.mu.Unlock()
	j.dirty.Store(true)
	if err := j.submit(ctx, op{kind: opDel, prefix: pfx}); err != nil {
		return fmt.Errorf("unban %s: %w", pfx, err)
	}
	j.log.Info("unbanned", "ip", pfx.String())
	return nil
}

// submit runs a manual operation on the writer goroutine and waits for it;
// before Run has started it runs in the caller.
func (j *Jail) submit(ctx context.Context, o op) error {
	if !j.running.Load() {
		return j.apply(ctx, o)
	}
	o.done = make(chan error, 1)
	select {
	case j.queue <- o:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Bans lists the active bans, oldest first.
func (j *Jail) Bans() []Ban {
	now := j.now()
	j.mu.Lock()
	out := make([]Ban, 0, len(j.active))
	for _, of := range j.active {
		b := of.ban
		if b == nil || (!b.expires.IsZero() && !b.expires.After(now)) {
			continue
		}
		out = append(out, Ban{IP: b.prefix.Addr(), Prefix: prefixField(b.prefix), Rule: b.rule, Reason: b.why(),
			CreatedAt: b.created, ExpiresAt: b.expires, Count: of.hist.countOr1()})
	}
	j.mu.Unlock()
	sort.Slice(out, func(a, b int) bool {
		if !out[a].CreatedAt.Equal(out[b].CreatedAt) {
			return out[a].CreatedAt.Before(out[b].CreatedAt)
		}
		return out[a].IP.Less(out[b].IP)
	})
	return out
}

func (h *history) countOr1() int {
	if h == nil || h.count < 1 {
		return 1
	}
	return h.count
}

func prefixString(p netip.Prefix) string {
	if p.Bits() == p.Addr().BitLen() {
		return p.Addr().String()
	}
	return p.String()
}

// prefixField is p for a prefix ban, the zero Prefix for a single address.
func prefixField(p netip.Prefix) netip.Prefix {
	if p.Bits() == p.Addr().BitLen() {
		return netip.Prefix{}
	}
	return p
}

// Offenders lists every tracked address with its live score, highest first.
func (j *Jail) Offenders() []Offender {
	now := j.now()
	nn := now.UnixNano()
	pol := j.policy.Load()
	F := int64(pol.Findtime)
	j.mu.Lock()
	out := make([]Offender, 0, len(j.offenders))
	for k, of := range j.offenders {
		t := max(nn, of.last)
		o := Offender{IP: k, Prefix: prefixField(j.prefixOf(k)), Score: of.score(t, F), Offenses: make(map[offense.Rule]int), User: of.user, State: StateWatching}
		if of.last != 0 {
			o.LastSeen = time.Unix(0, of.last)
		}
		for i, c := range of.counts {
			if c > 0 {
				o.Offenses[offense.Rule(ruleName(i))] = int(c)
			}
		}
		if of.hist != nil {
			o.Bans = of.hist.count
			o.BanDuration, o.BanSeconds = of.hist.dur, of.hist.dur.Seconds()
		}
		o.PeakScore = float64(of.peak)
		switch of.skipped {
		case stProtected:
			o.Skipped, o.SkippedWhy = StateProtected, of.why
		case stNeverBan:
			o.Skipped, o.SkippedWhy = StateNeverBan, of.why
		}
		switch {
		case of.ban != nil && (of.ban.expires.IsZero() || of.ban.expires.After(now)):
			o.State, o.ExpiresAt = StateBanned, of.ban.expires
		case of.state == stProtected && t-of.skipAt < F:
			o.State, o.Why = StateProtected, of.why
		case of.state == stNeverBan && t-of.skipAt < F:
			o.State, o.Why = StateNeverBan, of.why
		}
		out = append(out, o)
	}
	j.mu.Unlock()
	sort.Slice(out, func(a, b int) bool {
		if out[a].Score != out[b].Score {
			return out[a].Score > out[b].Score
		}
		return out[a].IP.Less(out[b].IP)
	})
	return out
}

// Ready reports whether the ban backend works: the last resync and the last
// kernel write succeeded (a full set is reported in metrics, not here).
func (j *Jail) Ready() (reason string, ok bool) {
	if p := j.health.Load(); p != nil && *p != "" {
		return *p, false
	}
	return "", true
}

func (j *Jail) setHealth(err error) {
	s := ""
	if err != nil {
		s = err.Error()
	}
	j.health.Store(&s)
}

// logErr logs at most once per second per kind, so a full set under a flood
// does not flood the log too.
func (j *Jail) logErr(kind, msg string, err error, args ...any) {
	now := time.Now()
	j.errLogMu.Lock()
	last := j.errLogLast[kind]
	ok := now.Sub(last) >= time.Second
	if ok {
		j.errLogLast[kind] = now
	}
	j.errLogMu.Unlock()
	if ok {
		j.log.Error(msg, append([]any{"op", kind, "err", err}, args...)...)
	}
}
