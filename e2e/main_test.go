// Package e2e runs sipwarden against a real FreeSWITCH 1.11.1 (the runtime
// at $SIPWARDEN_FREESWITCH, default ../shared/freeswitch) in network
// namespaces: phones (sipp), an office behind NAT, SIPVicious and toll
// fraud, FreeSWITCH restarts and Event Socket faults. Every assertion is
// on what an operator sees: the kernel's set and DROP counters, the answers
// at the phones, sipwarden's API, metrics and `sipwarden check`.
//
// Run just this suite with
//
//	SIPWARDEN_FREESWITCH=../shared/freeswitch go test -run RealFreeSWITCH -v ./e2e/
package e2e

import (
	"os"
	"testing"

	"github.com/sipwarden/sipwarden/internal/fslab"
)

func TestMain(m *testing.M) { os.Exit(fslab.Main(m)) }
