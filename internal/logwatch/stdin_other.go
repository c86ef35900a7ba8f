//go:build !linux

package logwatch

import (
	"errors"
	"os"
	"time"
)

// ErrNotSupported: stdin cannot be made interruptible on this system.
var ErrNotSupported = errors.New("logwatch: not supported on this system")

// pollable returns f when a deadline can interrupt its reads, else
// ErrNotSupported (Run then waits for stdin's next line or end on cancel).
func pollable(f *os.File) (*os.File, error) {
	if err := f.SetReadDeadline(time.Time{}); err == nil {
		return f, nil
	}
	return nil, ErrNotSupported
}
