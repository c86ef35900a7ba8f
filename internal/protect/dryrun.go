package protect

import (
	"context"
	"net/netip"
	"sync"
	"time"
)

// DryRun is a Firewall that keeps its entries in memory (replay, tests,
// the dry-run backend).
type DryRun struct {
	mu       sync.Mutex
	mappings map[Mapping]time.Duration
	throttle map[netip.Addr]time.Duration
}

var _ Firewall = (*DryRun)(nil)

// NewDryRun returns an empty DryRun.
func NewDryRun() *DryRun {
	return &DryRun{mappings: make(map[Mapping]time.Duration), throttle: make(map[netip.Addr]time.Duration)}
}

// AddMapping implements Firewall.
func (d *DryRun) AddMapping(_ context.Context, m Mapping, t time.Duration) error {
	d.mu.Lock()
	d.mappings[m] = t
	d.mu.Unlock()
	return nil
}

// DelMapping implements Firewall.
func (d *DryRun) DelMapping(_ context.Context, m Mapping) error {
	d.mu.Lock()
	delete(d.mappings, m)
	d.mu.Unlock()
	return nil
}

// AddThrottle implements Firewall.
func (d *DryRun) AddThrottle(_ context.Context, ip netip.Addr, t time.Duration) error {
	d.mu.Lock()
	d.throttle[ip] = t
	d.mu.Unlock()
	return nil
}

// DelThrottle implements Firewall.
func (d *DryRun) DelThrottle(_ context.Context, ip netip.Addr) error {
	d.mu.Lock()
	delete(d.throttle, ip)
	d.mu.Unlock()
	return nil
}

// Mappings returns the quarantined mappings held.
func (d *DryRun) Mappings() map[Mapping]time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[Mapping]time.Duration, len(d.mappings))
	for k, v := range d.mappings {
		out[k] = v
	}
	return out
}

// Throttled returns the throttled addresses held.
func (d *DryRun) Throttled() map[netip.Addr]time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[netip.Addr]time.Duration, len(d.throttle))
	for k, v := range d.throttle {
		out[k] = v
	}
	return out
}
