package jail

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// DefaultWeights are the per-rule scores used when Weights does not name a
// rule. scanner_user_agent is absent on purpose: it defaults to MaxRetry, so
// one sighting bans.
var DefaultWeights = map[offense.Rule]float64{
	offense.AuthFailure:     1,
	offense.AuthChallenge:   0,
	offense.UnknownUser:     1,
	offense.ACLReject:       1,
	offense.NoRoute:         1,
	offense.ExtensionScan:   5,
	offense.TollFraudInvite: 5,
	offense.Flood:           5,
	offense.MalformedSIP:    1,
	offense.SIPInjection:    5,
}

// Policy is the part of Options that SetPolicy may change at run time.
type Policy struct {
	Findtime   time.Duration // scoring window (default 10m)
	MaxRetry   float64       // score that bans (default 5)
	Bantime    time.Duration // first ban (default 1h)
	MaxBantime time.Duration // escalation cap (default 7d)
	Factor     float64       // escalation: Bantime*Factor^(n-1) (default 2; 1 = no escalation)
	// Weights per rule; a rule not named uses DefaultWeights (scanner_user_agent:
	// MaxRetry; an unknown rule: 1). Weight 0: counted in the metrics, not
	// tracked per address, never scored — this is how a disabled rule is expressed (deleting it from the map brings
	// back its default). A weight >= MaxRetry bans at once.
	Weights  map[offense.Rule]float64
	NeverBan []netip.Prefix // besides loopback, link-local, multicast and the host's own addresses
	// UnverifiedFactor multiplies the weight of evidence that needed no
	// round trip with the source (a single UDP packet, whose source address
	// can be forged) — Offense.Verified false. DefaultUnverifiedFactor
	// (0.2) when unset; 1 trusts it fully.
	UnverifiedFactor float64
	// MaxOffenders caps the entries the jail tracks, banned ones included
	// (DefaultMaxOffenders). Beyond it the least valuable of a small random
	// sample is evicted (sipwarden_jail_evictions_total): watched entries
	// with unverified evidence first, verified ban history last. An
	// evicted ban stays in the kernel set until its timeout.
	MaxOffenders int
}

// DefaultMaxOffenders is Policy.MaxOffenders when unset.
const DefaultMaxOffenders = 1 << 18

// Defaults of the other Policy fields (config.Default reads them).
const (
	DefaultFindtime   = 10 * time.Minute
	DefaultMaxRetry   = 5.0
	DefaultBantime    = time.Hour
	DefaultMaxBantime = 7 * 24 * time.Hour
	DefaultFactor     = 2.0
	// DefaultUnverifiedFactor weighs evidence that proves no round trip
	// with its source (a UDP request, a TCP segment without its
	// handshake, anything inside HEP): a forged packet costs its sender
	// one datagram. At 0.2 no single packet reaches MaxRetry (the most one
	// message can fire, scanner + injection + toll fraud at weight 5
	// each, scores 3), a two-packet probe scores 2, while a real scanner
	// (many messages from its own address) is banned within seconds.
	DefaultUnverifiedFactor = 0.2
	// DefaultResyncEvery is Options.ResyncEvery when unset: the kernel sets
	// are read back and repaired this often.
	DefaultResyncEvery = time.Minute
	// DefaultV6Prefix is ban.v6_prefix: IPv6 sources are scored and banned
	// per /64 (one customer's LAN; a host gets a fresh address within it
	// at will), narrowed to the address when the /64 covers a protected one.
	DefaultV6Prefix = 64
)

func (p *Policy) defaults() {
	if p.Findtime == 0 {
		p.Findtime = DefaultFindtime
	}
	if p.MaxRetry == 0 {
		p.MaxRetry = DefaultMaxRetry
	}
	if p.Bantime == 0 {
		p.Bantime = DefaultBantime
	}
	if p.MaxBantime == 0 {
		p.MaxBantime = max(DefaultMaxBantime, p.Bantime)
	}
	if p.Factor == 0 {
		p.Factor = DefaultFactor
	}
	if p.UnverifiedFactor == 0 {
		p.UnverifiedFactor = DefaultUnverifiedFactor
	}
	if p.MaxOffenders == 0 {
		p.MaxOffenders = DefaultMaxOffenders
	}
}

