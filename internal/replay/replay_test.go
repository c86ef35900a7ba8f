package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/config"
)

func run(t *testing.T, regs string, files ...string) *Report {
	t.Helper()
	rep, err := Run(context.Background(), Options{Config: config.Default(), Files: files, Registrations: regs,
		Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func verdicts(rep *Report) map[string]Row {
	m := map[string]Row{}
	for _, r := range rep.Rows {
		m[r.IP.String()] = r
	}
	return m
}

// The lab night: every attacker is banned for the rule that it broke, the
// office behind NAT is protected by its phones' live registrations, and no
// legitimate login's challenge is counted.
func TestLabNight(t *testing.T) {
	lab := "../../examples/lab/"
	for _, tc := range []struct {
		name  string
		regs  string
		files []string
	}{
		{"log and pcap", "", []string{lab + "freeswitch.log", lab + "night.pcap"}},
		{"log with registrations listing", lab + "registrations.json", []string{lab + "freeswitch.log"}},
		{"everything", lab + "registrations.json", []string{lab + "night.pcap", lab + "freeswitch.log"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := verdicts(run(t, tc.regs, tc.files...))
			want := map[string]string{
				"198.51.100.23": "auth_failure",
				"198.51.100.44": "acl_reject",
			}
			if strings.Contains(strings.Join(tc.files, " "), "pcap") {
				want["198.51.100.66"] = "scanner_user_agent"
				want["198.51.100.77"] = "toll_fraud_invite"
				want["198.51.100.88"] = "flood"
			}
			for ip, rule := range want {
				r, ok := v[ip]
				if !ok || r.Verdict != VerdictBan || r.Offenses[rule] == 0 || r.BanSeconds != 3600 {
					t.Errorf("%s: %+v, want ban for %s", ip, r, rule)
				}
			}
			// With the capture the failing phone's mapping is known (the 403s
			// go to its port): only that mapping is quarantined. The log alone
			// names no port: protected, reported.
			office := v["203.0.113.10"]
			wantOffice := VerdictProtected
			if strings.Contains(strings.Join(tc.files, " "), "pcap") {
				wantOffice = VerdictQuarantined
			}
			if office.Verdict != wantOffice || office.Offenses["auth_failure"] != 12 || office.Score < 5 {
				t.Errorf("office: %+v, want %s with 12 auth_failure", office, wantOffice)
			}
			if wantOffice == VerdictQuarantined && !strings.Contains(office.Why, "udp:5066 for 1003") {
				t.Errorf("office why %q: want the quarantined mapping udp:5066 for 1003", office.Why)
			}
			for ip, r := range v {
				if r.Offenses["auth_challenge"] != 0 {
					t.Errorf("%s: challenges counted: %v", ip, r.Offenses)
				}
				if _, expected := want[ip]; !expected && ip != "203.0.113.10" {
					t.Errorf("unexpected source %s: %+v", ip, r)
				}
			}
		})
	}
}

// The verbatim FreeSWITCH logs: the failures and the unknown user are found
// (all from 127.0.0.1, which is never banned), challenges are not counted.
// The four digest failures are verified (1 each); "Can't find user" proves
// no round trip (one forged REGISTER makes FreeSWITCH log it) and weighs
// jail.unverified_factor: 4.2 stays below the threshold of 5.
func TestFixtureLogs(t *testing.T) {
	files := []string{"testdata/freeswitch.log.full_session_A_B_C_D.txt"}
	v := verdicts(run(t, "", files...))
	if len(v) != 1 {
		t.Fatalf("sources = %v, want only 127.0.0.1", v)
	}
	r := v["127.0.0.1"]
	if r.Verdict != VerdictBelowThreshold || r.Score < 4.19 || r.Score > 4.21 || r.Offenses["auth_failure"] != 4 || r.Offenses["unknown_user"] != 1 || len(r.Offenses) != 2 {
		t.Errorf("127.0.0.1: %+v", r)
	}
}

func TestOutputs(t *testing.T) {
	rep := run(t, "", "../../examples/lab/freeswitch.log")
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(js.String()), "\n")
	if len(lines) != len(rep.Rows) {
		t.Fatalf("%d JSON lines for %d rows", len(lines), len(rep.Rows))
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		for _, k := range []string{"ip", "offenses", "score", "verdict", "ban_seconds"} {
			if _, ok := m[k]; !ok {
				t.Errorf("%q lacks %s", l, k)
			}
		}
	}
	var tb bytes.Buffer
	if err := rep.WriteTable(&tb); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tb.String(), "IP ") || !strings.Contains(tb.String(), "ban") {
		t.Errorf("table:\n%s", tb.String())
	}
}

func TestUnreadableInput(t *testing.T) {
	_, err := Run(context.Background(), Options{Config: config.Default(), Files: []string{"/nonexistent/freeswitch.log"}})
	if err == nil {
		t.Fatal("missing file accepted")
	}
	_, err = Run(context.Background(), Options{Config: config.Default(), Files: []string{"../../examples/lab/freeswitch.log"}, Registrations: "../examples/lab/freeswitch.log"})
	if err == nil {
		t.Fatal("a log accepted as a registrations listing")
	}
}
