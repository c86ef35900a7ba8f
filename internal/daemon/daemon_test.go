package daemon

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/testenv"
)

func testConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.ESL.Disabled = true
	cfg.SIP.HEPListen = ""
	cfg.Ban.Backend = config.BackendDryRun
	cfg.API.Listen = "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A failure late in New (the API port is taken) releases everything opened
// before it: the HEP socket can be bound again at once, and the capture
// socket is closed too — no descriptor is left behind.
func TestNewReleasesOnError(t *testing.T) {
	for _, tc := range []struct {
		name    string
		capture bool
	}{{"hep", false}, {"hep and capture", true}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.capture {
				testenv.Root(t)
			}
			hep, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			hepAddr := hep.LocalAddr().String()
			hep.Close()
			busy, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer busy.Close()

			cfg := testConfig(t)
			cfg.SIP.HEPListen = hepAddr
			cfg.API.Listen = busy.Addr().String()
			if tc.capture {
				cfg.SIP.CaptureInterface = "lo"
			}
			before := openFDs(t)
			if d, err := New(cfg, Options{}); err == nil {
				d.close()
				t.Fatal("New succeeded with the API port taken")
			}
			if after := openFDs(t); after != before {
				t.Errorf("%d descriptors open after a failed New, %d before", after, before)
			}
			again, err := net.ListenPacket("udp", hepAddr)
			if err != nil {
				t.Fatalf("HEP socket still held after New failed: %v", err)
			}
			again.Close()
		})
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("needs /proc/self/fd: %v", err)
	}
	return len(ents)
}

// Reload applies the jail policy and the log level, and names every other
// changed key, again on the next reload (it still runs on the old value).
func TestReload(t *testing.T) {
	cfg := testConfig(t)
	level := new(slog.LevelVar)
	d, err := New(cfg, Options{LogLevel: level})
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()

	next := cfg
	next.Jail.MaxRetry = 3
	next.Log.Level = "debug"
	next.Log.Format = "json"
	next.Whitelist.Grace = 2 * time.Minute
	next.API.Listen = "127.0.0.1:1"
	r, err := d.Reload(next)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Applied, []string{"jail.maxretry", "log.level", "whitelist.grace"}) {
		t.Errorf("applied %v", r.Applied)
	}
	if !slices.Equal(r.NeedsRestart, []string{"api.listen", "log.format"}) {
		t.Errorf("needs restart %v", r.NeedsRestart)
	}
	if got := d.Jail().Policy().MaxRetry; got != 3 {
		t.Errorf("maxretry %v after reload", got)
	}
	if got := d.Whitelist().Grace(); got != 2*time.Minute {
		t.Errorf("whitelist grace %v after reload", got)
	}
	if level.Level() != slog.LevelDebug {
		t.Errorf("log level %v after reload", level.Level())
	}

	r, err = d.Reload(next)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Applied) != 0 || !slices.Equal(r.NeedsRestart, []string{"api.listen", "log.format"}) {
		t.Errorf("second reload: %+v", r)
	}

	// Without a level var, log.level is not applied but named.
	d2, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.close()
	r, err = d2.Reload(next)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(r.NeedsRestart, "log.level") || slices.Contains(r.Applied, "log.level") {
		t.Errorf("log.level without a level var: %+v", r)
	}
}

// Every component registers its collectors once, on the daemon's registry,
// under the one namespace; the sources share parse_errors_total by label.
func TestMetricsOneRegistry(t *testing.T) {
	cfg := testConfig(t)
	cfg.ESL.Disabled = false
	cfg.ESL.Address = "127.0.0.1:1" // New does not dial
	cfg.SIP.HEPListen = "127.0.0.1:0"
	cfg.Logs.Files = []string{filepath.Join(t.TempDir(), "freeswitch.log")}
	reg := NewRegistry()
	d, err := New(cfg, Options{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]bool{}
	for _, f := range families {
		name := f.GetName()
		if !strings.HasPrefix(name, offense.Namespace+"_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s outside the %s namespace", name, offense.Namespace)
		}
		if name == offense.Namespace+"_parse_errors_total" {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "source" {
						sources[l.GetValue()] = true
					}
				}
			}
		}
	}
	for _, s := range []offense.Source{offense.SourceLog, offense.SourceESL, offense.SourceHEP, offense.SourceCapture, offense.SourcePCAP} {
		if !sources[string(s)] {
			t.Errorf("parse_errors_total has no source %q: %v", s, sources)
		}
	}
}
