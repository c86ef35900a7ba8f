package protect

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// Distributed guessing: one extension failing from many addresses, each
// of them below the ban threshold. The jail scores per address and cannot
// see it; Targets counts, per user, the distinct failing addresses within
// the window.
const (
	// DefaultDistributedAddresses is protect.distributed_addresses: this
	// many distinct addresses failing against one user within
	// protect.window make the user a target.
	DefaultDistributedAddresses = 10
	// DefaultMaxTargets bounds the users tracked; beyond it the idlest
	// is forgotten.
	DefaultMaxTargets = 4096
	// maxTargetAddrs bounds the addresses kept per user.
	maxTargetAddrs = 256
)

// Target is one user failing from many addresses, as the API shows it.
type Target struct {
	User      string    `json:"user"`
	Addresses int       `json:"addresses"` // distinct failing addresses within the window
	Failures  int       `json:"failures"`  // failures within the window
	Targeted  bool      `json:"targeted"`  // Addresses reached protect.distributed_addresses
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Sample    []string  `json:"sample,omitempty"` // a few of the failing addresses
}

type target struct {
	addrs    map[netip.Addr]int64 // last failure, unix ns
	failures int
	first    int64
	last     int64
	flagged  bool
}

// targets is the per-user counter (owned by a Guard).
type targets struct {
	mu     sync.Mutex
	limit  int
	window int64
	max    int
	users  map[string]*target
	log    *slog.Logger
	now    func() time.Time
	raised prometheus.Counter
}

func newTargets(limit, max int, window time.Duration, log *slog.Logger, now func() time.Time, reg prometheus.Registerer) *targets {
	t := &targets{limit: limit, max: max, window: int64(window), users: make(map[string]*target), log: log, now: now}
	f := promauto.With(reg)
	t.raised = f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Subsystem: "protect", Name: "distributed_total",
		Help: "Distributed guessing detected: one user failing from protect.distributed_addresses distinct addresses within protect.window (the user is in the log and GET /v1/protected, never a label)."})
	f.NewGaugeFunc(prometheus.GaugeOpts{Namespace: offense.Namespace, Subsystem: "protect", Name: "targeted_users",
		Help: "Users failing from protect.distributed_addresses or more distinct addresses within protect.window (distributed guessing)."},
		func() float64 { return float64(t.count()) })
	return t
}

// failure records one credential failure of o.User from o.IP.
func (t *targets) failure(o offense.Offense) {
	if o.User == "" || len(o.User) > 128 || !o.IP.IsValid() {
		return
	}
	if o.Rule != offense.AuthFailure && o.Rule != offense.UnknownUser {
		return
	}
	ip := o.IP.Unmap().WithZone("")
	tn := o.Time.UnixNano()
	if o.Time.IsZero() {
		tn = t.now().UnixNano()
	}
	t.mu.Lock()
	u := t.users[o.User]
	if u == nil {
		if len(t.users) >= t.max {
			t.evictLocked()
		}
		u = &target{addrs: make(map[netip.Addr]int64), first: tn}
		t.users[o.User] = u
	}
	t.pruneLocked(u, tn)
	if _, ok := u.addrs[ip]; ok || len(u.addrs) < maxTargetAddrs {
		u.addrs[ip] = max(u.addrs[ip], tn)
	}
	u.failures++
	u.last = max(u.last, tn)
	raise := !u.flagged && len(u.addrs) >= t.limit
	if raise {
		u.flagged = true
	}
	n := len(u.addrs)
	t.mu.Unlock()
	if raise {
		t.raised.Inc()
		t.log.Warn(fmt.Sprintf("distributed guessing against user %q: %d distinct addresses failing within %s", o.User, n, time.Duration(t.window)),
			"user", o.User, "addresses", n, "window", time.Duration(t.window).String(), "last_ip", ip.String())
	}
}

// pruneLocked forgets the addresses that last failed before the window.
func (t *targets) pruneLocked(u *target, tn int64) {
	for a, l := range u.addrs {
		if tn-l >= t.window {
			delete(u.addrs, a)
		}
	}
	if len(u.addrs) == 0 {
		u.failures, u.first = 0, tn
	}
	if len(u.addrs) < t.limit {
		u.flagged = false
	}
}

func (t *targets) evictLocked() {
	var idle string
	var at int64
	for k, u := range t.users {
		if idle == "" || u.last < at {
			idle, at = k, u.last
		}
	}
	delete(t.users, idle)
}

func (t *targets) count() int {
	tn := t.now().UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for k, u := range t.users {
		t.pruneLocked(u, tn)
		if len(u.addrs) == 0 {
			delete(t.users, k)
			continue
		}
		if u.flagged {
			n++
		}
	}
	return n
}

// list returns the users failing from two or more addresses, targeted first.
func (t *targets) list() []Target {
	tn := t.now().UnixNano()
	t.mu.Lock()
	var out []Target
	for k, u := range t.users {
		t.pruneLocked(u, tn)
		if len(u.addrs) < 2 {
			continue
		}
		tg := Target{User: k, Addresses: len(u.addrs), Failures: u.failures, Targeted: u.flagged,
			FirstSeen: time.Unix(0, u.first).UTC(), LastSeen: time.Unix(0, u.last).UTC()}
		for a := range u.addrs {
			if len(tg.Sample) == 5 {
				break
			}
			tg.Sample = append(tg.Sample, a.String())
		}
		slices.Sort(tg.Sample)
		out = append(out, tg)
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b Target) int {
		if a.Targeted != b.Targeted {
			if a.Targeted {
				return -1
			}
			return 1
		}
		if a.Addresses != b.Addresses {
			return b.Addresses - a.Addresses
		}
		return strings.Compare(a.User, b.User)
	})
	return out
}

// Failure records a credential failure (of any address, protected or not)
// for the distributed-guessing count; the jail calls it.
func (g *Guard) Failure(o offense.Offense) { g.targets.failure(o) }

// Targeted returns the users failing from several addresses within the
// window (GET /v1/protected "targets").
func (g *Guard) Targeted() []Target { return g.targets.list() }
