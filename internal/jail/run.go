package jail

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/decision"
)

// Run owns the writer goroutine (every kernel write, the start-up read-back
// and the periodic resync), the sweep and the state file. It returns nil
// when ctx is cancelled, after a last state save.
func (j *Jail) Run(ctx context.Context) error {
	if !j.running.CompareAndSwap(false, true) {
		return errors.New("ban: Run called twice")
	}
	defer j.running.Store(false)

	j.writeMu.Lock()
	err := j.resyncLocked(ctx, true)
	j.writeMu.Unlock()
	if err != nil {
		j.logErr("resync", "initial kernel read-back failed; retrying on the next resync", err)
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		j.writer(ctx)
	}()

	synced := j.opt.RegistrationsSynced
	if j.isSynced.Load() {
		synced = nil
	}
	sweep := time.NewTicker(j.opt.SweepEvery)
	save := time.NewTicker(j.opt.SaveEvery)
	defer sweep.Stop()
	defer save.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			j.running.Store(false) // later manual operations run in their caller
			j.failPending()
			if err := j.saveIfDirty(); err != nil {
				j.log.Error("state file not saved at stop", "err", err)
			}
			return nil
		case <-synced:
			synced = nil
			j.markSynced()
		case <-sweep.C:
			j.Sweep()
			if j.isSynced.Load() && j.opt.HoldCredentials != nil {
				j.releaseHeld() // credential-class crossings held while the source was down
			}
		case <-save.C:
			if err := j.saveIfDirty(); err != nil {
				j.logErr("save", "state file not saved", err)
			}
		}
	}
}

func (j *Jail) writer(ctx context.Context) {
	resync := time.NewTicker(j.opt.ResyncEvery)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-j.queue:
			j.drain(ctx, o)
		case <-resync.C:
			j.writeMu.Lock()
			err := j.resyncLocked(ctx, false)
			j.writeMu.Unlock()
			if err != nil {
				j.logErr("resync", "kernel resync failed", err)
			}
		}
	}
}

// failPending answers manual operations still queued at stop.
func (j *Jail) failPending() {
	for {
		select {
		case o := <-j.queue:
			if o.done != nil {
				o.done <- errors.New("ban: jail stopped")
			}
		default:
			return
		}
	}
}

// writerBatch bounds how many queued writes go to the kernel together.
const writerBatch = 256

// drain handles first and, when the backend takes batches, whatever else is
// already queued, in order: runs of automatic adds go as one batch.
func (j *Jail) drain(ctx context.Context, first op) {
	ba, _ := j.fw.(ban.BatchAdder)
	if ba == nil {
		j.reply(first, j.apply(ctx, first))
		return
	}
	ops := append(j.wbuf[:0], first)
fill:
	for len(ops) < writerBatch {
		select {
		case o := <-j.queue:
			ops = append(ops, o)
		default:
			break fill
		}
	}
	for i := 0; i < len(ops); {
		k := i
		for k < len(ops) && ops[k].kind == opAdd && ops[k].done == nil {
			k++
		}
		switch {
		case k-i > 1:
			j.applyBatch(ctx, ba, ops[i:k])
			i = k
		default:
			j.reply(ops[i], j.apply(ctx, ops[i]))
			i++
		}
	}
	clear(ops)
	j.wbuf = ops[:0]
}

func (j *Jail) reply(o op, err error) {
	if o.done != nil {
		o.done <- err
	}
}

