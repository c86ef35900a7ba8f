// Package pipeline builds the judging half of sipwarden from a config: the
// jail with its policy (thresholds, rule weights, never-ban), and the
// analyzers that turn evidence into offenses for it (the log line rules and
// the SIP analyzer). The daemon and replay both build from here, so a replay
// of last night's recording gives the verdicts the daemon gave.
//
// It owns no source (socket, file, Event Socket), no backend and no
// lifecycle: the caller injects the firewall, the allowlist, the registry,
// the logger and the clock, and runs what it gets.
package pipeline

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/decision"
	"github.com/sipwarden/sipwarden/internal/jail"
	"github.com/sipwarden/sipwarden/internal/logwatch"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/protect"
	"github.com/sipwarden/sipwarden/internal/sip"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// Parts are what the caller injects.
type Parts struct {
	Firewall  ban.Firewall       // nil: the jail's dry-run
	Allowlist decision.Allowlist // nil: nothing allowlisted
	// NeverBan is added to the config's never_ban (the Event Socket nodes).
	NeverBan   []netip.Prefix
	Registerer prometheus.Registerer // nil: a private registry
	Logger     *slog.Logger          // nil: discard
	Now        func() time.Time      // nil: time.Now
	// RegistrationsSynced, when not nil, holds every automatic ban (of any
	// source: Event Socket, log, HEP, capture) until it is closed, once
	// every registration source has completed its first sync; offenses are
	// scored meanwhile. Nil: nothing to wait for (replay, no Event Socket).
	RegistrationsSynced <-chan struct{}
	// HoldCredentials is jail.Options.HoldCredentials (esl.down_policy:
	// hold): nil applies credential-class bans whatever the source does.
	HoldCredentials func() bool
	// StateExtra is kept in the jail's state file beside the scores: the
	// whitelist's live registrations, so that a restart protects offices
	// before the first listing. Nil: nothing extra.
	StateExtra jail.StateExtra
	// ProtectFirewall writes quarantines and throttles (nil: dry-run);
	// Accounts names the accounts registered at an address.
	ProtectFirewall protect.Firewall
	Accounts        func(netip.Addr) []string
	// Offline judges a recording (replay): no state file, and the host's
	// own addresses are not never-ban (they say nothing of the recording).
	Offline bool
}

// Pipeline is the jail and what feeds it, built from one config.
type Pipeline struct {
	jail     *jail.Jail
	guard    *protect.Guard
	parts    Parts
	location *time.Location
	public   []string
	sip      sip.Config
	trust    sipTrust
}

// sipTrust is what the SIP sources believe: HEP senders, FreeSWITCH's
// addresses (whose responses are evidence).
type sipTrust struct {
	hep     sip.HEPOptions
	servers *sip.ServerSet // nil: infer them (replay without sip.servers)
}

// New builds the jail from cfg (validated by config.Load). When only the
// jail's state file is unreadable it returns a working pipeline together
// with an error wrapping ban.ErrBadState, as jail.New does.
func New(cfg config.Config, parts Parts) (*Pipeline, error) {
	if parts.Registerer == nil {
		parts.Registerer = prometheus.NewRegistry()
	}
	if parts.Logger == nil {
		parts.Logger = slog.New(slog.DiscardHandler)
	}
	if parts.Now == nil {
		parts.Now = time.Now
	}
	loc, err := LogLocation(cfg.Logs)
	if err != nil {
		return nil, err
	}
	pl := &Pipeline{parts: parts, location: loc, public: slices.Clone(cfg.Logs.PublicContexts), sip: SIPConfig(cfg.SIP),
		trust: SIPTrust(cfg, parts.NeverBan, parts.Offline)}
	opt := JailOptions(cfg)
	opt.NeverBan = append(opt.NeverBan, parts.NeverBan...)
	opt.Allowlist = parts.Allowlist
	opt.Firewall = parts.Firewall
	opt.Logger = parts.Logger
	opt.Registerer = parts.Registerer
	opt.Now = parts.Now
	opt.RegistrationsSynced = parts.RegistrationsSynced
	opt.HoldCredentials = parts.HoldCredentials
	opt.StateExtra = parts.StateExtra
	if pl.guard, err = newGuard(cfg, parts); err != nil {
		return nil, err
	}
	if pl.guard != nil {
		opt.Protect = protector{pl.guard}
		opt.Targets = pl.guard
	}
	if parts.Offline {
		opt.StateFile = ""
		opt.StateExtra = nil
		opt.SkipHostAddrs = true
	}
	jail, err := jail.New(opt)
	if jail == nil {
		return nil, err
	}
	pl.jail = jail
	return pl, err
}

