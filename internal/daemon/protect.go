package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/sipwarden/sipwarden/internal/api"
	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/ipset"
	"github.com/sipwarden/sipwarden/internal/pipeline"
	"github.com/sipwarden/sipwarden/internal/protect"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// newProtectFirewall opens the quarantine and throttle sets when the ban
// path is the kernel's (ipset), and keeps them in memory otherwise (dry-run,
// the fallback, an injected firewall). nil when protect is disabled.
func (d *Daemon) newProtectFirewall(cfg config.Config, injected bool) (protect.Firewall, error) {
	if cfg.Protect.Disabled {
		return nil, nil
	}
	if injected || d.backend != config.BackendIPSet {
		return protect.NewDryRun(), nil
	}
	m, err := ipset.NewMappings(ipset.MappingOptions{
		QuarantineV4: cfg.Protect.QuarantineV4, QuarantineV6: cfg.Protect.QuarantineV6,
		ThrottleV4: cfg.Protect.ThrottleV4, ThrottleV6: cfg.Protect.ThrottleV6, MaxElem: cfg.Ban.MaxElem,
	})
	if err != nil {
		return nil, fmt.Errorf("protect: %w", err)
	}
	d.mappings = m
	if cfg.Ban.InstallRule {
		remove, err := ipset.InstallMappingRules(ipset.MappingRuleOptions{
			QuarantineV4: cfg.Protect.QuarantineV4, QuarantineV6: cfg.Protect.QuarantineV6,
			ThrottleV4: cfg.Protect.ThrottleV4, ThrottleV6: cfg.Protect.ThrottleV6,
			Ports: cfg.Ban.RulePorts, Rate: cfg.Protect.ThrottleRate, Burst: cfg.Protect.ThrottleBurst,
		})
		if err != nil {
			return nil, fmt.Errorf("ban.install_rule (protect): %w", err)
		}
		d.unruleProtect = remove
		d.log.Info("protect rules installed", "quarantine", cfg.Protect.QuarantineV4+","+cfg.Protect.QuarantineV6,
			"throttle", cfg.Protect.ThrottleV4+","+cfg.Protect.ThrottleV6, "rate", cfg.Protect.ThrottleRate)
	}
	return m, nil
}

// accounts names the users registered at ip (the whitelist's view).
func (d *Daemon) accounts(ip netip.Addr) []string {
	e, ok := d.wl.Lookup(ip)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(e.Registrations))
	for _, r := range e.Registrations {
		out = append(out, r.User)
	}
	return out
}

// onRegister lifts, at once, what a registration vouches for.
// The jail's ban on the address goes when all its evidence was
// credential-class; the guard's quarantines and throttles likewise.
func (d *Daemon) onRegister(r whitelist.Registration) {
	if d.pipe == nil {
		return
	}
	if j := d.pipe.Jail(); j != nil {
		ctx, cancel := context.WithTimeout(context.Background(), registerLiftTimeout)
		j.Registered(ctx, r.IP)
		cancel()
	}
	if d.pipe.Guard() != nil {
		d.pipe.Guard().Registered(r.IP, r.User)
	}
}

// registerLiftTimeout bounds the kernel delete of a lift on registration
// (the Event Socket reader waits for it).
const registerLiftTimeout = 5 * time.Second

// protectView is the guard for the API; a nil interface when disabled.
func protectView(p *pipeline.Pipeline) api.Protect {
	if g := p.Guard(); g != nil {
		return g
	}
	return nil
}
