package jail

import (
	"container/heap"
	"net/netip"
	"runtime"
	"sort"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// Paging of Offenders.
const (
	DefaultOffendersLimit = 1000
	MaxOffendersLimit     = 10000
)

// Bans lists the active bans, oldest first. It holds one shard's lock at a
// time.
func (j *Jail) Bans() []Ban {
	now := j.now()
	var out []Ban
	for i := range j.shards {
		sh := &j.shards[i]
		sh.mu.Lock()
		for _, of := range sh.active {
			b := of.ban
			if b == nil || (!b.expires.IsZero() && !b.expires.After(now)) {
				continue
			}
			out = append(out, Ban{IP: b.prefix.Addr(), Prefix: prefixField(b.prefix), Rule: b.rule, Reason: b.why(),
				CreatedAt: b.created, ExpiresAt: b.expires, Count: of.hist.countOr1()})
		}
		sh.mu.Unlock()
	}
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
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// prefixField is p for a prefix ban, the zero Prefix for a single address.
func prefixField(p netip.Prefix) netip.Prefix {
	if p.IsSingleIP() {
		return netip.Prefix{}
	}
	return p
}

// view is the API form of one entry; called with its shard locked.
func view(k netip.Prefix, of *offender, now time.Time, F int64) Offender {
	nn := now.UnixNano()
	t := max(nn, of.last)
	o := Offender{IP: k.Addr(), Prefix: prefixField(k), Score: of.score(t, F), Offenses: make(map[offense.Rule]int), User: of.user, State: StateWatching}
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
	return o
}

func prefixLess(a, b netip.Prefix) bool {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c < 0
	}
	return a.Bits() < b.Bits()
}

// pagesFresh is how long a paging pass reuses its sorted key list:
// entries created meanwhile show up in the next pass, entries gone meanwhile
// are left out of their page.
const pagesFresh = 5 * time.Second

type pageIndex struct {
	built time.Time // wall clock of the build (the reader's, not the offenses')
	keys  []netip.Prefix
}

// pageKeys returns the sorted keys of every entry: the cached list when a
// pass is under way (after valid) and it is fresh, a new one otherwise.
// Building copies each shard's keys under its lock, one shard at a time,
// and sorts outside every lock.
func (j *Jail) pageKeys(after netip.Addr) []netip.Prefix {
	j.pagesMu.Lock()
	defer j.pagesMu.Unlock()
	if after.IsValid() && j.pages.keys != nil && time.Since(j.pages.built) < pagesFresh {
		return j.pages.keys
	}
	keys := make([]netip.Prefix, 0, j.count.Load()+16)
	for i := range j.shards {
		sh := &j.shards[i]
		sh.mu.Lock()
		for k := range sh.offenders {
			keys = append(keys, k)
		}
		sh.mu.Unlock()
		runtime.Gosched() // a walk yields between shards: the ban path gets a P at once
	}
	sort.Slice(keys, func(a, b int) bool { return prefixLess(keys[a], keys[b]) })
	j.pages = pageIndex{built: time.Now(), keys: keys}
	return keys
}

// Offenders returns up to limit tracked entries whose address sorts after
// after (the zero Addr: from the start), in address order, and next: the
// address to pass as after for the following page, or the zero Addr at the
// end. limit <= 0 takes DefaultOffendersLimit; it is capped at
// MaxOffendersLimit. The first page of a pass sorts the keys (one shard's
// lock at a time); the pass's later pages reuse that list for pagesFresh,
// so a reader paging in a loop costs O(limit) a page and never stalls
// Offend for more than one shard's copy.
func (j *Jail) Offenders(limit int, after netip.Addr) (page []Offender, next netip.Addr) {
	if limit <= 0 {
		limit = DefaultOffendersLimit
	}
	limit = min(limit, MaxOffendersLimit)
	all := j.pageKeys(after)
	start := 0
	if after.IsValid() {
		start = sort.Search(len(all), func(i int) bool { return all[i].Addr().Compare(after) > 0 })
	}
	keys := all[start:min(len(all), start+limit+1)]
	if len(keys) > limit {
		keys = keys[:limit]
		next = keys[limit-1].Addr()
	}
	// Pass 2: the entries themselves (one that went away meanwhile is
	// left out of the page; the cursor still moves past it).
	now := j.now()
	F := int64(j.policy.Load().Findtime)
	page = make([]Offender, 0, len(keys))
	for _, k := range keys {
		sh := j.shardOf(k)
		sh.mu.Lock()
		if of := sh.offenders[k]; of != nil {
			page = append(page, view(k, of, now, F))
		}
		sh.mu.Unlock()
	}
	return page, next
}

// AllOffenders lists every tracked entry with its live score, highest
// first (replay's verdicts; the API pages with Offenders instead).
func (j *Jail) AllOffenders() []Offender {
	now := j.now()
	F := int64(j.policy.Load().Findtime)
	var out []Offender
	for i := range j.shards {
		sh := &j.shards[i]
		sh.mu.Lock()
		for k, of := range sh.offenders {
			out = append(out, view(k, of, now, F))
		}
		sh.mu.Unlock()
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].Score != out[b].Score {
			return out[a].Score > out[b].Score
		}
		return out[a].IP.Less(out[b].IP)
	})
	return out
}

type scoredKey struct {
	s float64
	k netip.Prefix
}

// minScores is a min-heap keeping the highest scores seen.
type minScores []scoredKey

func (h minScores) Len() int { return len(h) }
func (h minScores) Less(a, b int) bool {
	if h[a].s != h[b].s {
		return h[a].s < h[b].s
	}
	return prefixLess(h[b].k, h[a].k)
}
func (h minScores) Swap(a, b int) { h[a], h[b] = h[b], h[a] }
func (h *minScores) Push(x any)   { *h = append(*h, x.(scoredKey)) }
func (h *minScores) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Notable returns the n highest-scored entries, highest first, and up to
// maxProtected entries currently protected (the status view). Like
// Offenders it holds one shard's lock at a time and builds only what it
// returns.
func (j *Jail) Notable(n, maxProtected int) (top, protected []Offender) {
	now := j.now()
	nn := now.UnixNano()
	F := int64(j.policy.Load().Findtime)
	h := make(minScores, 0, n+1)
	for i := range j.shards {
		sh := &j.shards[i]
		sh.mu.Lock()
		for k, of := range sh.offenders {
			t := max(nn, of.last)
			if of.state == stProtected && t-of.skipAt < F && len(protected) < maxProtected {
				protected = append(protected, view(k, of, now, F))
			}
			if n <= 0 {
				continue
			}
			c := scoredKey{of.score(t, F), k}
			if len(h) < n {
				heap.Push(&h, c)
			} else if c.s > h[0].s {
				h[0] = c
				heap.Fix(&h, 0)
			}
		}
		sh.mu.Unlock()
		runtime.Gosched()
	}
	sort.Slice(h, func(a, b int) bool { return h.Less(b, a) })
	for _, c := range h {
		sh := j.shardOf(c.k)
		sh.mu.Lock()
		if of := sh.offenders[c.k]; of != nil {
			top = append(top, view(c.k, of, now, F))
		}
		sh.mu.Unlock()
	}
	sort.Slice(protected, func(a, b int) bool { return protected[a].Score > protected[b].Score })
	return top, protected
}
