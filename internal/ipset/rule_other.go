//go:build !linux

package ipset

import "github.com/sipwarden/sipwarden/internal/ban"

// RuleOptions names the sets and ports of the DROP rules InstallRules
// writes.
type RuleOptions struct {
	SetV4, SetV6 string
	Ports        []int
	Chain        string
}

// InstallRules needs Linux.
func InstallRules(RuleOptions) (func() error, error) { return nil, ban.ErrNotSupported }
