package jail

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/sipwarden/sipwarden/internal/ban"
)

// A full set is an outage of the ban path: new bans no longer reach the
// kernel. The jail fails closed and loud — Ready is false naming the set,
// sipwarden_ban_set_full{set} is 1 — and a ban on verified evidence takes
// the place of one made on unverified evidence (what a forged flood fills
// the set with), so that the real attacker is still blocked.

// family is 0 for IPv4, 1 for IPv6.
func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 0
	}
	return 1
}

// setName names p's kernel set, and its capacity (0: unknown).
func (j *Jail) setName(p netip.Prefix) (string, int) {
	sn, ok := j.fw.(ban.SetNamer)
	if !ok {
		if family(p) == 0 {
			return "ipv4", 0
		}
		return "ipv6", 0
	}
	v4, v6 := sn.SetNames()
	if family(p) == 0 {
		return v4, sn.MaxElem()
	}
	return v6, sn.MaxElem()
}

// setFull records whether p's set refused an add for lack of room.
func (j *Jail) setFull(p netip.Prefix, full bool) {
	f := family(p)
	if j.full[f].Swap(full) == full {
		return
	}
	name, max := j.setName(p)
	v := 0.0
	if full {
		v = 1
		j.log.Error(fmt.Sprintf("ban set %s is full (%d entries): new bans on unverified evidence are not written; verified bans replace them", name, max), "set", name, "maxelem", max)
	} else {
		j.log.Info("ban set has room again", "set", name)
	}
	j.m.setFull.WithLabelValues(name).Set(v)
}

// fullReason is Ready's reason while a set is full.
func (j *Jail) fullReason() string {
	for f, p := range []netip.Prefix{netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("::/128")} {
		if j.full[f].Load() {
			name, max := j.setName(p)
			if max > 0 {
				return fmt.Sprintf("set %s full (%d/%d)", name, max, max)
			}
			return fmt.Sprintf("set %s full", name)
		}
	}
	return ""
}

// addOrYield writes one ban; when the set is full and the ban rests on
// verified evidence, one ban on unverified evidence in the same set gives
// up its place first. Called with writeMu held.
func (j *Jail) addOrYield(ctx context.Context, p netip.Prefix, d time.Duration, verified bool) error {
	err := j.fw.Add(ctx, p, d)
	if errors.Is(err, ban.ErrSetFull) && verified && j.yield(ctx, p) {
		err = j.fw.Add(ctx, p, d)
	}
	switch {
	case err == nil:
		j.setFull(p, false)
	case errors.Is(err, ban.ErrSetFull):
		j.setFull(p, true)
		j.unwritten(p)
	}
	return err
}

// unwritten forgets the active ban on p that the full set refused, so that
// /v1/bans does not list what the kernel does not hold; the offender's
// next crossing tries again.
func (j *Jail) unwritten(p netip.Prefix) {
	sh := j.shardOf(p)
	sh.mu.Lock()
	if of := sh.offenders[p]; of != nil && of.ban != nil && of.ban.prefix == p && of.ban.rule != ruleManual {
		sh.clearBan(p, of)
		j.dirty.Store(true)
	}
	sh.mu.Unlock()
}

// yield removes, from the jail and the kernel, the ban on unverified
// evidence in p's family that ends soonest. false: there is none.
func (j *Jail) yield(ctx context.Context, p netip.Prefix) bool {
	f := family(p)
	var (
		victim  netip.Prefix
		vb      *activeBan
		soonest time.Time
	)
	for i := range j.shards {
		sh := &j.shards[i]
		sh.mu.Lock()
		for k, of := range sh.active {
			b := of.ban
			if of.verified || b.rule == ruleManual || family(k) != f || b.prefix == p {
				continue
			}
			if vb == nil || (!b.expires.IsZero() && (soonest.IsZero() || b.expires.Before(soonest))) {
				victim, vb, soonest = k, b, b.expires
			}
		}
		sh.mu.Unlock()
	}
	if vb == nil {
		return false
	}
	sh := j.shardOf(victim)
	sh.mu.Lock()
	if of := sh.offenders[victim]; of != nil && of.ban == vb {
		sh.clearBan(victim, of)
	}
	sh.mu.Unlock()
	j.dirty.Store(true)
	if err := j.fw.Del(ctx, vb.prefix); err != nil {
		j.m.errors.WithLabelValues("del").Inc()
		j.logErr("del", "making room in a full set failed", err, "ip", vb.prefix.String())
		return false
	}
	j.m.yielded.Inc()
	return true
}
