package jail

import (
	"net/netip"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
)

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
