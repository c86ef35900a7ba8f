package whitelist

import (
	"math/rand/v2"
	"testing"
)

// TestIndexTable checks the open-addressing table against a map through
// random puts and deletes, including colliding keys and resizes.
func TestIndexTable(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var s *idxShard
	want := map[uint32]int64{}
	for step := 0; step < 20000; step++ {
		ch := map[uint32]int64{}
		for n := r.IntN(4) + 1; n > 0; n-- {
			k := uint32(r.IntN(300)) // small key space: many collisions and deletes
			if r.IntN(3) == 0 {
				ch[k] = 0
			} else {
				ch[k] = int64(step + 1)
			}
		}
		s = s.with(ch, nil)
		for k, u := range ch {
			if u == 0 {
				delete(want, k)
			} else {
				want[k] = u
			}
		}
		if step%97 == 0 {
			for k := uint32(0); k < 300; k++ {
				if got := s.get4(k); got != want[k] {
					t.Fatalf("step %d: get4(%d) = %d, want %d", step, k, got, want[k])
				}
			}
			if n := len(want); n != s.n+btoi(want[0] != 0) {
				t.Fatalf("step %d: n = %d, want %d", step, s.n, n)
			}
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
