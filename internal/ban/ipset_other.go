//go:build !linux

package ban

import (
	"context"
	"net/netip"
	"time"
)

// IPSet is the kernel backend; it exists only on Linux.
type IPSet struct{}

// NewIPSet returns ErrNotSupported off Linux.
func NewIPSet(IPSetOptions) (*IPSet, error) { return nil, ErrNotSupported }

func (*IPSet) Add(context.Context, netip.Prefix, time.Duration) error { return ErrNotSupported }
func (*IPSet) Del(context.Context, netip.Prefix) error                { return ErrNotSupported }
func (*IPSet) List(context.Context) ([]Entry, error)                  { return nil, ErrNotSupported }
func (*IPSet) Ensure(context.Context) (int, error)                    { return 0, ErrNotSupported }
func (*IPSet) Check(context.Context) error                            { return ErrNotSupported }
func (*IPSet) Destroy() error                                         { return ErrNotSupported }
func (*IPSet) Close() error                                           { return nil }

func (*IPSet) AddBatch(context.Context, []Entry, []error) error { return ErrNotSupported }
func (*IPSet) Flush() error                                     { return ErrNotSupported }
