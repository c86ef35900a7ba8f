//go:build !linux

package ipset

import (
	"context"
	"net/netip"
	"time"

	"github.com/sipwarden/sipwarden/internal/ban"
)

// Set is the kernel backend; it exists only on Linux.
type Set struct{}

// New returns ban.ErrNotSupported off Linux.
func New(Options) (*Set, error) { return nil, ban.ErrNotSupported }

func (*Set) Add(context.Context, netip.Prefix, time.Duration) error { return ban.ErrNotSupported }
func (*Set) Del(context.Context, netip.Prefix) error                { return ban.ErrNotSupported }
func (*Set) List(context.Context) ([]ban.Entry, error)              { return nil, ban.ErrNotSupported }
func (*Set) Ensure(context.Context) (int, error)                    { return 0, ban.ErrNotSupported }
func (*Set) Check(context.Context) error                            { return ban.ErrNotSupported }
func (*Set) Destroy() error                                         { return ban.ErrNotSupported }
func (*Set) Close() error                                           { return nil }

func (*Set) AddBatch(context.Context, []ban.Entry, []error) error { return ban.ErrNotSupported }
func (*Set) Flush() error                                         { return ban.ErrNotSupported }

func (*Set) References(context.Context) (map[string]uint32, error) { return nil, ban.ErrNotSupported }
