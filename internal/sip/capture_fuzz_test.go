package sip

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// FuzzReadCapture: whole pcap/pcapng files, truncated or corrupted, are
// read or refused with an error; never a panic or a hang.
func FuzzReadCapture(f *testing.F) {
	for _, p := range []string{"testdata/office_roam_wire.pcap", "testdata/office_roam_hep.pcap",
		"../../examples/lab/night.pcap"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b[:min(len(b), 4096)])
		}
	}
	f.Add([]byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0})
	f.Add([]byte{0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0})
	a, err := NewAnalyzer(Options{Config: DefaultConfig(), Sink: offense.SinkFunc(func(offense.Offense) {}), Registerer: prometheus.NewRegistry()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !IsCapture(data) {
			return
		}
		ReadCapture(context.Background(), bytes.NewReader(data), a, CaptureOptions{HEP: &HEPOptions{Allow: allowAll}})
	})
}
