// Package ban declares what the jail needs from a ban backend (Firewall and
// its optional extensions), the errors backends and the jail share, and the
// dry-run backend that keeps entries in memory.
//
// It holds no policy: scoring lives in internal/jail, the never-ban /
// allowlist / registration decision in internal/decision and the kernel
// backend in internal/ipset.
package ban

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// Firewall is what the jail needs from a ban backend. Add must refresh the
// timeout of an entry that is already present (ipset's -exist); Del of an
// entry that is absent is not an error.
type Firewall interface {
	Add(ctx context.Context, p netip.Prefix, d time.Duration) error
	Del(ctx context.Context, p netip.Prefix) error
}

// Lister is an optional Firewall extension: the entries the backend holds,
// read back at start and on every resync so state matches the kernel.
type Lister interface {
	List(ctx context.Context) ([]Entry, error)
}

// Ensurer is an optional Firewall extension: make sure the sets exist,
// creating the missing ones. created is how many had to be created (an admin
// destroyed them, or the host rebooted).
type Ensurer interface {
	Ensure(ctx context.Context) (created int, err error)
}

// BatchAdder is an optional Firewall extension: many adds in one kernel
// round trip. errs (len >= len(entries)) receives each entry's error; the
// returned error concerns the whole batch. The writer uses it when bans
// queue up faster than single writes drain them.
type BatchAdder interface {
	AddBatch(ctx context.Context, entries []Entry, errs []error) error
}

// Entry is one entry held by a backend.
type Entry struct {
	Prefix  netip.Prefix
	Timeout time.Duration // remaining; 0 = no timeout
}

// Errors returned by the jail's Ban and Unban and by backends (compare
// with errors.Is).
var (
	ErrWhitelisted = errors.New("address is whitelisted")
	ErrNeverBan    = errors.New("address is never banned")
	ErrNotBanned   = errors.New("address is not banned")
	// ErrBadState marks a state file that exists but cannot be read back
	// (corrupt, truncated, wrong version). NewJail still returns a working
	// jail together with an error wrapping it.
	ErrBadState = errors.New("bad ban state file")
	// ErrSetFull is wrapped by backends when the set has reached maxelem.
	ErrSetFull = errors.New("ban set is full")
	// ErrNotSupported is returned by the ipset backend off Linux.
	ErrNotSupported = errors.New("not supported on this platform")
)

// MaxKernelTimeout is the longest per-entry timeout ipset accepts
// (IPSET_MAX_TIMEOUT: (UINT_MAX>>1)/1000 seconds); longer bans are written
// with it and refreshed by the resync.
const MaxKernelTimeout = 2147483 * time.Second

// SetNamer is implemented by backends with named kernel sets of a fixed
// capacity, so that their fill level can be watched (a full set is an
// outage of the ban path).
type SetNamer interface {
	SetNames() (v4, v6 string)
	MaxElem() int
}
