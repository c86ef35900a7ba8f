// Package ban owns the jail (per-IP scores over offenses), the ban decision
// (never-ban -> static allowlist -> live registration -> ban) and the
// backends that put bans into the kernel (ipset over netlink) or only record
// them (dry run).
//
// It must not find offenses (sources do that), must not learn registrations
// (the whitelist does) and must never run a process: the ban path talks to
// the kernel over one persistent netlink handle, from one writer goroutine,
// so that Offend never waits on the kernel.
package ban

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
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

// Allowlist answers whether an address must not be banned. why is "static"
// (configured allowlist) or "registered" (a live registration).
// *whitelist.Whitelist satisfies it.
type Allowlist interface {
	Allowed(netip.Addr) (why string, ok bool)
}

// RegistrationCounter is an optional Allowlist extension used only to say
// more in the "protected" log line: how many live registrations an address
// has.
type RegistrationCounter interface {
	Registrations(netip.Addr) int
}

// Errors returned by Ban and Unban (compare with errors.Is).
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

// Ban is one active ban as the API shows it.
type Ban struct {
	IP        netip.Addr   `json:"ip"`              // the address (for a prefix ban: the prefix's first address)
	Prefix    netip.Prefix `json:"prefix,omitzero"` // set for IPv6 prefix bans (v6_prefix) only
	Rule      string       `json:"rule"`            // the rule that crossed the threshold; "manual"; "kernel" (found in the set)
	Reason    string       `json:"reason"`
	CreatedAt time.Time    `json:"created_at"`
	ExpiresAt time.Time    `json:"expires_at,omitzero"` // zero: permanent (adopted from a set entry without timeout)
	Count     int          `json:"count"`               // how many times this address has been banned
}

// Offender states.
const (
	StateWatching  = "watching"
	StateBanned    = "banned"
	StateProtected = "protected"
	StateNeverBan  = "never-ban"
)

// Offender is one tracked address as the API shows it.
type Offender struct {
	IP       netip.Addr           `json:"ip"`
	Prefix   netip.Prefix         `json:"prefix,omitzero"` // set when IPv6 is scored per prefix
	Score    float64              `json:"score"`
	Offenses map[offense.Rule]int `json:"offenses"`
	State    string               `json:"state"`
	// Why, for protected and never-ban: registered, static (or the
	// allowlist's reason), loopback, link-local, own address, never_ban CIDR.
	Why      string    `json:"why,omitempty"`
	User     string    `json:"user,omitempty"` // last user named in an offense
	LastSeen time.Time `json:"last_seen,omitzero"`
	// Bans counts the bans so far (history kept across restarts and after
	// a ban expires: a replay's verdict is "ban" when Bans > 0).
	Bans        int           `json:"bans"`
	BanDuration time.Duration `json:"-"`                     // current or last ban
	BanSeconds  float64       `json:"ban_seconds,omitempty"` // BanDuration in seconds
	ExpiresAt   time.Time     `json:"expires_at,omitzero"`   // of the current ban
	// PeakScore is the highest score reached; Skipped and SkippedWhy the
	// last ban skipped for it (protected, never-ban) even after it aged
	// out of State. A replay's verdicts come from these.
	PeakScore  float64 `json:"peak_score"`
	Skipped    string  `json:"-"`
	SkippedWhy string  `json:"-"`
}
