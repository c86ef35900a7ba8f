package sip

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
)

// ipState is the per-address memory of the rules: fixed windows, no timers.
type ipState struct {
	last int64 // unix nanos of the last packet

	floodStart int64
	floodCount int32
	floodFired bool

	scanStart int64
	scanFired bool
	scanUsers []uint64 // distinct To users in requests, up to ScanUsers

	failStart int64
	failFired bool
	failUsers []uint64 // distinct To users answered 404/403, up to ScanFailures
}

const nShards = 64

// table is a sharded, capped map of per-address state. When a shard is full
// a new address evicts an arbitrary one (Go map iteration order is random):
// spoofed sources cost memory only up to the cap.
type table struct {
	shards    [nShards]shard
	perShard  int
	seed      maphash.Seed
	evictions atomic.Uint64
	size      atomic.Int64
}

type shard struct {
	mu sync.Mutex
	m  map[netip.Addr]*ipState
}

func newTable(max int) *table {
	t := &table{perShard: (max + nShards - 1) / nShards, seed: maphash.MakeSeed()}
	if t.perShard < 1 {
		t.perShard = 1
	}
	for i := range t.shards {
		t.shards[i].m = make(map[netip.Addr]*ipState)
	}
	return t
}

func (t *table) shard(ip netip.Addr) *shard {
	b := ip.As16()
	h := maphash.Bytes(t.seed, b[:])
	return &t.shards[h%nShards]
}

// get returns the state of ip, creating it; the shard is locked on return and
// must be unlocked by the caller.
func (t *table) get(sh *shard, ip netip.Addr, now int64) *ipState {
	st := sh.m[ip]
	if st == nil {
		if len(sh.m) >= t.perShard {
			for k := range sh.m {
				delete(sh.m, k)
				t.evictions.Add(1)
				t.size.Add(-1)
				break
			}
		}
		st = &ipState{}
		sh.m[ip] = st
		t.size.Add(1)
	}
	st.last = now
	return st
}

// peek returns the state of ip or nil, without creating it.
func (t *table) peek(sh *shard, ip netip.Addr) *ipState {
	return sh.m[ip]
}

// sweep drops state idle for longer than idle nanoseconds before now.
func (t *table) sweep(now, idle int64) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, st := range sh.m {
			if now-st.last > idle {
				delete(sh.m, k)
				t.size.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
}

// addDistinct adds h to set (bounded by max) and reports the new size.
func addDistinct(set []uint64, h uint64, max int) ([]uint64, int) {
	for _, x := range set {
		if x == h {
			return set, len(set)
		}
	}
	if len(set) >= max {
		return set, len(set)
	}
	if set == nil {
		set = make([]uint64, 0, min(max, 16))
	}
	set = append(set, h)
	return set, len(set)
}
