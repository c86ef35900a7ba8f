//go:build !unix

package sip

import "time"

func cpuTime() time.Duration { return 0 }
