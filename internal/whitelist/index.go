package whitelist

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"slices"
)

// The lock-free read index: idxShards immutable shards, each an
// open-addressing table from IPv4 address to "live until" (unix ns), plus a
// map for the rarer IPv6 addresses. A write builds a new shard and swaps the
// pointer; a lookup is one atomic load and, usually, one cache line.

const (
	idxBits   = 12
	idxShards = 1 << idxBits
	golden    = 0x9E3779B97F4A7C15
)

type slot4 struct {
	key   uint32 // the address; 0.0.0.0 is held in zeroUntil
	_     uint32
	until int64
}

type idxShard struct {
	mask      uint32
	n         int     // keys in slots
	slots     []slot4 // len is a power of two, at most half full
	zeroUntil int64
	v6        map[[16]byte]int64
}

func hash4(k uint32) uint64 { return uint64(k) * golden }

func idx4(k uint32) uint64 { return hash4(k) >> (64 - idxBits) }

func idx16(b [16]byte) uint64 {
	h := binary.LittleEndian.Uint64(b[:8]) ^ binary.LittleEndian.Uint64(b[8:])*golden
	h ^= h >> 29
	h *= 0xBF58476D1CE4E5B9
	return h >> (64 - idxBits)
}

func idxOf(ip netip.Addr) uint64 {
	if ip.Is4() {
		b := ip.As4()
		return idx4(binary.BigEndian.Uint32(b[:]))
	}
	return idx16(ip.As16())
}

// get4 returns the until of k, 0 when absent.
func (s *idxShard) get4(k uint32) int64 {
	if k == 0 {
		return s.zeroUntil
	}
	if len(s.slots) == 0 {
		return 0
	}
	i := uint32(hash4(k)>>24) & s.mask
	for {
		sl := &s.slots[i]
		if sl.key == k {
			return sl.until
		}
		if sl.key == 0 {
			return 0
		}
		i = (i + 1) & s.mask
	}
}

// with returns a copy of s with the changes applied (until 0 deletes).
// The copy is a memcpy of the table plus in-place probes; the table is
// rebuilt only to grow or shrink.
func (s *idxShard) with(ch4 map[uint32]int64, ch6 map[[16]byte]int64) *idxShard {
	next := &idxShard{}
	if s != nil {
		next.zeroUntil, next.n, next.mask = s.zeroUntil, s.n, s.mask
		next.slots = slices.Clone(s.slots)
		next.v6 = maps.Clone(s.v6)
	}
	for k, u := range ch4 {
		switch {
		case k == 0:
			next.zeroUntil = u
		case u == 0:
			next.del(k)
		default:
			if 2*(next.n+1) > len(next.slots) {
				next.resize(max(8, 2*len(next.slots)))
			}
			next.put(k, u)
		}
	}
	if len(next.slots) > 8 && 8*next.n < len(next.slots) {
		next.resize(len(next.slots) / 4)
	}
	for k, u := range ch6 {
		if u == 0 {
			delete(next.v6, k)
			continue
		}
		if next.v6 == nil {
			next.v6 = make(map[[16]byte]int64)
		}
		next.v6[k] = u
	}
	return next
}

func (s *idxShard) home(k uint32) uint32 { return uint32(hash4(k)>>24) & s.mask }

func (s *idxShard) put(k uint32, u int64) {
	i := s.home(k)
	for {
		switch s.slots[i].key {
		case k:
			s.slots[i].until = u
			return
		case 0:
			s.slots[i] = slot4{key: k, until: u}
			s.n++
			return
		}
		i = (i + 1) & s.mask
	}
}

// del removes k with backward-shift deletion, keeping every probe chain
// unbroken without tombstones.
func (s *idxShard) del(k uint32) {
	if len(s.slots) == 0 {
		return
	}
	i := s.home(k)
	for s.slots[i].key != k {
		if s.slots[i].key == 0 {
			return
		}
		i = (i + 1) & s.mask
	}
	j := i
	for {
		j = (j + 1) & s.mask
		if s.slots[j].key == 0 {
			break
		}
		h := s.home(s.slots[j].key)
		// Slot j may stay if its home lies cyclically in (i, j].
		if i <= j && i < h && h <= j || i > j && (i < h || h <= j) {
			continue
		}
		s.slots[i] = s.slots[j]
		i = j
	}
	s.slots[i] = slot4{}
	s.n--
}

func (s *idxShard) resize(n int) {
	old := s.slots
	s.slots = make([]slot4, n)
	s.mask = uint32(n - 1)
	s.n = 0
	for _, sl := range old {
		if sl.key != 0 {
			s.put(sl.key, sl.until)
		}
	}
}
