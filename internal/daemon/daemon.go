// Package daemon wires sipwarden's components from a validated config and
// owns their lifecycle: every long-running part runs under one errgroup and
// stops when the context is cancelled. Data flows one way — sources ->
// offenses -> jail -> decision (asks the whitelist) -> ban backend — and the
// HTTP API and metrics only observe.
//
// It holds no detection or ban logic of its own.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/sipwarden/sipwarden/internal/api"
	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/eslwatch"
	"github.com/sipwarden/sipwarden/internal/logwatch"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/sip"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// Version is set by the linker (-X) at release builds.
var Version = "dev"

// NewLogger builds sipwarden's logger from the log section.
func NewLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// NewRegistry returns a registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace:   "sipwarden",
		Name:        "build_info",
		Help:        "Build information; always 1.",
		ConstLabels: prometheus.Labels{"version": Version},
	}, func() float64 { return 1 }))
	return reg
}

// Daemon is the wired set of components.
type Daemon struct {
	cfg     config.Config
	log     *slog.Logger
	reg     *prometheus.Registry
	mu      sync.Mutex // guards reloads
	wl      *whitelist.Whitelist
	jail    *ban.Jail
	esl     *eslwatch.Watcher
	logs    *logwatch.Follower
	sipA    *sip.Analyzer
	hep     *sip.HEPListener
	capt    *sip.Capture
	api     *api.Server
	fw      ban.Firewall
	backend string // what the ban path really uses (the fallback may differ from the config)
	// unrule removes the iptables rules installed at start (ban.install_rule).
	unrule func() error
}

// Options are the parts a caller may inject (tests, embedding).
type Options struct {
	Logger   *slog.Logger
	Registry *prometheus.Registry
	Stdin    io.Reader
	// Firewall replaces the configured backend (tests).
	Firewall ban.Firewall
}