func (p *Policy) validate() error {
	var errs []error
	if p.UnverifiedFactor < 0 || p.UnverifiedFactor > 1 {
		errs = append(errs, fmt.Errorf("unverified factor %g: must be within (0, 1]", p.UnverifiedFactor))
	}
	if p.MaxOffenders < 1 {
		errs = append(errs, fmt.Errorf("max offenders %d: must be >= 1", p.MaxOffenders))
	}
	if p.Findtime < time.Second {
		errs = append(errs, fmt.Errorf("findtime %s: must be >= 1s", p.Findtime))
	}
	if !(p.MaxRetry > 0) || math.IsInf(p.MaxRetry, 0) {
		errs = append(errs, fmt.Errorf("maxretry %v: must be > 0", p.MaxRetry))
	}
	if p.Bantime < time.Second {
		errs = append(errs, fmt.Errorf("bantime %s: must be >= 1s", p.Bantime))
	}
	if p.MaxBantime < p.Bantime {
		errs = append(errs, fmt.Errorf("maxbantime %s: must be >= bantime %s", p.MaxBantime, p.Bantime))
	}
	if !(p.Factor >= 1) || math.IsInf(p.Factor, 0) {
		errs = append(errs, fmt.Errorf("factor %v: must be >= 1", p.Factor))
	}
	for r, w := range p.Weights {
		if !(w >= 0) || math.IsInf(w, 0) {
			errs = append(errs, fmt.Errorf("weight of %s %v: must be >= 0", r, w))
		}
	}
	for _, n := range p.NeverBan {
		if !n.IsValid() {
			errs = append(errs, fmt.Errorf("never_ban: invalid prefix %v", n))
		}
	}
	return errors.Join(errs...)
}

// compiled is an immutable, validated policy; swapped atomically.
type compiled struct {
	Policy
	weights  [maxRules]float64
	neverBan []netip.Prefix
}

func compile(p Policy) (*compiled, error) {
	p.defaults()
	if err := p.validate(); err != nil {
		return nil, err
	}
	c := &compiled{Policy: p}
	c.Weights = maps.Clone(p.Weights)
	for i := range c.weights {
		c.weights[i] = 1
	}
	for i, r := range offense.Rules {
		if i >= otherRule {
			break
		}
		c.weights[i] = c.weightOf(r)
	}
	if w, ok := p.Weights[""]; ok { // unknown rules
		c.weights[otherRule] = w
	}
	for _, n := range p.NeverBan {
		c.neverBan = append(c.neverBan, n.Masked())
	}
	return c, nil
}

func (c *compiled) weightOf(r offense.Rule) float64 {
	if w, ok := c.Weights[r]; ok {
		return w
	}
	if r == offense.ScannerUserAgent {
		return c.MaxRetry
	}
	if w, ok := DefaultWeights[r]; ok {
		return w
	}
	return 1
}

// banDuration is Bantime*Factor^(n-1) capped by MaxBantime (n >= 1).
func (c *compiled) banDuration(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	d := float64(c.Bantime) * math.Pow(c.Factor, float64(n-1))
	if d >= float64(c.MaxBantime) || math.IsInf(d, 0) || math.IsNaN(d) {
		return c.MaxBantime
	}
	return time.Duration(d)
}

// Rule and source indexes: counts live in small arrays, not maps, to keep an
// offender small under a flood of distinct addresses.
const maxRules = 16

var otherRule = min(len(offense.Rules), maxRules-1)

func ruleIndex(r offense.Rule) int {
	for i, k := range offense.Rules {
		if k == r {
			if i >= otherRule {
				return otherRule
			}
			return i
		}
	}
	return otherRule
}

func ruleName(i int) string {
	if i < otherRule {
		return string(offense.Rules[i])
	}
	return "other"
}

var sources = [...]offense.Source{
	offense.SourceESL, offense.SourceLog, offense.SourceHEP,
	offense.SourceCapture, offense.SourcePCAP, offense.SourceAPI,
}

const numSources = len(sources) + 1 // + other

func sourceIndex(s offense.Source) int {
	for i, k := range sources {
		if k == s {
			return i
		}
	}
	return len(sources)
}

func sourceName(i int) string {
	if i < len(sources) {
		return string(sources[i])
	}
	return "other"
}
