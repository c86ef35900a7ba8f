package resilience_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCorruptStateFileAtStart: a ban written to the kernel by a previous
// run survives a state file that is truncated, garbage or of an unknown
// version: the daemon logs one clear error, keeps the bad file aside, starts,
// and lists the kernel's ban as its own (adopted, with the kernel's
// remaining timeout). Nothing panics (checked on every run's stderr).
func TestCorruptStateFileAtStart(t *testing.T) {
	t.Parallel()
	ns := newNS(t)
	state := filepath.Join(t.TempDir(), "state.json")
	cfg := fmt.Sprintf(`
esl:
  disabled: true
sip:
  hep_listen: ""
jail:
  state_file: %s
api:
  listen: 127.0.0.1:9091
`, state)
	opts := procOpts{ns: ns, config: cfg, api: "127.0.0.1:9091"}
	const victim = "198.51.100.23"

	// The previous run: one ban, in the kernel and in the state file.
	prev := startReady(t, opts)
	prev.ban(victim, "2h", "previous run")
	prev.stop()
	good, err := os.ReadFile(state)
	if err != nil || !bytes.Contains(good, []byte(victim)) {
		t.Fatalf("the previous run left no state with the ban: %v %s", err, good)
	}
	if !inSet(ns, "sipwarden4", victim) {
		t.Fatal("the previous run's ban is not in the kernel set")
	}

	expires := time.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		name    string
		content []byte
		whole   bool // the whole file is refused (else: bad records are skipped)
	}{
		{"truncated", good[:len(good)/2], true},
		{"garbage", []byte("\x00\xff\x13sipwarden\x7f{{{\n"), true},
		{"unknown version", []byte(`{"version":99,"offenders":[]}`), true},
		{"wrong shape", []byte(`{"version":1,"offenders":{"ip":7}}`), true},
		{"bad records", []byte(`{"version":1,"offenders":[{"ip":"999.1.2.3"},{"ip":"","cur":3e38},` +
			`{"ip":"` + victim + `","cur":-1e38,"bans":-5,"ban":{"prefix":"` + victim + `/33","expires_at":"` + expires + `"}}]}`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(state, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			os.Remove(state + ".corrupt")
			p := startReady(t, opts)
			level := "level=WARN"
			if tc.whole {
				level = "level=ERROR"
			}
			var line string
			for _, l := range strings.Split(p.stderr.String(), "\n") {
				if strings.Contains(l, "no firewall rule references the ban sets") {
					continue // no rules in this namespace: true, and cmd's TestUnreferencedBanSets owns it
				}
				if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
					if line != "" {
						t.Errorf("more than one warning or error:\n%s", p.stderr.String())
					}
					line = l
				}
			}
			if !strings.Contains(line, level) || !strings.Contains(line, "state file") || !strings.Contains(line, state) {
				t.Errorf("no clear %s naming the state file; stderr:\n%s", level, p.stderr.String())
			}
			t.Logf("%s", line)
			if kept, err := os.ReadFile(state + ".corrupt"); tc.whole && (err != nil || !bytes.Equal(kept, tc.content)) {
				t.Errorf("the bad file is not kept aside as %s.corrupt: %v", state, err)
			}
			// Adopted from the kernel by the start-up read-back.
			var b apiBan
			waitFor(t, 5*time.Second, "the kernel's ban in /v1/bans", func() bool {
				var ok bool
				b, ok = p.bans()[victim]
				return ok
			})
			if left := time.Until(b.ExpiresAt); left < time.Hour || left > 2*time.Hour {
				t.Errorf("adopted ban expires in %v, want the kernel's remaining ~2h", left.Round(time.Second))
			}
			if !inSet(ns, "sipwarden4", victim) {
				t.Error("the ban left the kernel set")
			}
			if code, body := p.get("/readyz"); code != 200 {
				t.Errorf("/readyz = %d %s", code, body)
			}
			p.stop()
			// The clean stop wrote a good state file again.
			if now, err := os.ReadFile(state); err != nil || !bytes.Contains(now, []byte(victim)) {
				t.Errorf("state after a clean stop: %v %.200s", err, now)
			}
		})
	}
}
