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
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/errgroup"

	"github.com/sipwarden/sipwarden/internal/api"
	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/eslwatch"
	"github.com/sipwarden/sipwarden/internal/ipset"
	"github.com/sipwarden/sipwarden/internal/jail"
	"github.com/sipwarden/sipwarden/internal/logwatch"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/pipeline"
	"github.com/sipwarden/sipwarden/internal/sip"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// Version is set by the linker (-X) at release builds.
var Version = "dev"

// NewLogger builds sipwarden's logger from the log section. Its level is
// read from level (nil: a fixed one), so a reload can change it.
func NewLogger(c config.Log, w io.Writer, level *slog.LevelVar) *slog.Logger {
	if level == nil {
		level = new(slog.LevelVar)
	}
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.Level)) // validated by config.Load
	level.Set(l)
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
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Namespace:   offense.Namespace,
		Name:        "build_info",
		Help:        "Build information; always 1.",
		ConstLabels: prometheus.Labels{"version": Version},
	}, func() float64 { return 1 })
	return reg
}

// Daemon is the wired set of components.
type Daemon struct {
	log   *slog.Logger
	level *slog.LevelVar // nil: log.level needs a restart
	reg   *prometheus.Registry
	mu    sync.Mutex    // guards reloads
	boot  config.Config // what was built; keys only a restart applies are compared with it
	cfg   config.Config // the last applied config
	pipe  *pipeline.Pipeline
	wl    *whitelist.Whitelist
	jail  *jail.Jail
	esl   *eslwatch.Watcher
	logs  *logwatch.Follower
	hep   *sip.HEPListener
	capt  *sip.Capture
	api   *api.Server
	fw    ban.Firewall
	refs  *refWatch // nil unless the backend reports rule references (ipset)
	state *stateDir // nil without jail.state_file
	// holdNote names the held credential bans in /readyz (nil: enforce)
	holdNote func() string
	holding  func() bool // nil: esl.down_policy enforce or no Event Socket
	backend  string      // what the ban path really uses (the fallback may differ from the config)
	closeMu  sync.Mutex
	closed   bool
	unrule   func() error // removes the iptables rules installed at start (ban.install_rule)
	// graduated response (protect.go)
	mappings      *ipset.Mappings
	unruleProtect func() error
}

// Options are the parts a caller may inject (tests, embedding).
type Options struct {
	Logger *slog.Logger
	// LogLevel is the level var the Logger's handler reads; with it a
	// reload applies log.level. Nil: log.level needs a restart.
	LogLevel *slog.LevelVar
	Registry *prometheus.Registry
	Stdin    io.Reader
	// Firewall replaces the configured backend (tests).
	Firewall ban.Firewall
}

