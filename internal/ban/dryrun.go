package ban

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// DryRunOptions configures a DryRun backend.
type DryRunOptions struct {
	MaxElem int              // 0: unlimited; when reached Add fails with ErrSetFull like a full ipset
	Now     func() time.Time // expiry clock (time.Now)
}

// DryRun is the dry-run backend: the same interface as the kernel sets,
// entries with timeouts kept in memory, no kernel change.
type DryRun struct {
	opt DryRunOptions
	mu  sync.Mutex
	m   map[netip.Prefix]time.Time // expiry; zero = none
}

// NewDryRun returns an empty in-memory backend (at most one options value).
func NewDryRun(opts ...DryRunOptions) *DryRun {
	var o DryRunOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &DryRun{opt: o, m: make(map[netip.Prefix]time.Time)}
}

func (d *DryRun) expireLocked(now time.Time) {
	for p, exp := range d.m {
		if !exp.IsZero() && !exp.After(now) {
			delete(d.m, p)
		}
	}
}

// Add records p for dur (0: no timeout), refreshing an existing entry.
func (d *DryRun) Add(_ context.Context, p netip.Prefix, dur time.Duration) error {
	if !p.IsValid() {
		return fmt.Errorf("dry-run add: invalid prefix")
	}
	p = p.Masked()
	now := d.opt.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.m[p]; !ok && d.opt.MaxElem > 0 && len(d.m) >= d.opt.MaxElem {
		d.expireLocked(now)
		if len(d.m) >= d.opt.MaxElem {
			return fmt.Errorf("dry-run add %s: %w", p, ErrSetFull)
		}
	}
	var exp time.Time
	if dur > 0 {
		exp = now.Add(min(dur, MaxKernelTimeout))
	}
	d.m[p] = exp
	return nil
}

// Del removes p; absent is not an error.
func (d *DryRun) Del(_ context.Context, p netip.Prefix) error {
	d.mu.Lock()
	delete(d.m, p.Masked())
	d.mu.Unlock()
	return nil
}

// List returns the unexpired entries, sorted.
func (d *DryRun) List(context.Context) ([]Entry, error) {
	now := d.opt.Now()
	d.mu.Lock()
	d.expireLocked(now)
	out := make([]Entry, 0, len(d.m))
	for p, exp := range d.m {
		e := Entry{Prefix: p}
		if !exp.IsZero() {
			e.Timeout = exp.Sub(now)
		}
		out = append(out, e)
	}
	d.mu.Unlock()
	sort.Slice(out, func(a, b int) bool { return out[a].Prefix.Addr().Less(out[b].Prefix.Addr()) })
	return out, nil
}

// Contains reports whether p is held and unexpired.
func (d *DryRun) Contains(p netip.Prefix) bool {
	now := d.opt.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	exp, ok := d.m[p.Masked()]
	return ok && (exp.IsZero() || exp.After(now))
}

// Len is how many entries are held, expired ones included until the next
// Add or List.
func (d *DryRun) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.m)
}

// Flush empties the backend (tests: what an admin's ipset flush does).
func (d *DryRun) Flush() {
	d.mu.Lock()
	clear(d.m)
	d.mu.Unlock()
}

var (
	_ Firewall = (*DryRun)(nil)
	_ Lister   = (*DryRun)(nil)
)
