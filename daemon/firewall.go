package daemon

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/ban"
	"github.com/sipwarden/sipwarden/config"
)

// newFirewall opens the configured ban backend.
func newFirewall(c config.Ban, reg prometheus.Registerer) (ban.Firewall, error) {
	switch c.Backend {
	case config.BackendDryRun:
		return ban.NewDryRun(ban.DryRunOptions{MaxElem: c.MaxElem}), nil
	case config.BackendIPSet:
		fw, err := ban.NewIPSet(ban.IPSetOptions{
			SetV4:    c.SetV4,
			SetV6:    c.SetV6,
			MaxElem:  c.MaxElem,
			V6Prefix: c.V6Prefix,
		})
		if err != nil {
			return nil, fmt.Errorf("ban backend ipset: %w (needs CAP_NET_ADMIN and the ip_set kernel module; use ban.backend: dry-run to only observe)", err)
		}
		return fw, nil
	}
	return nil, fmt.Errorf("ban.backend %q unknown", c.Backend)
}
