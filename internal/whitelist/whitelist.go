// Package whitelist owns the set of addresses that must never be banned:
// static prefixes from the configuration and the live SIP registrations that
// FreeSWITCH reports (learned by eslwatch, restored from the jail's state
// file, or learned by replay from captures).
//
// An address stays whitelisted while any one of its registrations is live:
// its expiry plus a grace period has not passed. Expiry is judged on every
// lookup against the injected clock and enforced by a periodic sweep, never
// by a goroutine or timer per entry.
//
// Time: expiries are absolute wall-clock instants, as FreeSWITCH keeps them
// (its registration table and `show registrations` hold epoch seconds, and
// the jail's state file carries them across a restart). Every question
// (Allowed, Lookup, Registered, Entries, Sweep) reads the clock afresh and
// compares with the same rule, so they always agree, whichever way the
// clock steps: a step back lengthens each registration by the step, a step
// forward ends those FreeSWITCH's own table ends too (and the phone's next
// refresh or the next resync brings them back).
//
// The store is one map behind a sync.RWMutex: it is asked only when a score
// crosses the threshold, and a locked map answers in well under a
// microsecond even with 100k registrations.
//
// The package must not ban, talk to FreeSWITCH or read configuration files:
// it only answers "is this address allowed, and why".
package whitelist

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// The reasons Allowed gives. They are constants so that callers may compare
// them and use them as bounded metric labels.
const (
	ReasonStatic     = "static"
	ReasonRegistered = "registered"
)

// DefaultGrace matches the margin FreeSWITCH keeps a registration past its
// SIP expiry before deleting it (it stores expires+60 s).
const DefaultGrace = 60 * time.Second

// DefaultSweepEvery is how often Run drops expired registrations.
const DefaultSweepEvery = time.Second

// Registration is one live SIP registration as FreeSWITCH knows it.
// ExpiresAt is the SIP expiry (registration time + Expires); the whitelist
// keeps the registration for the grace period beyond it.
type Registration struct {
	IP        netip.Addr `json:"-"`
	User      string     `json:"user"`
	Realm     string     `json:"realm"`
	Profile   string     `json:"profile"`
	Contact   string     `json:"contact"`
	CallID    string     `json:"call_id,omitempty"`
	UserAgent string     `json:"user_agent"`
	Node      string     `json:"node,omitempty"`
	ExpiresAt time.Time  `json:"expires_at"`
}

// Entry is the whitelist's view of one address. For a static prefix listed by
// Entries, IP is the prefix's first address and Prefix the prefix itself;
// Lookup sets Prefix to the static prefix that matched.
type Entry struct {
	IP            netip.Addr     `json:"ip"`
	Prefix        netip.Prefix   `json:"prefix,omitzero"`
	Static        bool           `json:"static"`
	Registrations []Registration `json:"registrations"`
}

// Options configures a Whitelist. Zero values take the defaults.
type Options struct {
	Static     []netip.Prefix
	Grace      time.Duration // default DefaultGrace; negative means none
	SweepEvery time.Duration // default DefaultSweepEvery
	Now        func() time.Time
	Registerer prometheus.Registerer // nil: a private registry
}

// Whitelist is safe for concurrent use.
type Whitelist struct {
	now        func() time.Time
	sweepEvery time.Duration

	mu     sync.RWMutex
	grace  int64 // ns, >= 0
	static *staticSet
	store  store

	mRegs    prometheus.Gauge
	mDynamic prometheus.Gauge
	mStatic  prometheus.Gauge
}

// New returns an empty Whitelist holding opts.Static.
func New(opts Options) *Whitelist {
	w := &Whitelist{
		now:        opts.Now,
		sweepEvery: opts.SweepEvery,
		store:      newStore(),
	}
	if w.now == nil {
		w.now = time.Now
	}
	w.grace = graceNS(opts.Grace)
	if w.sweepEvery <= 0 {
		w.sweepEvery = DefaultSweepEvery
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	f := promauto.With(reg)
	w.mRegs = f.NewGauge(prometheus.GaugeOpts{
		Namespace: offense.Namespace,
		Name:      "registrations",
		Help:      "Live SIP registrations held by the whitelist.",
	})
	ips := f.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: offense.Namespace,
		Name:      "whitelist_ips",
		Help:      "Whitelisted entries by kind: static = configured prefixes, dynamic = addresses with a live registration.",
	}, []string{"kind"})
	w.mDynamic = ips.WithLabelValues("dynamic")
	w.mStatic = ips.WithLabelValues("static")
	w.SetStatic(opts.Static)
	return w
}

// graceNS maps the Grace option: 0 is the default, negative none.
func graceNS(d time.Duration) int64 {
	switch {
	case d == 0:
		return int64(DefaultGrace)
	case d < 0:
		return 0
	}
	return int64(d)
}

// SetGrace changes the grace period (a configuration reload): 0 is
// DefaultGrace, negative none. It applies at once to every registration,
// since liveness is judged at each lookup.
func (w *Whitelist) SetGrace(d time.Duration) {
	w.mu.Lock()
	w.grace = graceNS(d)
	w.mu.Unlock()
}

// Grace returns the grace period in force.
func (w *Whitelist) Grace() time.Duration {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return time.Duration(w.grace)
}

// clock reads the injected clock.
func (w *Whitelist) clock() int64 { return w.now().UnixNano() }

// publishLocked updates the gauges after a write.
func (w *Whitelist) publishLocked() {
	w.mRegs.Set(float64(w.store.nRegs))
	w.mDynamic.Set(float64(len(w.store.byIP)))
}

// Run sweeps expired registrations every SweepEvery until ctx is done.
func (w *Whitelist) Run(ctx context.Context) error {
	t := time.NewTicker(w.sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.Sweep()
		}
	}
}
