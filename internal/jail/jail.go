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
	"hash/maphash"
	"log/slog"
	"math"
	"net"
	"net/netip"
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
	// MaxOffenders caps the tracked entries, banned ones included, see
	// Policy.MaxOffenders (DefaultMaxOffenders).
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
	// RegistrationsSynced, when not nil, holds every automatic ban until it
	// is closed (every registration source completed its first sync):
	// offenses are still scored, and the crossings seen meanwhile are
	// decided when it closes, against a whitelist that knows the offices.
	RegistrationsSynced <-chan struct{}
	// HoldCredentials, when set, is asked at each crossing after the first
	// sync: while it returns true (the registration source is down: it
	// cannot say which addresses are offices) a crossing decided by a
	// credential-class offense (auth_failure, unknown_user, auth_challenge)
	// is held as before the first sync; other rules still ban. Held
	// crossings are decided by ReleaseHeld, or at the first sweep after it
	// returns false.
	HoldCredentials func() bool
	// StateExtra is saved in the same state file (the whitelist's live
	// registrations, so that a restart protects at once). MarshalState
	// must return JSON. nil: nothing extra.
	StateExtra StateExtra
	// Protect, when set, is handed every offense of an address whose ban
	// the decision refuses because a live registration protects it
	// (internal/protect's graduated response), with the policy in force.
	Protect Protector
	// Targets, when set, is handed every credential failure (auth_failure,
	// unknown_user) naming a user, of any address, before scoring: it
	// counts distinct failing addresses per user (distributed guessing).
	Targets interface{ Failure(offense.Offense) }
}

// Protector receives the offenses of protected addresses. Protected must
// not block: it runs on the offense path.
type Protector interface {
	Protected(o offense.Offense, p Policy)
}

// StateExtra is state another component keeps in the jail's state file.
type StateExtra interface {
	MarshalState() ([]byte, error)
	UnmarshalState([]byte) error
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

	shards  [numShards]shard
	seed    maphash.Seed
	count   atomic.Int64  // entries in all shards, <= MaxOffenders
	evictAt atomic.Uint32 // the shard the next eviction starts at

	isSynced atomic.Bool // RegistrationsSynced is nil or closed
	syncOnce sync.Once
	heldMu   sync.Mutex
	held     []heldCrossing

	queue   chan op
	wbuf    []op // writer goroutine scratch
	ebuf    []ban.Entry
	ibuf    []int
	errbuf  []error
	running atomic.Bool
	writeMu sync.Mutex // serialises backend calls (writer goroutine, or callers before Run)
	dirty   atomic.Bool
	health  atomic.Pointer[string] // "" healthy
	full    [2]atomic.Bool         // the IPv4, IPv6 set refused an add for lack of room

	errLogMu   sync.Mutex
	errLogLast map[string]time.Time

	// pages is the sorted key list a paging pass through Offenders reads,
	// built at the pass's first page and reused for pagesFresh: a page
	// then costs O(limit), not a walk of every shard.
	pagesMu sync.Mutex
	pages   pageIndex
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
	// split: this prefix covers a protected address, so the addresses
	// inside it are scored and banned one by one (their own entries).
	split bool
	held  bool // crossed before the registrations were synced; decided when they are
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
	addr             netip.Addr // the offender that crossed (zero: adopted from the kernel)
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
	// verified: the ban rests on evidence that needed a round trip (or an
	// operator): it may take the place of an unverified one in a full set.
	verified bool
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
	setDefault(&o.QueueSize, 4096)
	setDefault(&o.DedupWindow, 2*time.Second)
	setDefault(&o.HistoryTTL, 7*24*time.Hour)
	setDefault(&o.SweepEvery, 30*time.Second)
	setDefault(&o.ResyncEvery, DefaultResyncEvery)
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
		seed:       maphash.MakeSeed(),
		queue:      make(chan op, o.QueueSize),
		errLogLast: make(map[string]time.Time),
		banMsg:     "banned",
	}
	if _, dry := o.Firewall.(*ban.DryRun); dry {
		j.banMsg = "would ban (dry-run: nothing is written to the firewall)"
	}
	for i := range j.shards {
		j.shards[i].offenders = make(map[netip.Prefix]*offender)
		j.shards[i].active = make(map[netip.Prefix]*offender)
	}
	if o.RegistrationsSynced == nil {
		j.isSynced.Store(true)
	}
	m, err := newMetrics(o.Registerer, j.activeCount, func() float64 { return float64(j.count.Load()) })
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

// activeCount counts the bans for a gauge at scrape time.
func (j *Jail) activeCount() float64 {
	n := 0
	for i := range j.shards {
		sh := &j.shards[i]
		sh.mu.Lock()
		n += len(sh.active)
		sh.mu.Unlock()
	}
	return float64(n)
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

func (o Options) policy() Policy {
	return Policy{Findtime: o.Findtime, MaxRetry: o.MaxRetry, Bantime: o.Bantime, MaxBantime: o.MaxBantime,
		Factor: o.Factor, Weights: o.Weights, NeverBan: o.NeverBan, UnverifiedFactor: o.UnverifiedFactor,
		MaxOffenders: o.MaxOffenders}
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

// Ready reports whether the ban backend works: the last resync and the last
// kernel write succeeded (a full set is reported in metrics, not here).
func (j *Jail) Ready() (reason string, ok bool) {
	if p := j.health.Load(); p != nil && *p != "" {
		return *p, false
	}
	if r := j.fullReason(); r != "" {
		return r, false
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
