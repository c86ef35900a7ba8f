package jail

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/sipwarden/sipwarden/internal/decision"
	"github.com/sipwarden/sipwarden/internal/offense"
)

// credentialRule reports whether r is credential-class evidence: what a
// phone with a stale password produces. Only bans resting on nothing else
// are lifted by a registration.
func credentialRule(i int) bool {
	switch ruleName(i) {
	case string(offense.AuthFailure), string(offense.UnknownUser), string(offense.AuthChallenge):
		return true
	}
	return false
}

// credentialOnly reports whether all of of's recorded evidence is
// credential-class, and there is some (an adopted or manual ban has none).
func credentialOnly(of *offender) bool {
	some := false
	for i, c := range of.counts {
		if c == 0 {
			continue
		}
		if !credentialRule(i) {
			return false
		}
		some = true
	}
	return some
}

// liftWait bounds how long Registered waits for room in the write queue
// before deleting from the backend itself.
const liftWait = time.Second

// Registered is told of a registration event for ip (the Event Socket's
// sofia::register). It re-decides at once, through the one decision, the
// active ban that covers ip (its own entry, then its prefix's) and lifts
// it when ip is now registered and every offense behind the ban was
// credential-class (auth_failure, unknown_user, auth_challenge): a phone
// that failed with a stale password and then registered is not locked out
// until the next resync. Bans with any other evidence (scanner, toll
// fraud, flood, ...), manual and adopted bans stay. It returns the lifted
// prefix (invalid when nothing was lifted).
func (j *Jail) Registered(ctx context.Context, ip netip.Addr) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	now := j.now()
	F := int64(j.policy.Load().Findtime)
	keys := []netip.Prefix{single(ip)}
	if k := j.key(ip); k != keys[0] {
		keys = append(keys, k)
	}
	for _, k := range keys {
		sh, of := j.entry(k, 0, F, false)
		if of == nil || of.ban == nil || (!of.ban.expires.IsZero() && !of.ban.expires.After(now)) {
			sh.mu.Unlock()
			continue
		}
		b := of.ban
		if b.rule == ruleManual || !b.addr.IsValid() {
			sh.mu.Unlock()
			return netip.Prefix{}
		}
		// The same question the resync asks, about the offender behind the
		// ban: a prefix ban that merely covers the phone is narrowed there.
		v := j.decide(b.addr, b.prefix)
		if v.Reason != decision.Registered {
			// Still a ban for the decision (or another exemption, or a
			// narrowing, which the resync does): nothing to lift here.
			sh.mu.Unlock()
			return netip.Prefix{}
		}
		if !credentialOnly(of) {
			sh.mu.Unlock()
			j.m.regKept.Inc()
			j.log.Warn(fmt.Sprintf("ban on %s kept although %s registered: not only credential failures", prefixString(b.prefix), ip),
				"ip", prefixString(b.prefix), "registered", ip.String(), "rule", b.rule)
			return netip.Prefix{}
		}
		pfx := b.prefix
		sh.clearBan(k, of)
		of.state, of.why, of.skipAt = stProtected, v.Why, now.UnixNano()
		sh.mu.Unlock()
		j.dirty.Store(true)
		j.m.lifted.WithLabelValues(v.Reason.String()).Inc()
		j.m.regLifted.Inc()
		if err := j.enqueueDel(ctx, pfx); err != nil {
			j.m.errors.WithLabelValues("del").Inc()
			j.logErr("del", "lifting a ban on registration failed", err, "ip", prefixString(pfx))
			return pfx
		}
		j.log.Warn(fmt.Sprintf("ban on %s lifted: %s registered and every offense was a credential failure", prefixString(pfx), ip),
			"ip", prefixString(pfx), "reason", v.Reason.String(), "why", v.Why)
		return pfx
	}
	return netip.Prefix{}
}

// enqueueDel queues the kernel delete behind the writes already queued (an
// add for the same prefix must not land after it); when the queue stays
// full for liftWait (or before Run, at once), it deletes itself.
func (j *Jail) enqueueDel(ctx context.Context, p netip.Prefix) error {
	o := op{kind: opDel, prefix: p}
	if !j.running.Load() {
		// behind the queued adds when there is room; Run drains them
		select {
		case j.queue <- o:
			return nil
		default:
			return j.apply(ctx, o)
		}
	}
	t := time.NewTimer(liftWait)
	defer t.Stop()
	select {
	case j.queue <- o:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return j.apply(ctx, o)
	}
}