// New builds every component the config asks for, binding listeners and
// opening the ban backend, so that a missing privilege or a busy port fails
// here with a one-line reason and nothing has started. On error everything
// opened so far is closed again (one path: the deferred close).
func New(cfg config.Config, o Options) (_ *Daemon, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = NewRegistry()
	}
	if o.Stdin == nil {
		o.Stdin = os.Stdin
	}
	d := &Daemon{boot: cfg, cfg: cfg, log: o.Logger, level: o.LogLevel, reg: o.Registry, backend: cfg.Ban.Backend}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	wopt := pipeline.WhitelistOptions(cfg)
	wopt.Registerer = d.reg
	d.wl = whitelist.New(wopt)

	d.fw = o.Firewall
	if d.fw == nil {
		d.fw, err = newFirewall(cfg.Ban, d.reg)
		if err != nil && cfg.Ban.Fallback == config.BackendDryRun {
			d.log.Warn("ban backend unavailable; running dry-run (ban.fallback): nothing will be banned in the kernel", "error", err)
			d.fw, err = newFirewall(config.Ban{Backend: config.BackendDryRun, MaxElem: cfg.Ban.MaxElem}, d.reg)
			d.backend = config.BackendDryRun + " (fallback)"
		}
		if err != nil {
			return nil, err
		}
	}
	if cfg.Ban.InstallRule && o.Firewall == nil {
		if err := d.installRules(cfg.Ban); err != nil {
			return nil, err
		}
	}
	pfw, err := d.newProtectFirewall(cfg, o.Firewall != nil)
	if err != nil {
		return nil, err
	}
	// The Event Socket watcher comes first: the jail holds every automatic
	// ban until the watcher's first listing is in the whitelist. It sends
	// nothing before Run, so its sink is the jail once the jail exists.
	toJail := &lateSink{}
	var synced <-chan struct{} // nil without a registration source: nothing to wait for
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
			Offenses:       toJail,
			OnRegister:     d.onRegister,
			Logger:         d.log,
			Registerer:     d.reg,
		})
		if err != nil {
			return nil, fmt.Errorf("esl: %w", err)
		}
		synced = d.esl.Synced()
	}
	d.pipe, err = pipeline.New(cfg, pipeline.Parts{
		Firewall:            d.fw,
		Allowlist:           d.wl,
		NeverBan:            nodePrefixes(cfg.ESL),
		RegistrationsSynced: synced,
		HoldCredentials:     d.holdCredentials(cfg),
		StateExtra:          d.wl,
		ProtectFirewall:     pfw,
		Accounts:            d.accounts,
		Registerer:          d.reg,
		Logger:              d.log,
	})
	switch {
	case errors.Is(err, ban.ErrBadState) && d.pipe != nil:
		// The state file was moved aside; the kernel sets still hold the bans.
		d.log.Error("state file unreadable; starting from the kernel's ban sets", "error", err)
		err = nil
	case err != nil:
		return nil, err
	}
	d.jail = d.pipe.Jail()
	toJail.s = d.pipe.Sink()

	if len(cfg.Logs.Files) > 0 {
		d.logs, err = logwatch.NewFollower(d.pipe.LogRules(logwatch.Options{
			Files:     cfg.Logs.Files,
			FromStart: cfg.Logs.FromStart,
			Poll:      cfg.Logs.PollInterval,
			Stdin:     o.Stdin,
		}, cfg.Logs))
		if err != nil {
			return nil, fmt.Errorf("logs: %w", err)
		}
	}
	if cfg.SIP.HEPListen != "" || cfg.SIP.CaptureInterface != "" {
		analyzer, err := d.pipe.SIPAnalyzer(nil, nil)
		if err != nil {
			return nil, err
		}
		if cfg.SIP.HEPListen != "" {
			d.hep, err = sip.NewHEPListener(cfg.SIP.HEPListen, analyzer, d.pipe.HEPOptions(), d.log, d.reg)
			if err != nil {
				return nil, fmt.Errorf("sip.hep_listen: %w", err)
			}
		}
		if cfg.SIP.CaptureInterface != "" {
			d.capt, err = sip.NewCapture(cfg.SIP.CaptureInterface, cfg.SIP.CapturePorts, analyzer, d.log, d.reg)
			if err != nil {
				return nil, fmt.Errorf("sip.capture_interface: %w", err)
			}
		}
	}
	banCheck := api.Check{Name: "ban", Ready: d.jail.Ready}
	if r, ok := d.fw.(referencer); ok {
		d.refs = newRefWatch(r, cfg.Ban.ResyncInterval, d.log, d.reg)
		banCheck.Note = d.refs.Note
	}
	checks := []api.Check{banCheck}
	if d.esl != nil {
		checks = append(checks, api.Check{Name: "esl", Ready: d.esl.Ready, Note: d.holdNote})
	}
	if d.logs != nil {
		checks = append(checks, api.Check{Name: "logs", Note: d.logs.Note})
	}
	if cfg.Jail.StateFile != "" {
		d.state = newStateDir(cfg.Jail.StateFile, time.Minute, d.log, d.reg)
		d.state.check() // at start: one clear line now, not a lost history at stop
		checks = append(checks, api.Check{Name: "state", Note: d.state.Note})
	}
	token, noToken, tokenNote := apiToken(cfg)
	backendInfo(d.reg, d.backend)
	d.api, err = api.New(api.Options{
		Listen:        cfg.API.Listen,
		MetricsListen: cfg.API.MetricsListen,
		Token:         token,
		NoTokenWhy:    noToken,
		DryRun:        strings.HasPrefix(d.backend, config.BackendDryRun),
		Nodes:         apiNodes(cfg.ESL),
		Whitelist:     d.wl,
		Jail:          d.jail,
		Protect:       protectView(d.pipe),
		Checks:        checks,
		Gatherer:      d.reg,
		Logger:        d.log,
	})
	if err != nil {
		return nil, err
	}
	tokenNote(d.log)
	return d, nil
}

