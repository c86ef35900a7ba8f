package jail

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/decision"
)

// Ban bans ip by hand (API, CLI) after the same decision as an automatic
// ban (ban.ErrNeverBan, ban.ErrWhitelisted); a prefix that covers a
// protected address is narrowed to ip. d <= 0 takes the escalated bantime.
// It waits for the kernel write.
func (j *Jail) Ban(ctx context.Context, ip netip.Addr, d time.Duration, reason string) error {
	if !ip.IsValid() {
		return fmt.Errorf("ban: invalid address")
	}
	ip = ip.Unmap().WithZone("")
	pol := j.policy.Load()
	F := int64(pol.Findtime)
	v := j.decide(ip, j.key(ip))
	switch v.Reason {
	case decision.Ban:
	case decision.NeverBan:
		j.m.skipped.WithLabelValues(v.Reason.String()).Inc()
		return fmt.Errorf("ban %s: %w (%s)", ip, ban.ErrNeverBan, v.Why)
	default:
		j.m.skipped.WithLabelValues(v.Reason.String()).Inc()
		return fmt.Errorf("ban %s: %w (%s)", ip, ban.ErrWhitelisted, v.Why)
	}
	now := j.now()
	nn := now.UnixNano()
	pfx := v.Prefix
	if v.Narrowed {
		if sh, of := j.entry(j.key(ip), nn, F, true); of != nil {
			of.split = true
			sh.mu.Unlock()
		} else {
			sh.mu.Unlock()
		}
	}
	sh, of := j.entry(pfx, nn, F, true)
	if of == nil {
		sh.mu.Unlock()
		return fmt.Errorf("ban %s: the jail is full (max_offenders) and nothing could be evicted", pfx)
	}
	if of.hist == nil {
		of.hist = &history{}
	}
	of.hist.count++
	if d <= 0 {
		d = pol.banDuration(of.hist.count)
	}
	of.hist.last, of.hist.dur = nn, d
	if reason == "" {
		reason = ruleManual
	}
	b := &activeBan{prefix: pfx, addr: ip, rule: ruleManual, reason: reason, created: now, expires: now.Add(d)}
	prev := of.ban
	sh.setBan(pfx, of, b)
	of.state, of.why = stWatching, ""
	sh.mu.Unlock()
	j.dirty.Store(true)

	err := j.submit(ctx, op{kind: opAdd, prefix: pfx, expires: b.expires, seen: time.Now(), verified: true})
	if err != nil {
		sh.mu.Lock()
		if of.ban == b {
			if prev == nil {
				sh.clearBan(pfx, of)
			} else {
				sh.setBan(pfx, of, prev)
			}
			of.hist.count--
		}
		sh.mu.Unlock()
		return fmt.Errorf("ban %s: %w", prefixString(pfx), err)
	}
	j.m.bansManual.Inc()
	j.log.Info(j.banMsg, "ip", prefixString(pfx), "rule", ruleManual, "reason", reason, "duration", d)
	return nil
}

// Unban lifts the ban on ip (or on the prefix containing it).
// ban.ErrNotBanned when there is none. It waits for the kernel write.
func (j *Jail) Unban(ctx context.Context, ip netip.Addr) error {
	if !ip.IsValid() {
		return fmt.Errorf("unban: invalid address")
	}
	ip = ip.Unmap().WithZone("")
	now := j.now()
	F := int64(j.policy.Load().Findtime)
	// The address's own entry first (a narrowed ban), then its prefix's.
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
		pfx := of.ban.prefix
		sh.clearBan(k, of)
		of.cur, of.prev = 0, 0
		sh.mu.Unlock()
		j.dirty.Store(true)
		if err := j.submit(ctx, op{kind: opDel, prefix: pfx}); err != nil {
			return fmt.Errorf("unban %s: %w", prefixString(pfx), err)
		}
		j.log.Info("unbanned", "ip", prefixString(pfx))
		return nil
	}
	return fmt.Errorf("unban %s: %w", ip, ban.ErrNotBanned)
}
