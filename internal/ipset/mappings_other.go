//go:build !linux

package ipset

import (
	"context"
	"net/netip"
	"time"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/protect"
)

// Mappings is the kernel backend of internal/protect; it exists only on Linux.
type Mappings struct{}

// NewMappings returns ban.ErrNotSupported off Linux.
func NewMappings(MappingOptions) (*Mappings, error) { return nil, ban.ErrNotSupported }

func (*Mappings) AddMapping(context.Context, protect.Mapping, time.Duration) error {
	return ban.ErrNotSupported
}
func (*Mappings) DelMapping(context.Context, protect.Mapping) error { return ban.ErrNotSupported }
func (*Mappings) AddThrottle(context.Context, netip.Addr, time.Duration) error {
	return ban.ErrNotSupported
}
func (*Mappings) DelThrottle(context.Context, netip.Addr) error { return ban.ErrNotSupported }
func (*Mappings) Ensure(context.Context) (int, error)           { return 0, ban.ErrNotSupported }
func (*Mappings) Check(context.Context) error                   { return ban.ErrNotSupported }
func (*Mappings) Destroy() error                                { return ban.ErrNotSupported }
func (*Mappings) Close() error                                  { return nil }

// MappingRuleOptions names the sets, ports and limits of the rules.
type MappingRuleOptions struct {
	QuarantineV4, QuarantineV6, ThrottleV4, ThrottleV6 string
	Ports                                              []int
	Chain                                              string
	Rate, Burst                                        int
}

// InstallMappingRules needs Linux.
func InstallMappingRules(MappingRuleOptions) (func() error, error) { return nil, ban.ErrNotSupported }