func (j *Jail) applyBatch(ctx context.Context, ba ban.BatchAdder, ops []op) {
	j.writeMu.Lock()
	defer j.writeMu.Unlock()
	now := j.now()
	entries := j.ebuf[:0]
	idx := j.ibuf[:0]
	for i, o := range ops {
		var d time.Duration
		if !o.expires.IsZero() {
			if d = o.expires.Sub(now); d <= 0 {
				continue
			}
			d = max(d, time.Second)
		}
		entries = append(entries, ban.Entry{Prefix: o.prefix, Timeout: d})
		idx = append(idx, i)
	}
	if cap(j.errbuf) < len(entries) {
		j.errbuf = make([]error, writerBatch)
	}
	errs := j.errbuf[:len(entries)]
	err := ba.AddBatch(ctx, entries, errs)
	done := time.Now()
	var firstErr error
	for n := range entries {
		e := errs[n]
		if err != nil {
			e = err
		}
		if errors.Is(e, ban.ErrSetFull) && ops[idx[n]].verified {
			e = j.addOrYield(ctx, entries[n].Prefix, entries[n].Timeout, true)
		} else if errors.Is(e, ban.ErrSetFull) {
			j.setFull(entries[n].Prefix, true)
			j.unwritten(entries[n].Prefix)
		} else if e == nil {
			j.setFull(entries[n].Prefix, false)
		}
		if e != nil {
			j.m.errors.WithLabelValues("add").Inc()
			j.logErr("add", "ban not written to the backend", e, "ip", entries[n].Prefix.String())
			if firstErr == nil && !errors.Is(e, ban.ErrSetFull) {
				firstErr = e
			}
			continue
		}
		j.m.latency.Observe(done.Sub(ops[idx[n]].seen).Seconds())
	}
	j.setHealth(firstErr)
	j.ebuf, j.ibuf = entries[:0], idx[:0]
	clear(errs)
}

// apply performs one backend write.
func (j *Jail) apply(ctx context.Context, o op) error {
	j.writeMu.Lock()
	defer j.writeMu.Unlock()
	switch o.kind {
	case opAdd:
		var d time.Duration
		if !o.expires.IsZero() {
			d = o.expires.Sub(j.now())
			if d <= 0 {
				return nil // over before it reached the kernel (a replayed old offense)
			}
			d = max(d, time.Second)
		}
		if err := j.addOrYield(ctx, o.prefix, d, o.verified); err != nil {
			j.m.errors.WithLabelValues("add").Inc()
			j.logErr("add", "ban not written to the backend", err, "ip", o.prefix.String())
			if !errors.Is(err, ban.ErrSetFull) {
				j.setHealth(err)
			}
			return err
		}
		j.m.latency.Observe(time.Since(o.seen).Seconds())
		j.setHealth(nil)
	case opDel:
		if err := j.fw.Del(ctx, o.prefix); err != nil {
			j.m.errors.WithLabelValues("del").Inc()
			j.setHealth(err)
			return err
		}
	}
	return nil
}

// resync reads the backend back, recreates missing sets, adopts entries the
// jail does not know and writes active bans the backend lost. Run calls it
// at start and every ResyncEvery (tests call it directly).
func (j *Jail) resync(ctx context.Context) error {
	j.writeMu.Lock()
	defer j.writeMu.Unlock()
	return j.resyncLocked(ctx, false)
}

