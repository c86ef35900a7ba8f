package jail

import (
	"context"
	"log/slog"
	"math"
	"net/netip"
	"time"

	"github.com/sipwarden/sipwarden/internal/decision"
	"github.com/sipwarden/sipwarden/internal/offense"
)

// maxFuture is how far ahead of the jail's clock an offense time may be.
const maxFuture = time.Minute

// ruleManual is the rule of a ban made by hand (API, CLI).
const ruleManual = "manual"

// key is the jail's map key for ip: the address, or its masked prefix when
// IPv6 sources are scored per prefix.
func (j *Jail) key(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	if ip.Is6() && j.opt.V6Prefix > 0 {
		return netip.PrefixFrom(ip, j.opt.V6Prefix).Masked()
	}
	return netip.PrefixFrom(ip, ip.BitLen())
}

func single(ip netip.Addr) netip.Prefix { return netip.PrefixFrom(ip, ip.BitLen()) }

// entry returns the locked shard and the entry for exactly k, creating it
// within MaxOffenders when create is set (nil when there is no room, or
// when it does not exist). The caller unlocks.
func (j *Jail) entry(k netip.Prefix, t, F int64, create bool) (*shard, *offender) {
	sh := j.shardOf(k)
	sh.mu.Lock()
	of := sh.offenders[k]
	if of != nil || !create {
		return sh, of
	}
	sh.mu.Unlock()
	ok := j.reserve(t, F, true)
	sh.mu.Lock()
	if of = sh.offenders[k]; of != nil {
		if ok {
			j.count.Add(-1) // raced: someone else created it
		}
		return sh, of
	}
	if !ok {
		return sh, nil
	}
	of = &offender{}
	sh.insertLocked(k, of)
	return sh, of
}

// locate returns the locked shard, key and entry holding ip's state: its
// prefix's entry, or its own when that prefix was split because it covers
// a protected address.
func (j *Jail) locate(ip netip.Addr, t, F int64, create bool) (*shard, netip.Prefix, *offender) {
	k := j.key(ip)
	if !k.IsSingleIP() {
		sh := j.shardOf(k)
		sh.mu.Lock()
		of := sh.offenders[k]
		if of == nil || !of.split {
			if of != nil || !create {
				return sh, k, of
			}
		}
		sh.mu.Unlock()
		if of != nil { // split
			k = single(ip)
		}
	}
	sh, of := j.entry(k, t, F, create)
	return sh, k, of
}

func (sh *shard) setBan(k netip.Prefix, of *offender, b *activeBan) {
	of.ban = b
	sh.active[k] = of
}

func (sh *shard) clearBan(k netip.Prefix, of *offender) {
	of.ban = nil
	delete(sh.active, k)
}

// Offend records one offense; it implements offense.Sink. Scoring and the
// decision are synchronous; the kernel write is queued, never awaited.
func (j *Jail) Offend(o offense.Offense) {
	seen := time.Now()
	ri, si := ruleIndex(o.Rule), sourceIndex(o.Source)
	j.m.offense(ri, si).Inc()
	ip := o.IP.Unmap().WithZone("")
	if !ip.IsValid() {
		j.m.invalid.Inc()
		return
	}
	if j.opt.Targets != nil && o.User != "" && (o.Rule == offense.AuthFailure || o.Rule == offense.UnknownUser) {
		o.IP = ip
		j.opt.Targets.Failure(o)
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
	synced := j.synced() && !j.credHold(ri)

	sh, k, of := j.locate(ip, tn, F, true)
	if of == nil {
		sh.mu.Unlock()
		j.m.untracked.Inc()
		return
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
			sh.mu.Unlock()
			return // already banned
		}
		sh.clearBan(k, of)
	}
	score := of.score(of.last, F)
	if float32(score) > of.peak {
		of.peak = float32(score)
	}
	if w == 0 || score < pol.MaxRetry {
		sh.mu.Unlock()
		return
	}
	if !synced {
		// The whitelist does not know the registrations yet: deciding now
		// could ban an office. Held until RegistrationsSynced closes.
		first := !of.held
		of.held = true
		sh.mu.Unlock()
		if first {
			j.hold(k, ip, ri, o.Source)
		}
		return
	}
	j.crossLocked(sh, k, of, crossing{ip: ip, ri: ri, score: score, t: t, seen: seen, src: o.Source, off: o}, pol)
}

// crossing is an offender whose score reached MaxRetry.
type crossing struct {
	ip    netip.Addr
	ri    int
	score float64
	t     time.Time // offense time
	seen  time.Time // wall clock at Offend (latency)
	src   offense.Source
	off   offense.Offense // the offense that crossed (zero for a held crossing)
}

