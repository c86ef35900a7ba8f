package examples_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/logwatch"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/sip"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

type learned struct {
	mu   sync.Mutex
	regs map[string]int // "ip user" -> 200 OKs seen
}

func (l *learned) Upsert(r whitelist.Registration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.regs[r.IP.String()+" "+r.User]++
}

// TestLabDataThroughParsers feeds the lab night to sipwarden's own log
// parser and SIP analyzer: every scenario must produce the evidence the
// README promises, and the capture must teach the office's registrations.
func TestLabDataThroughParsers(t *testing.T) {
	type key struct {
		ip   string
		src  offense.Source
		rule offense.Rule
	}
	var mu sync.Mutex
	got := map[key]int{}
	sink := offense.SinkFunc(func(o offense.Offense) {
		mu.Lock()
		got[key{o.IP.String(), o.Source, o.Rule}]++
		mu.Unlock()
	})

	f, err := os.Open("lab/freeswitch.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := logwatch.NewParser(func() time.Time { return time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC) })
	if _, err := logwatch.Scan(context.Background(), f, p, sink, nil); err != nil {
		t.Fatal(err)
	}
	if p.Errors() != 0 {
		t.Errorf("log parser: %d errors on the lab log", p.Errors())
	}

	regs := &learned{regs: map[string]int{}}
	a, err := sip.NewAnalyzer(sip.Options{Config: sip.DefaultConfig(), Sink: sink, Registrations: regs, InferServers: true})
	if err != nil {
		t.Fatal(err)
	}
	g, err := os.Open("lab/night.pcap")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if n, err := sip.ReadCapture(context.Background(), g, a, sip.CaptureOptions{}); err != nil || n != 832 {
		t.Fatalf("ReadCapture: %d packets, %v; want 832", n, err)
	}

	for k, min := range map[key]int{
		{"203.0.113.10", offense.SourceLog, offense.AuthFailure}:        12, // phone 1003
		{"203.0.113.10", offense.SourcePCAP, offense.AuthFailure}:       12,
		{"198.51.100.23", offense.SourceLog, offense.AuthFailure}:       30,
		{"198.51.100.23", offense.SourceLog, offense.UnknownUser}:       15,
		{"198.51.100.44", offense.SourceLog, offense.ACLReject}:         30,
		{"198.51.100.66", offense.SourcePCAP, offense.ScannerUserAgent}: 1,
		{"198.51.100.66", offense.SourcePCAP, offense.ExtensionScan}:    1,
		{"198.51.100.77", offense.SourcePCAP, offense.TollFraudInvite}:  8,
		{"198.51.100.88", offense.SourcePCAP, offense.Flood}:            1,
	} {
		if got[k] < min {
			t.Errorf("%s %s %s: %d offenses, want at least %d", k.ip, k.src, k.rule, got[k], min)
		}
	}
	for _, r := range []string{"203.0.113.10 1000", "203.0.113.10 1001", "203.0.113.10 1002", "2001:db8::20 1005"} {
		if regs.regs[r] == 0 {
			t.Errorf("registration %s not learned from the capture (learned: %v)", r, regs.regs)
		}
	}
	if regs.regs["203.0.113.10 1003"] != 0 {
		t.Error("phone 1003 (403 Forbidden) learned as a registration")
	}
}
