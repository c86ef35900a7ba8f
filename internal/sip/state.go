package sip

import (
	"hash/maphash"
	"net/netip"
	"slices"
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

	// Round trips: nonces FreeSWITCH challenged this address with, and
	// the calls in which it answered one of them.
	nonces      []uint64
	digestCalls []uint64
	toll        []pendingToll // INVITEs to toll numbers with credentials, awaiting FreeSWITCH's answer
}

// pendingToll is an INVITE to a toll pattern that carried credentials: it
// is an offense if FreeSWITCH refuses them.
type pendingToll struct {
	call   uint64
	at     int64
	user   string
	detail string
	digest bool
}

const maxPendingToll = 4

func pushToll(l []pendingToll, p pendingToll) []pendingToll {
	for i := range l {
		if l[i].call == p.call {
			l[i] = p
			return l
		}
	}
	if len(l) >= maxPendingToll {
		copy(l, l[1:])
		l = l[:len(l)-1]
	}
	return append(l, p)
}

// takeToll removes and returns the pending INVITE of call (zero if none).
func takeToll(l []pendingToll, call uint64) (pendingToll, []pendingToll) {
	for i := range l {
		if l[i].call == call {
			p := l[i]
			return p, append(l[:i], l[i+1:]...)
		}
	}
	return pendingToll{}, l
}

// pushHash appends h to a ring of at most max hashes.
func pushHash(l []uint64, h uint64, max int) []uint64 {
	if containsHash(l, h) {
		return l
	}
	if len(l) >= max {
		copy(l, l[1:])
		l = l[:len(l)-1]
	}
	return append(l, h)
}

func containsHash(l []uint64, h uint64) bool {
	for _, x := range l {
		if x == h {
			return true
		}
	}
	return false
}

// inference learns which addresses of a capture are FreeSWITCH: those that
// answer a request sent to them. Bounded: the requests remembered and the
// servers learned are capped.
type inference struct {
	mu      sync.Mutex
	seed    maphash.Seed
	asks    map[uint64]struct{}
	servers map[netip.Addr]struct{}
}

const (
	maxInferAsks    = 1 << 16
	maxInferServers = 64
)

func newInference() *inference {
	return &inference{seed: maphash.MakeSeed(), asks: map[uint64]struct{}{}, servers: map[netip.Addr]struct{}{}}
}

func (in *inference) key(callID []byte, client, server netip.Addr) uint64 {
	var h maphash.Hash
	h.SetSeed(in.seed)
	h.Write(callID)
	c, s := client.As16(), server.As16()
	h.Write(c[:])
	h.Write(s[:])
	return h.Sum64()
}

// asked records a request from client to server.
func (in *inference) asked(callID []byte, client, server netip.Addr) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if _, ok := in.servers[server]; ok {
		return
	}
	if len(in.asks) >= maxInferAsks {
		for k := range in.asks {
			delete(in.asks, k)
			break
		}
	}
	in.asks[in.key(callID, client, server)] = struct{}{}
}

// answered reports whether server is FreeSWITCH, learning it when this
// response answers a request client sent it.
func (in *inference) answered(callID []byte, client, server netip.Addr) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if _, ok := in.servers[server]; ok {
		return true
	}
	if _, ok := in.asks[in.key(callID, client, server)]; !ok || len(in.servers) >= maxInferServers {
		return false
	}
	in.servers[server] = struct{}{}
	return true
}

// Servers lists the servers learned, sorted.
func (in *inference) list() []netip.Addr {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make([]netip.Addr, 0, len(in.servers))
	for a := range in.servers {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
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
