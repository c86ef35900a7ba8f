//go:build unix

package sip

import (
	"syscall"
	"time"
)

// cpuTime is the process's user+system CPU time: benchmarks report msgs per
// CPU-second too, which stays meaningful on a loaded machine where wall time
// does not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
