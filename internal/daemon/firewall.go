package daemon

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/ipset"
)

// newFirewall opens the configured ban backend. Its error is the one line
// an operator reads when sipwarden refuses to start: it says what is missing
// and what to change.
func newFirewall(c config.Ban, reg prometheus.Registerer) (ban.Firewall, error) {
	switch c.Backend {
	case config.BackendDryRun:
		return ban.NewDryRun(ban.DryRunOptions{MaxElem: c.MaxElem}), nil
	case config.BackendIPSet:
		fw, err := ipset.New(ipset.Options{
			SetV4:    c.SetV4,
			SetV6:    c.SetV6,
			MaxElem:  c.MaxElem,
			V6Prefix: c.V6Prefix,
		})
		if errors.Is(err, syscall.EPERM) {
			// ban already says "(needs CAP_NET_ADMIN)"; say how to get it.
			return nil, fmt.Errorf("ban backend ipset: %w: run as root or grant CAP_NET_ADMIN (systemd AmbientCapabilities=CAP_NET_ADMIN) with the ip_set kernel module loaded; ban.fallback: dry-run starts without kernel bans", err)
		}
		if err != nil {
			return nil, fmt.Errorf("ban backend ipset: %w (needs CAP_NET_ADMIN and the ip_set kernel modules: modprobe ip_set_hash_ip ip_set_hash_net; ban.fallback: dry-run starts without kernel bans)", err)
		}
		return fw, nil
	}
	return nil, fmt.Errorf("ban.backend %q unknown", c.Backend)
}
