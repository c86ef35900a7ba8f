package logwatch

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// pollable returns a version of f whose reads a deadline can interrupt, so
// that Run returns on cancel while stdin (a pipe from journalctl) is idle.
// A blocking descriptor is duplicated and made non-blocking (which the
// duplicate shares with f) so that Go's poller manages it.
func pollable(f *os.File) (*os.File, error) {
	if err := f.SetReadDeadline(time.Time{}); err == nil {
		return f, nil
	}
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set %s non-blocking: %w", f.Name(), err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}