// close releases what New opened: the sockets, the rules it installed and
// the ban backend. It runs once, on New's error or at the end of Run.
func (d *Daemon) close() {
	d.closeMu.Lock()
	defer d.closeMu.Unlock()
	if d.closed {
		return
	}
	d.closed = true
	if d.hep != nil {
		d.hep.Close()
	}
	if d.capt != nil {
		d.capt.Close()
	}
	if d.unrule != nil {
		if err := d.unrule(); err != nil {
			d.log.Error("removing the firewall rules", "error", err)
		}
	}
	if d.unruleProtect != nil {
		if err := d.unruleProtect(); err != nil {
			d.log.Error("removing the protect firewall rules", "error", err)
		}
	}
	if d.mappings != nil {
		d.mappings.Close()
	}
	if c, ok := d.fw.(io.Closer); ok {
		c.Close()
	}
}

// lateSink forwards to a sink set after it was handed out (before any
// offense flows).
type lateSink struct{ s offense.Sink }

func (l *lateSink) Offend(o offense.Offense) { l.s.Offend(o) }

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
	remove, err := ipset.InstallRules(ipset.RuleOptions{SetV4: c.SetV4, SetV6: c.SetV6, Ports: c.RulePorts})
	if err != nil {
		return fmt.Errorf("ban.install_rule: %w", err)
	}
	d.unrule = remove
	d.log.Info("firewall rules installed", "sets", c.SetV4+","+c.SetV6, "ports", fmt.Sprint(c.RulePorts))
	return nil
}

// APIAddr is where the API listens.
func (d *Daemon) APIAddr() net.Addr { return d.api.Addr() }

// Whitelist exposes the live whitelist (tests, embedding).
func (d *Daemon) Whitelist() *whitelist.Whitelist { return d.wl }

// Jail exposes the jail (tests, embedding).
func (d *Daemon) Jail() *jail.Jail { return d.jail }

// Run runs every component until ctx is cancelled or one fails.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.close()
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
	if d.refs != nil {
		run("ban-references", d.refs.Run)
	}
	if d.state != nil {
		run("state-dir", d.state.Run)
	}
	if d.holding != nil {
		run("down-policy", d.releaseOnSync)
	}
	if g := d.pipe.Guard(); g != nil {
		run("protect", g.Run)
	}
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
		"esl", strings.Join(d.boot.ESL.Nodes(), ","), "logs", len(d.boot.Logs.Files),
		"hep", d.boot.SIP.HEPListen, "capture", d.boot.SIP.CaptureInterface)
	err := g.Wait()
	d.log.Info("sipwarden stopped", "error", err)
	return err
}

// Reloaded says what a reload did, key by key (config.Diff paths).
type Reloaded struct {
	Applied      []string // changed and applied live
	NeedsRestart []string // changed, running on the old value until a restart
}

// live reports whether a changed key is applied by Reload.
func (d *Daemon) live(key string) bool {
	switch key {
	case "jail.findtime", "jail.maxretry", "jail.bantime", "jail.factor", "jail.maxbantime",
		"jail.unverified_factor", "jail.max_offenders", "never_ban", "whitelist.static", "whitelist.grace":
		return true
	case "log.level":
		return d.level != nil
	}
	return strings.HasPrefix(key, "rules.")
}

// Reload applies a new, validated config to what can change live: the jail
// policy (thresholds, rule weights — a rule disabled at start can be
// enabled —, never-ban), the static whitelist, its grace and the log level. Every
// other changed key is named in NeedsRestart, compared with the config the
// daemon was built from. On error nothing changed.
func (d *Daemon) Reload(cfg config.Config) (Reloaded, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var r Reloaded
	for _, k := range config.Diff(d.cfg, cfg) {
		if d.live(k) {
			r.Applied = append(r.Applied, k)
		}
	}
	for _, k := range config.Diff(d.boot, cfg) {
		if !d.live(k) {
			r.NeedsRestart = append(r.NeedsRestart, k)
		}
	}
	if err := d.pipe.SetPolicy(cfg); err != nil {
		return Reloaded{}, err
	}
	d.wl.SetStatic(config.Prefixes(cfg.Whitelist.Static))
	d.wl.SetGrace(pipeline.Grace(cfg.Whitelist))
	if d.level != nil {
		var l slog.Level
		_ = l.UnmarshalText([]byte(cfg.Log.Level)) // validated by config.Load
		d.level.Set(l)
	}
	d.cfg = cfg
	return r, nil
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