// New builds every component the config asks for, binding listeners and
// opening the ban backend, so that a missing privilege or a busy port fails
// here with a one-line reason and nothing has started.
func New(cfg config.Config, o Options) (*Daemon, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = NewRegistry()
	}
	if o.Stdin == nil {
		o.Stdin = os.Stdin
	}
	d := &Daemon{cfg: cfg, log: o.Logger, reg: o.Registry, backend: cfg.Ban.Backend}
	d.wl = whitelist.New(whitelist.Options{
		Static:     config.Prefixes(cfg.Whitelist.Static),
		Grace:      Grace(cfg.Whitelist),
		Registerer: d.reg,
	})

	fw := o.Firewall
	if fw == nil {
		var err error
		fw, err = newFirewall(cfg.Ban, d.reg)
		if err != nil && cfg.Ban.Fallback == config.BackendDryRun {
			d.log.Warn("ban backend unavailable; running dry-run (ban.fallback): nothing will be banned in the kernel", "error", err)
			fw, err = newFirewall(config.Ban{Backend: config.BackendDryRun, MaxElem: cfg.Ban.MaxElem}, d.reg)
			d.backend = config.BackendDryRun + " (fallback)"
		}
		if err != nil {
			return nil, err
		}
	}
	d.fw = fw
	if cfg.Ban.InstallRule && o.Firewall == nil {
		if err := d.installRules(cfg.Ban); err != nil {
			d.closeFirewall()
			return nil, err
		}
	}
	jopt := JailOptions(cfg)
	jopt.Allowlist = d.wl
	jopt.Firewall = fw
	jopt.Logger = d.log
	jopt.Registerer = d.reg
	jopt.NeverBan = append(jopt.NeverBan, nodePrefixes(cfg.ESL)...)
	jail, err := ban.NewJail(jopt)
	switch {
	case errors.Is(err, ban.ErrBadState) && jail != nil:
		// The state file was moved aside; the kernel sets still hold the bans.
		d.log.Error("state file unreadable; starting from the kernel's ban sets", "error", err)
	case err != nil:
		d.closeFirewall()
		return nil, err
	}
	d.jail = jail
	sink := RuleFilter(cfg, jail)

	if !cfg.ESL.Disabled {
		d.esl, err = eslwatch.New(eslwatch.Options{
			Addresses:      cfg.ESL.Nodes(),
			Password:       cfg.ESL.Password,
			DialTimeout:    cfg.ESL.DialTimeout,
			CommandTimeout: cfg.ESL.CommandTimeout,
			ResyncEvery:    cfg.ESL.ResyncInterval,
			BackoffMin:     cfg.ESL.BackoffMin,
			BackoffMax:     cfg.ESL.BackoffMax,
			MaxFrame:       cfg.ESL.MaxFrameBytes,
			Profiles:       cfg.ESL.Profiles,
			Whitelist:      d.wl,
			Offenses:       sink,
			Logger:         d.log,
			Registerer:     d.reg,
		})
		if err != nil {
			d.closeFirewall()
			return nil, fmt.Errorf("esl: %w", err)
		}
	}
	if len(cfg.Logs.Files) > 0 {
		loc, err := LogLocation(cfg.Logs)
		if err != nil {
			d.closeFirewall()
			return nil, err
		}
		d.logs, err = logwatch.NewFollower(logwatch.Options{
			Files:          cfg.Logs.Files,
			FromStart:      cfg.Logs.FromStart,
			PublicContexts: cfg.Logs.PublicContexts,
			Location:       loc,
			MaxLine:        cfg.Logs.MaxLineBytes,
			Poll:           cfg.Logs.PollInterval,
			Stdin:          o.Stdin,
			Sink:           sink,
			Logger:         d.log,
			Registerer:     d.reg,
		})
		if err != nil {
			d.closeFirewall()
			return nil, fmt.Errorf("logs: %w", err)
		}
	}
	if cfg.SIP.HEPListen != "" || cfg.SIP.CaptureInterface != "" {
		d.sipA, err = sip.NewAnalyzer(sip.Options{
			Config:     SIPConfig(cfg.SIP),
			Sink:       sink,
			Logger:     d.log,
			Registerer: d.reg,
		})
		if err != nil {
			d.closeFirewall()
			return nil, fmt.Errorf("sip: %w", err)
		}
	}
	if cfg.SIP.HEPListen != "" {
		d.hep, err = sip.NewHEPListener(cfg.SIP.HEPListen, d.sipA, d.log, d.reg)
		if err != nil {
			d.closeFirewall()
			return nil, fmt.Errorf("sip.hep_listen: %w", err)
		}
	}
	if cfg.SIP.CaptureInterface != "" {
		d.capt, err = sip.NewCapture(cfg.SIP.CaptureInterface, cfg.SIP.CapturePorts, d.sipA, d.log, d.reg)
		if err != nil {
			d.closeAll()
			return nil, fmt.Errorf("sip.capture_interface: %w", err)
		}
	}
	checks := []api.Check{{Name: "ban", Ready: d.jail.Ready}}
	if d.esl != nil {
		checks = append(checks, api.Check{Name: "esl", Ready: d.esl.Ready})
	}
	d.api, err = api.New(api.Options{
		Listen:    cfg.API.Listen,
		Token:     cfg.API.Token,
		Whitelist: d.wl,
		Jail:      d.jail,
		Checks:    checks,
		Gatherer:  d.reg,
		Logger:    d.log,
	})
	if err != nil {
		d.closeAll()
		return nil, err
	}
	return d, nil
}

func (d *Daemon) closeFirewall() {
	if d.unrule != nil {
		if err := d.unrule(); err != nil {
			d.log.Error("removing the firewall rules", "error", err)
		}
		d.unrule = nil
	}
	if c, ok := d.fw.(io.Closer); ok {
		c.Close()
	}
}

// installRules makes sure the sets exist, then inserts the DROP rules.
func (d *Daemon) installRules(c config.Ban) error {
	if e, ok := d.fw.(ban.Ensurer); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := e.Ensure(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("ban.install_rule: %w", err)
		}
	}
	remove, err := ban.InstallRules(ban.RuleOptions{SetV4: c.SetV4, SetV6: c.SetV6, Ports: c.RulePorts})
	if err != nil {
		return fmt.Errorf("ban.install_rule: %w", err)
	}
	d.unrule = remove
	d.log.Info("firewall rules installed", "sets", c.SetV4+","+c.SetV6, "ports", fmt.Sprint(c.RulePorts))
	return nil
}

func (d *Daemon) closeAll() {
	if d.hep != nil {
		d.hep.Close()
	}
	d.closeFirewall()
}

// APIAddr is where the API listens.
func (d *Daemon) APIAddr() net.Addr { return d.api.Addr() }

// Whitelist exposes the live whitelist (tests, embedding).
func (d *Daemon) Whitelist() *whitelist.Whitelist { return d.wl }

// Jail exposes the jail (tests, embedding).
func (d *Daemon) Jail() *ban.Jail { return d.jail }