// Jail is where offenses go.
func (p *Pipeline) Jail() *jail.Jail { return p.jail }

// Sink is the jail, as the sources see it.
func (p *Pipeline) Sink() offense.Sink { return p.jail }

// SetPolicy applies the jail policy of a new config (a reload). On error
// nothing changed.
func (p *Pipeline) SetPolicy(cfg config.Config) error {
	pol := Policy(cfg)
	pol.NeverBan = append(pol.NeverBan, p.parts.NeverBan...)
	if err := p.jail.SetPolicy(pol); err != nil {
		return fmt.Errorf("jail policy: %w", err)
	}
	return nil
}

// SIPAnalyzer builds the SIP analyzer, sending its offenses to sink (nil:
// the jail). regs learns registrations from 200 OKs to REGISTER; the daemon
// passes nil (the Event Socket is its source of registrations: a forged
// 200 OK must not whitelist anyone), replay the whitelist it judges with.
func (p *Pipeline) SIPAnalyzer(sink offense.Sink, regs sip.Registrar) (*sip.Analyzer, error) {
	if sink == nil {
		sink = p.jail
	}
	o := sip.Options{
		Config:        p.sip,
		Sink:          sink,
		Registrations: regs,
		Logger:        p.parts.Logger,
		Registerer:    p.parts.Registerer,
		Now:           p.parts.Now,
		InferServers:  p.trust.servers == nil,
	}
	if p.trust.servers != nil {
		o.Servers = p.trust.servers.Contains
	}
	a, err := sip.NewAnalyzer(o)
	if err != nil {
		return nil, fmt.Errorf("sip: %w", err)
	}
	return a, nil
}

// HEPOptions says whom the HEP listener (and replay, for HEP inside a
// capture) takes HEP from.
func (p *Pipeline) HEPOptions() sip.HEPOptions { return p.trust.hep }

// SIPTrust maps sip.hep_allow, sip.hep_capture_ids and sip.servers onto
// what the SIP sources trust. nodes are the Event Socket nodes' addresses:
// by default HEP is taken from loopback and them, and FreeSWITCH's
// responses are those from them and the host's own addresses; offline
// (replay) FreeSWITCH is inferred from the capture unless sip.servers says.
func SIPTrust(cfg config.Config, nodes []netip.Prefix, offline bool) sipTrust {
	var t sipTrust
	t.hep.Allow = config.Prefixes(cfg.SIP.HEPAllow)
	if len(t.hep.Allow) == 0 {
		t.hep.Allow = append([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}, nodes...)
	}
	for _, id := range cfg.SIP.HEPCaptureIDs {
		t.hep.CaptureIDs = append(t.hep.CaptureIDs, uint32(id))
	}
	switch {
	case len(cfg.SIP.Servers) > 0:
		t.servers = &sip.ServerSet{Prefixes: config.Prefixes(cfg.SIP.Servers)}
	case !offline:
		t.servers = &sip.ServerSet{Prefixes: slices.Clone(nodes), HostAddrs: true}
	}
	return t
}

// LogParser builds a log line parser with the config's rules; now is used
// for year inference of year-less lines (nil: the pipeline's clock).
func (p *Pipeline) LogParser(now func() time.Time) *logwatch.Parser {
	if now == nil {
		now = p.parts.Now
	}
	lp := logwatch.NewParser(now)
	lp.SetLocation(p.location)
	if len(p.public) > 0 {
		lp.SetPublicContexts(p.public...)
	}
	return lp
}

