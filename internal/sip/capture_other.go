//go:build !linux

package sip

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Capture is live capture; it exists only on Linux.
type Capture struct{}

// NewCapture returns ErrNotSupported outside Linux.
func NewCapture(iface string, ports []int, a *Analyzer, log *slog.Logger, reg prometheus.Registerer) (*Capture, error) {
	return nil, fmt.Errorf("live capture on %s: %w", iface, ErrNotSupported)
}

// Run returns ErrNotSupported.
func (c *Capture) Run(ctx context.Context) error { return ErrNotSupported }

// Close does nothing.
func (c *Capture) Close() error { return nil }
