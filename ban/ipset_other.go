//go:build !linux

package ban

import (
	"context"
	"net/netip"
	"time"
)

// Ipset is the kernel backend; it exists only on Linux.
type Ipset struct{}

// NewIpset returns ErrNotSupported off Linux.
func NewIpset(IpsetOptions) (*Ipset, error) { return nil, ErrNotSupported }

func (*Ipset) Add(context.Context, netip.Prefix, time.Duration) error { return ErrNotSupported }
func (*Ipset) Del(context.Context, netip.Prefix) error                { return ErrNotSupported }
func (*Ipset) List(context.Context) ([]Entry, error)                  { return nil, ErrNotSupported }
func (*Ipset) Ensure(context.Context) (int, error)                    { return 0, ErrNotSupported }
func (*Ipset) Check(context.Context) error                            { return ErrNotSupported }
func (*Ipset) Destroy() error                                         { return ErrNotSupported }
func (*Ipset) Close() error                                           { return nil }

func (*Ipset) AddBatch(context.Context, []Entry, []error) error { return ErrNotSupported }
func (*Ipset) Flush() error                                     { return ErrNotSupported }
