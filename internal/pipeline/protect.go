package pipeline

import (
	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/jail"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/protect"
)

// protector hands the jail's protected offenses to the guard with the
// jail's bantime and escalation.
type protector struct{ g *protect.Guard }

func (p protector) Protected(o offense.Offense, pol jail.Policy) {
	p.g.Offend(o, protect.Ladder{Bantime: pol.Bantime, MaxBantime: pol.MaxBantime, Factor: pol.Factor})
}

// newGuard builds the graduated response of cfg.protect, nil when disabled.
func newGuard(cfg config.Config, parts Parts) (*protect.Guard, error) {
	if cfg.Protect.Disabled {
		return nil, nil
	}
	o := config.ProtectOptions(cfg)
	o.Firewall = parts.ProtectFirewall
	o.Accounts = parts.Accounts
	o.Logger = parts.Logger
	o.Registerer = parts.Registerer
	o.Now = parts.Now
	return protect.New(o)
}

// Guard is the graduated response for protected addresses; nil when
// protect.disabled.
func (p *Pipeline) Guard() *protect.Guard { return p.guard }