// Run runs every component until ctx is cancelled or one fails.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.closeFirewall()
	g, ctx := errgroup.WithContext(ctx)
	run := func(name string, f func(context.Context) error) {
		g.Go(func() error {
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	run("whitelist", d.wl.Run)
	run("jail", d.jail.Run)
	run("api", d.api.Run)
	if d.esl != nil {
		run("esl", d.esl.Run)
	}
	if d.logs != nil {
		run("logs", d.logs.Run)
	}
	if d.hep != nil {
		run("hep", d.hep.Run)
	}
	if d.capt != nil {
		run("capture", d.capt.Run)
	}
	d.log.Info("sipwarden running", "api", d.api.Addr().String(), "ban_backend", d.backend,
		"esl", strings.Join(d.cfg.ESL.Nodes(), ","), "logs", len(d.cfg.Logs.Files),
		"hep", d.cfg.SIP.HEPListen, "capture", d.cfg.SIP.CaptureInterface)
	err := g.Wait()
	d.log.Info("sipwarden stopped", "error", err)
	return err
}

// Reload applies a new, validated config to what can change live: jail
// thresholds, weights and never-ban list, and the static whitelist. It
// returns the keys whose change needs a restart; on error nothing changed.
func (d *Daemon) Reload(cfg config.Config) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	jopt := JailOptions(cfg)
	if err := d.jail.SetPolicy(ban.Policy{
		Findtime:         jopt.Findtime,
		MaxRetry:         jopt.MaxRetry,
		Bantime:          jopt.Bantime,
		MaxBantime:       jopt.MaxBantime,
		Factor:           jopt.Factor,
		Weights:          jopt.Weights,
		NeverBan:         append(jopt.NeverBan, nodePrefixes(cfg.ESL)...),
		UnverifiedFactor: jopt.UnverifiedFactor,
	}); err != nil {
		return nil, fmt.Errorf("jail policy: %w", err)
	}
	d.wl.SetStatic(config.Prefixes(cfg.Whitelist.Static))
	var restart []string
	old := d.cfg
	if fmt.Sprint(old.ESL) != fmt.Sprint(cfg.ESL) {
		restart = append(restart, "esl")
	}
	if fmt.Sprint(old.Logs) != fmt.Sprint(cfg.Logs) {
		restart = append(restart, "logs")
	}
	if fmt.Sprint(old.SIP) != fmt.Sprint(cfg.SIP) {
		restart = append(restart, "sip")
	}
	if fmt.Sprint(old.Ban) != fmt.Sprint(cfg.Ban) {
		restart = append(restart, "ban")
	}
	if old.API != cfg.API {
		restart = append(restart, "api")
	}
	d.cfg = cfg
	return restart, nil
}

// JailOptions maps the config onto the jail's options (no backend, no
// allowlist: the caller wires those).
func JailOptions(cfg config.Config) ban.Options {
	// Rules the config does not weigh keep the jail's DefaultWeights.
	w, disabled := cfg.RuleWeights()
	for r := range disabled {
		w[r] = 0 // RuleFilter drops them before the jail; never score them either
	}
	return ban.Options{
		Findtime:         cfg.Jail.Findtime,
		MaxRetry:         cfg.Jail.MaxRetry,
		Bantime:          cfg.Jail.Bantime,
		MaxBantime:       cfg.Jail.MaxBantime,
		Factor:           cfg.Jail.Factor,
		Weights:          w,
		MaxOffenders:     cfg.Jail.MaxOffenders,
		UnverifiedFactor: cfg.Jail.UnverifiedFactor,
		ResyncEvery:      cfg.Ban.ResyncInterval,
		NeverBan:         config.Prefixes(cfg.NeverBan),
		V6Prefix:         cfg.Ban.V6Prefix,
		StateFile:        cfg.Jail.StateFile,
	}
}

// Grace maps whitelist.grace onto the whitelist's option, where 0 means
// the default and a negative value none.
func Grace(c config.Whitelist) time.Duration {
	if c.Grace == 0 {
		return -1
	}
	return c.Grace
}

// RuleFilter drops the offenses of rules switched off in the config before
// they reach the jail (auth_challenge is off unless enabled: every
// legitimate login is challenged once).
func RuleFilter(cfg config.Config, next offense.Sink) offense.Sink {
	_, disabled := cfg.RuleWeights()
	if len(disabled) == 0 {
		return next
	}
	return offense.SinkFunc(func(o offense.Offense) {
		if !disabled[o.Rule] {
			next.Offend(o)
		}
	})
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

// nodePrefixes returns the FreeSWITCH nodes' addresses: they are never
// banned (a resolvable name is looked up once at start).
func nodePrefixes(e config.ESL) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range e.Nodes() {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			ip = ip.Unmap()
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		cancel()
		if err != nil {
			continue
		}
		for _, ip := range ips {
			ip = ip.Unmap()
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	return out
}
