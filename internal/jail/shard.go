package jail

import (
	"hash/maphash"
	"math"
	"net/netip"
	"sync"
)

// numShards splits the jail's map so that a view (Offenders, the state
// snapshot, Sweep) holds one shard's lock at a time, never the whole map:
// Offend waits at most for one shard's walk.
const numShards = 256

// shard is one part of the jail's map of per-address state. Keys are the
// prefixes the jail scores and bans: an address (/32, /128), or an IPv6
// prefix (v6_prefix) — or, inside a prefix that was split because it
// covers a protected address, the single addresses.
type shard struct {
	mu        sync.Mutex
	offenders map[netip.Prefix]*offender
	active    map[netip.Prefix]*offender // the banned subset of offenders
	_         [40]byte                   // keep neighbouring shards' locks off one cache line
}

// shardOf picks the shard of k. The seed is random per jail: a flood cannot
// aim its sources at one shard.
func (j *Jail) shardOf(k netip.Prefix) *shard {
	return &j.shards[maphash.Comparable(j.seed, k)%numShards]
}

// reserve makes room for one new entry within MaxOffenders, evicting the
// least valuable entries as needed. It must be called without any shard
// lock held. false: no room could be made (every try raced).
func (j *Jail) reserve(t, F int64, evict bool) bool {
	max := int64(j.policy.Load().MaxOffenders)
	for range 32 {
		c := j.count.Load()
		if c < max {
			if j.count.CompareAndSwap(c, c+1) {
				return true
			}
			continue
		}
		if !evict {
			return false
		}
		j.evictOne(t, F) // false: the sample raced with a delete; try again
	}
	return false
}

// insertLocked stores a new entry whose room was reserved.
func (sh *shard) insertLocked(k netip.Prefix, of *offender) {
	sh.offenders[k] = of
	if of.ban != nil {
		sh.active[k] = of
	}
}

// deleteLocked drops an entry and gives its room back.
func (j *Jail) deleteLocked(sh *shard, k netip.Prefix) {
	if _, ok := sh.offenders[k]; !ok {
		return
	}
	delete(sh.offenders, k)
	delete(sh.active, k)
	j.count.Add(-1)
}

// Eviction tiers, least valuable first. What a forged-source flood creates
// (unverified evidence, no ban) goes first; bans made on unverified
// evidence next; verified evidence, then verified bans and manual bans
// last. An evicted ban stays in the kernel set until its timeout; only the
// jail forgets it.
const (
	tierUnverified = iota
	tierVerified
	tierBannedUnverified
	tierBannedVerified
	tierManual
)

func (of *offender) tier() int {
	switch {
	case of.ban != nil && of.ban.rule == ruleManual:
		return tierManual
	case (of.ban != nil || of.hist != nil) && of.verified:
		return tierBannedVerified
	case of.ban != nil || of.hist != nil:
		return tierBannedUnverified
	case of.verified:
		return tierVerified
	}
	return tierUnverified
}

// value orders entries within a tier: the score for those watched, the
// number of bans then the ban's end for those banned.
func (of *offender) value(t, F int64) float64 {
	if of.ban == nil && of.hist == nil {
		return of.score(t, F)
	}
	v := 0.0
	if of.hist != nil {
		v = float64(of.hist.count) * 1e12
	}
	if of.ban != nil {
		if of.ban.expires.IsZero() {
			return v + 1e11
		}
		v += float64(of.ban.expires.Unix() % 1e11)
	}
	return v
}

// evictSample is how many entries an eviction compares.
const evictSample = 8

// evictOne drops the least valuable of a small sample, taken from the
// shards in turn (map iteration order is random, so it is a random sample
// however full each shard is). It locks one shard at a time.
func (j *Jail) evictOne(t, F int64) bool {
	type candidate struct {
		k    netip.Prefix
		of   *offender
		tier int
		v    float64
	}
	var (
		best candidate
		n    int
	)
	best.tier = math.MaxInt
	start := j.evictAt.Add(1)
	for i := uint32(0); i < numShards && n < evictSample; i++ {
		sh := &j.shards[(start+i)%numShards]
		sh.mu.Lock()
		for k, of := range sh.offenders {
			c := candidate{k, of, of.tier(), of.value(t, F)}
			if c.tier < best.tier || (c.tier == best.tier && c.v < best.v) {
				best = c
			}
			if n++; n >= evictSample {
				break
			}
		}
		sh.mu.Unlock()
	}
	if best.of == nil {
		return false
	}
	sh := j.shardOf(best.k)
	sh.mu.Lock()
	ok := sh.offenders[best.k] == best.of
	if ok {
		j.deleteLocked(sh, best.k)
	}
	sh.mu.Unlock()
	if ok {
		j.m.evictions.Inc()
		j.dirty.Store(true)
	}
	return ok
}