// LogRules fills the parts of a log follower's options that judge lines
// (time zone, public contexts, line limit) and its sink (the jail), the
// same the replay parser gets; the caller adds files and polling.
func (p *Pipeline) LogRules(o logwatch.Options, cfg config.Logs) logwatch.Options {
	o.Location = p.location
	o.PublicContexts = slices.Clone(p.public)
	o.MaxLine = cfg.MaxLineBytes
	o.Sink = p.jail
	o.Logger = p.parts.Logger
	o.Registerer = p.parts.Registerer
	return o
}

// Weights maps the rules section onto jail weights: a disabled rule weighs
// 0 (counted, never scored), so that a reload can enable it again; a rule
// the config does not weigh keeps the jail's default.
func Weights(cfg config.Config) map[offense.Rule]float64 {
	w, disabled := cfg.RuleWeights()
	for r := range disabled {
		w[r] = 0
	}
	return w
}

// Policy maps the config onto the jail's reloadable policy.
func Policy(cfg config.Config) jail.Policy {
	return jail.Policy{
		Findtime:         cfg.Jail.Findtime,
		MaxRetry:         cfg.Jail.MaxRetry,
		Bantime:          cfg.Jail.Bantime,
		MaxBantime:       cfg.Jail.MaxBantime,
		Factor:           cfg.Jail.Factor,
		Weights:          Weights(cfg),
		NeverBan:         config.Prefixes(cfg.NeverBan),
		UnverifiedFactor: cfg.Jail.UnverifiedFactor,
		MaxOffenders:     cfg.Jail.MaxOffenders,
	}
}

// JailOptions maps the config onto the jail's options (no backend, no
// allowlist: New wires those).
func JailOptions(cfg config.Config) jail.Options {
	pol := Policy(cfg)
	return jail.Options{
		Findtime:         pol.Findtime,
		MaxRetry:         pol.MaxRetry,
		Bantime:          pol.Bantime,
		MaxBantime:       pol.MaxBantime,
		Factor:           pol.Factor,
		Weights:          pol.Weights,
		NeverBan:         pol.NeverBan,
		UnverifiedFactor: pol.UnverifiedFactor,
		MaxOffenders:     cfg.Jail.MaxOffenders,
		ResyncEvery:      cfg.Ban.ResyncInterval,
		V6Prefix:         cfg.Ban.V6Prefix,
		StateFile:        cfg.Jail.StateFile,
	}
}

// WhitelistOptions maps the whitelist section onto the whitelist's options
// (the caller adds its clock and registry).
func WhitelistOptions(cfg config.Config) whitelist.Options {
	return whitelist.Options{
		Static: config.Prefixes(cfg.Whitelist.Static),
		Grace:  Grace(cfg.Whitelist),
	}
}

// Grace maps whitelist.grace onto the whitelist's option, where 0 means
// the package default and a negative value none: in the config 0 is none.
func Grace(c config.Whitelist) time.Duration {
	if c.Grace == 0 {
		return -1
	}
	return c.Grace
}

// LogLocation is the time zone FreeSWITCH writes its log times in.
func LogLocation(c config.Logs) (*time.Location, error) {
	if c.Timezone == "" || c.Timezone == "Local" {
		return time.Local, nil
	}
	loc, err := time.LoadLocation(c.Timezone)
	if err != nil {
		return nil, fmt.Errorf("logs.timezone: %w", err)
	}
	return loc, nil
}

// SIPConfig maps the sip section onto the analyzer's config.
func SIPConfig(c config.SIP) sip.Config {
	sc := sip.DefaultConfig()
	if len(c.ScannerUserAgents) > 0 {
		sc.ScannerUserAgents = c.ScannerUserAgents
	}
	if len(c.TollPatterns) > 0 {
		sc.TollPatterns = c.TollPatterns
	}
	sc.FloodRequests = c.FloodRequests
	sc.FloodWindow = c.FloodWindow
	sc.ScanUsers = c.ScanUsers
	sc.ScanWindow = c.ScanWindow
	return sc
}
