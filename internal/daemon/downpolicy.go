package daemon

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/offense"
)

// holdCredentials is esl.down_policy: with "hold" and an Event Socket
// watch, credential-class bans wait while any node is not synced (its
// offices' registrations are not refreshed, so an office could be banned
// for one phone's password). nil: "enforce", or no Event Socket.
func (d *Daemon) holdCredentials(cfg config.Config) func() bool {
	if d.esl == nil || cfg.ESL.DownPolicy != "hold" {
		return nil
	}
	hold := func() bool {
		_, ok := d.esl.Ready()
		return !ok
	}
	promauto.With(d.reg).NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: offense.Namespace, Subsystem: "esl", Name: "credential_bans_held",
		Help: "1 while esl.down_policy: hold holds credential-class bans (auth_failure, unknown_user, auth_challenge) because an Event Socket node is not synced.",
	}, func() float64 {
		if hold() {
			return 1
		}
		return 0
	})
	d.holdNote = func() string {
		if hold() {
			return "credential-class bans held until the Event Socket is synced (esl.down_policy: hold); scanner, toll-fraud and flood bans apply"
		}
		return ""
	}
	d.holding = hold
	return hold
}

// releaseOnSync decides the held credential crossings within a second of
// every node being synced again, not at the jail's next sweep.
func (d *Daemon) releaseOnSync(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	was := d.holding()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			now := d.holding()
			if was && !now {
				d.jail.ReleaseHeld()
			}
			was = now
		}
	}
}