// crossLocked decides the ban of an entry whose score crossed MaxRetry and
// applies it. It is called with sh locked and unlocks it.
func (j *Jail) crossLocked(sh *shard, k netip.Prefix, of *offender, c crossing, pol *compiled) {
	tn := c.t.UnixNano()
	F := int64(pol.Findtime)
	v := j.decide(c.ip, k)
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
			cnt = of.counts[c.ri]
		}
		sh.mu.Unlock()
		if skip {
			j.m.skipped.WithLabelValues(reason.String()).Inc()
			j.logSkip(c.ip, reason, why, c.ri, cnt, user, c.score)
		}
		if reason == decision.Registered && j.opt.Protect != nil && c.off.IP.IsValid() {
			j.opt.Protect.Protected(c.off, pol.Policy)
		}
		return
	}
	if v.Narrowed {
		// The prefix covers a protected address: from now on its
		// addresses are scored and banned one by one.
		carry := *of
		of.split = true
		of.cur, of.prev = 0, 0
		sh.mu.Unlock()
		k = v.Prefix
		sh, of = j.entry(k, tn, F, true)
		if of == nil {
			sh.mu.Unlock()
			j.m.untracked.Inc()
			return
		}
		if of.ban != nil && (of.ban.expires.IsZero() || of.ban.expires.After(c.t)) {
			sh.mu.Unlock()
			return
		}
		if of.winStart == 0 {
			of.winStart, of.last, of.counts, of.user, of.verified, of.peak = carry.winStart, carry.last, carry.counts, carry.user, carry.verified, carry.peak
		}
		j.log.Info("prefix ban narrowed to the offender", "ip", c.ip.String(), "prefix", j.key(c.ip).String(), "why", v.Why)
	}
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
	start := c.t
	if now := j.now(); now.After(start) {
		start = now
	}
	b := &activeBan{
		prefix:   k,
		addr:     c.ip,
		rule:     ruleName(c.ri),
		created:  start,
		expires:  start.Add(d),
		score:    c.score,
		maxRetry: pol.MaxRetry,
		n:        of.counts[c.ri],
		user:     of.user,
	}
	sh.setBan(k, of, b)
	verified := of.verified
	of.cur, of.prev = 0, 0
	of.state, of.why = stWatching, ""
	count := h.count
	sh.mu.Unlock()

	j.m.bans(c.ri).Inc()
	select {
	case j.queue <- op{kind: opAdd, prefix: k, expires: b.expires, seen: c.seen, verified: verified}:
	default:
		j.m.dropped.Inc()
	}
	if j.log.Enabled(context.Background(), slog.LevelInfo) {
		j.log.Info(j.banMsg, "ip", prefixString(k), "rule", b.rule, "score", c.score, "duration", d, "count", count, "source", string(c.src), "user", b.user)
	}
}

// decide asks the decision in force about a ban on pfx for ip.
func (j *Jail) decide(ip netip.Addr, pfx netip.Prefix) decision.Verdict {
	return j.dec.Load().Decide(ip, pfx)
}

// --- held crossings, until the registrations are known ---

type heldCrossing struct {
	k   netip.Prefix
	ip  netip.Addr
	ri  int
	src offense.Source
}

// synced reports whether automatic bans may be applied: no
// RegistrationsSynced channel, or it is closed. It must be called without
// a shard lock (the first call after the close decides the held crossings).
func (j *Jail) synced() bool {
	if j.isSynced.Load() {
		return true
	}
	select {
	case <-j.opt.RegistrationsSynced:
		j.markSynced()
		return true
	default:
		return false
	}
}

// credHold reports whether a crossing decided by rule ri waits for the
// registration source (Options.HoldCredentials).
func (j *Jail) credHold(ri int) bool {
	return j.opt.HoldCredentials != nil && credentialRule(ri) && j.opt.HoldCredentials()
}

// ReleaseHeld decides the held crossings now, once the first sync is done
// (the registration source is back: Options.HoldCredentials turned false).
// Run's sweep does it too.
func (j *Jail) ReleaseHeld() {
	if j.isSynced.Load() {
		j.releaseHeld()
	}
}

func (j *Jail) markSynced() {
	j.syncOnce.Do(func() {
		j.isSynced.Store(true)
		j.log.Info("registrations synced: automatic bans enabled")
	})
	j.releaseHeld()
}

func (j *Jail) hold(k netip.Prefix, ip netip.Addr, ri int, src offense.Source) {
	j.heldMu.Lock()
	if len(j.held) < j.policy.Load().MaxOffenders {
		j.held = append(j.held, heldCrossing{k, ip, ri, src})
	}
	j.heldMu.Unlock()
	j.m.held.Inc()
	if j.isSynced.Load() { // the release ran between our check and the append
		j.releaseHeld()
	}
}

// releaseHeld decides every held crossing still above the threshold.
func (j *Jail) releaseHeld() {
	j.heldMu.Lock()
	held := j.held
	j.held = nil
	j.heldMu.Unlock()
	if len(held) == 0 {
		return
	}
	pol := j.policy.Load()
	F := int64(pol.Findtime)
	seen := time.Now()
	var still []heldCrossing
	defer func() {
		if len(still) > 0 {
			j.heldMu.Lock()
			j.held = append(j.held, still...)
			j.heldMu.Unlock()
		}
	}()
	for _, h := range held {
		if j.credHold(h.ri) {
			still = append(still, h) // the registration source is still down
			continue
		}
		sh, of := j.entry(h.k, 0, F, false)
		if of == nil || !of.held {
			sh.mu.Unlock()
			continue
		}
		of.held = false
		score := of.score(of.last, F)
		if (of.ban != nil && (of.ban.expires.IsZero() || of.ban.expires.After(j.now()))) || score < pol.MaxRetry {
			sh.mu.Unlock()
			continue
		}
		j.crossLocked(sh, h.k, of, crossing{ip: h.ip, ri: h.ri, score: score, t: time.Unix(0, of.last), seen: seen, src: h.src}, pol)
	}
	j.log.Info("held crossings decided", "count", len(held))
}