func (j *Jail) resyncLocked(ctx context.Context, initial bool) error {
	j.refreshHostAddrs()
	if e, ok := j.fw.(ban.Ensurer); ok {
		n, err := e.Ensure(ctx)
		if err != nil {
			j.m.errors.WithLabelValues("ensure").Inc()
			err = fmt.Errorf("ensure sets: %w", err)
			j.setHealth(err)
			return err
		}
		if n > 0 && !initial {
			j.m.recreated.Add(float64(n))
			j.log.Warn("ban sets were missing and have been created again", "sets", n)
		}
	}
	j.liftProtected(ctx)
	l, ok := j.fw.(ban.Lister)
	if !ok {
		j.setHealth(nil)
		return nil
	}
	entries, err := l.List(ctx)
	if err != nil {
		j.m.errors.WithLabelValues("list").Inc()
		err = fmt.Errorf("list sets: %w", err)
		j.setHealth(err)
		return err
	}
	j.setGauges(entries)
	now := j.now()
	nn := now.UnixNano()
	F := int64(j.policy.Load().Findtime)
	inKernel := make(map[netip.Prefix]struct{}, len(entries))
	var adopted, unadopted int
	var lifts []lift
	for _, e := range entries {
		p := e.Prefix.Masked()
		inKernel[p] = struct{}{}
		sh, of := j.entry(p, 0, F, false)
		known := of != nil && of.ban != nil && of.ban.prefix == p
		sh.mu.Unlock()
		if known {
			continue
		}
		// Unknown to the jail (set by hand, or a ban it evicted or forgot):
		// judged like any ban before it is adopted.
		if v := j.decide(netip.Addr{}, p); v.Reason != decision.Ban {
			lifts = append(lifts, lift{p: p, reason: v.Reason, why: v.Why})
			continue
		}
		// Adopted only within MaxOffenders and without evicting: a ban
		// evicted for room stays in the set until its timeout, it must not
		// come back and push out another entry.
		sh, of = j.entry(p, 0, F, false)
		if of == nil {
			sh.mu.Unlock()
			if !j.reserve(nn, F, false) {
				unadopted++
				continue
			}
			sh.mu.Lock()
			if of = sh.offenders[p]; of != nil {
				j.count.Add(-1)
			} else {
				of = &offender{}
				sh.insertLocked(p, of)
			}
		}
		if of.hist == nil {
			of.hist = &history{count: 1, last: nn, dur: e.Timeout}
		}
		b := &activeBan{prefix: p, rule: "kernel", reason: "found in the kernel set", created: now}
		if e.Timeout > 0 {
			b.expires = now.Add(e.Timeout)
		}
		sh.setBan(p, of, b)
		sh.mu.Unlock()
		adopted++
	}
	type readd struct {
		p       netip.Prefix
		expires time.Time
	}
	var missing []readd
	for i := range j.shards {
		sh := &j.shards[i]
		sh.mu.Lock()
		for _, of := range sh.active {
			b := of.ban
			if _, ok := inKernel[b.prefix]; ok {
				continue
			}
			if b.expires.IsZero() || b.expires.Sub(now) > 2*time.Second {
				missing = append(missing, readd{b.prefix, b.expires})
			}
		}
		sh.mu.Unlock()
	}
	if adopted > 0 {
		j.dirty.Store(true)
		j.log.Info("adopted bans found in the kernel sets", "count", adopted)
	}
	if unadopted > 0 {
		j.log.Warn("kernel set entries not adopted: the jail is at max offenders (they expire on their own)", "count", unadopted)
	}
	j.applyLifts(ctx, lifts)

	var firstErr error
	written := 0
	for _, m := range missing {
		var d time.Duration
		if !m.expires.IsZero() {
			d = max(m.expires.Sub(now), time.Second)
		}
		if err := j.fw.Add(ctx, m.p, d); err != nil {
			j.m.errors.WithLabelValues("add").Inc()
			j.logErr("add", "ban not written back to the backend", err, "ip", m.p.String())
			if errors.Is(err, ban.ErrSetFull) {
				j.setFull(m.p, true)
				break // every other add would fail the same way: no retry storm
			}
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		written++
	}
	if written > 0 {
		j.m.readded.Add(float64(written))
		if !initial {
			j.log.Warn("active bans were missing from the kernel and have been written again", "count", written)
		}
	}
	j.setHealth(firstErr)
	return firstErr
}

type lift struct {
	p      netip.Prefix
	reason decision.Reason
	why    string
}

// applyLifts deletes the lifted bans from the backend.
func (j *Jail) applyLifts(ctx context.Context, lifts []lift) {
	for _, l := range lifts {
		j.dirty.Store(true)
		j.m.lifted.WithLabelValues(l.reason.String()).Inc()
		if err := j.fw.Del(ctx, l.p); err != nil {
			j.m.errors.WithLabelValues("del").Inc()
			j.logErr("del", "lifting a ban failed", err, "ip", l.p.String())
			continue
		}
		j.log.Warn(fmt.Sprintf("ban on %s lifted: %s", prefixString(l.p), l.why), "ip", prefixString(l.p), "reason", l.reason.String())
	}
}

// liftProtected judges every active ban again with the decision in force:
// a ban adopted from the kernel at start, or an office banned before its
// registration was known, must not keep it locked out. A prefix ban that
// now covers a protected address is narrowed to the offender that caused
// it, or lifted when that offender is unknown or protected itself.
func (j *Jail) liftProtected(ctx context.Context) {
	type narrow struct {
		b  *activeBan
		to netip.Prefix
	}
	var (
		lifts   []lift
		narrows []narrow
	)
	now := j.now().UnixNano()
	for i := range j.shards {
		sh := &j.shards[i]
		sh.mu.Lock()
		for k, of := range sh.active {
			b := of.ban
			v := j.decide(b.addr, b.prefix)
			if v.Reason == decision.Ban && v.Prefix == b.prefix {
				continue
			}
			sh.clearBan(k, of)
			if v.Reason == decision.Ban {
				of.split = true
				narrows = append(narrows, narrow{b, v.Prefix})
				continue
			}
			of.state, of.why, of.skipAt = stProtected, v.Why, now
			if v.Reason == decision.NeverBan {
				of.state = stNeverBan
			}
			lifts = append(lifts, lift{p: b.prefix, reason: v.Reason, why: v.Why})
		}
		sh.mu.Unlock()
	}
	j.applyLifts(ctx, lifts)
	F := int64(j.policy.Load().Findtime)
	for _, n := range narrows {
		j.dirty.Store(true)
		j.m.narrowed.Inc()
		if err := j.fw.Del(ctx, n.b.prefix); err != nil {
			j.m.errors.WithLabelValues("del").Inc()
			j.logErr("del", "narrowing a ban failed", err, "ip", n.b.prefix.String())
		}
		sh, of := j.entry(n.to, now, F, true)
		if of == nil {
			sh.mu.Unlock()
			continue
		}
		nb := *n.b
		nb.prefix = n.to
		if of.hist == nil {
			of.hist = &history{count: 1, last: n.b.created.UnixNano(), dur: n.b.expires.Sub(n.b.created)}
		}
		sh.setBan(n.to, of, &nb)
		sh.mu.Unlock()
		var d time.Duration
		if !nb.expires.IsZero() {
			if d = nb.expires.Sub(j.now()); d < time.Second {
				continue
			}
		}
		if err := j.fw.Add(ctx, n.to, d); err != nil {
			j.m.errors.WithLabelValues("add").Inc()
			j.logErr("add", "narrowed ban not written to the backend", err, "ip", n.to.String())
			continue
		}
		j.log.Warn(fmt.Sprintf("ban on %s narrowed to %s: it covers a protected address", n.b.prefix, prefixString(n.to)), "ip", prefixString(n.to), "prefix", n.b.prefix.String())
	}
}

// Sweep expires bans and forgets entries whose score has decayed to zero
// and whose ban history is older than HistoryTTL; after a reload lowered
// MaxOffenders it evicts down to it. Run calls it every SweepEvery. It
// holds one shard's lock at a time.
func (j *Jail) Sweep() {
	now := j.now()
	nn := now.UnixNano()
	pol := j.policy.Load()
	F := int64(pol.Findtime)
	ttl := int64(j.opt.HistoryTTL)
	for i := range j.shards {
		sh := &j.shards[i]
		sh.mu.Lock()
		for k, of := range sh.offenders {
			if of.ban != nil {
				if of.ban.expires.IsZero() || of.ban.expires.After(now) {
					continue
				}
				sh.clearBan(k, of)
				j.dirty.Store(true)
			}
			if of.held || (of.winStart != 0 && nn < of.winStart+2*F) {
				continue
			}
			if of.hist != nil && nn-of.hist.last < ttl {
				continue
			}
			j.deleteLocked(sh, k)
			j.dirty.Store(true)
		}
		sh.mu.Unlock()
		runtime.Gosched()
	}
	for j.count.Load() > int64(pol.MaxOffenders) && j.evictOne(nn, F) {
	}
}

func (j *Jail) setGauges(entries []ban.Entry) {
	sn, ok := j.fw.(ban.SetNamer)
	if !ok {
		return
	}
	var n4, n6 int
	for _, e := range entries {
		if e.Prefix.Addr().Is4() {
			n4++
		} else {
			n6++
		}
	}
	v4, v6 := sn.SetNames()
	if n4 < sn.MaxElem() {
		j.setFull(netip.MustParsePrefix("0.0.0.0/32"), false)
	}
	if n6 < sn.MaxElem() {
		j.setFull(netip.MustParsePrefix("::/128"), false)
	}
	j.m.setEntries.WithLabelValues(v4).Set(float64(n4))
	j.m.setEntries.WithLabelValues(v6).Set(float64(n6))
	j.m.setMaxElem.WithLabelValues(v4).Set(float64(sn.MaxElem()))
	j.m.setMaxElem.WithLabelValues(v6).Set(float64(sn.MaxElem()))
}
