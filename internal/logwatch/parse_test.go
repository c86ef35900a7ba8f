package logwatch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// goldenNow is the reader's clock in golden tests: just after New Year, so
// year-less December lines land in the year before.
var goldenNow = time.Date(2027, 1, 1, 0, 0, 10, 0, time.UTC)

func newTestParser() *Parser {
	p := NewParser(func() time.Time { return goldenNow })
	p.SetLocation(time.UTC)
	return p
}

type goldenOffense struct {
	Line     int    `json:"line"`
	IP       string `json:"ip"`
	Rule     string `json:"rule"`
	Time     string `json:"time"`
	User     string `json:"user,omitempty"`
	Method   string `json:"method,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Verified bool   `json:"verified,omitempty"`
}

type goldenSummary struct {
	Lines       int64          `json:"lines"`
	ParseErrors int64          `json:"parse_errors"`
	ByRule      map[string]int `json:"by_rule"`
}

// TestGolden reads testdata/golden/<case>/input.log and compares the
// offenses found with want.jsonl (go test -run TestGolden -update rewrites
// them; review the diff).
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/golden/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join(dir, "input.log"))
			if err != nil {
				t.Fatal(err)
			}
			p := newTestParser()
			var got bytes.Buffer
			enc := json.NewEncoder(&got)
			sum := goldenSummary{ByRule: map[string]int{}}
			lineNo := 0
			sc := bufio.NewScanner(bytes.NewReader(in))
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				lineNo++
				o, ok := p.Parse(sc.Bytes())
				if !ok {
					continue
				}
				sum.ByRule[string(o.Rule)]++
				enc.Encode(goldenOffense{
					Line: lineNo, IP: o.IP.String(), Rule: string(o.Rule), Time: o.Time.Format(time.RFC3339Nano),
					User: o.User, Method: o.Method, Detail: o.Detail, Verified: o.Verified,
				})
				if o.Source != offense.SourceLog {
					t.Errorf("line %d: source %q", lineNo, o.Source)
				}
			}
			sum.Lines = int64(lineNo)
			sum.ParseErrors = p.Errors()
			enc.Encode(sum)

			// Scan must agree with the line-by-line reading.
			var scanned int
			n, err := Scan(context.Background(), bytes.NewReader(in), newTestParser(), offense.SinkFunc(func(offense.Offense) { scanned++ }), nil)
			if err != nil || n != sum.Lines {
				t.Errorf("Scan: %d lines, %v; want %d", n, err, sum.Lines)
			}
			total := 0
			for _, c := range sum.ByRule {
				total += c
			}
			if scanned != total {
				t.Errorf("Scan found %d offenses, Parse %d", scanned, total)
			}

			wantPath := filepath.Join(dir, "want.jsonl")
			if *update {
				if err := os.WriteFile(wantPath, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(wantPath)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("offenses differ from %s:\n--- got\n%s\n--- want\n%s", wantPath, got.Bytes(), want)
			}
		})
	}
}

// TestFixtureLogs checks the verdicts the issue asks for on the verbatim
// fixture logs, independently of the golden files.
func TestFixtureLogs(t *testing.T) {
	const dir = "testdata/fixtures/" // verbatim copies of FreeSWITCH 1.11.1 logs
	cases := []struct {
		file string
		want map[offense.Rule]int
	}{
		{"A_vanilla_invite_unauth_freeswitch.log.txt", map[offense.Rule]int{}},
		{"A_vanilla_unregister_freeswitch.log.txt", map[offense.Rule]int{}},
		{"B_logauthfail_true_register_ok_freeswitch.log.txt", map[offense.Rule]int{offense.AuthChallenge: 1}},
		{"B_logauthfail_true_register_wrong_password_freeswitch.log.txt", map[offense.Rule]int{offense.AuthChallenge: 1, offense.AuthFailure: 1}},
		{"B_logauthfail_true_invite_unauth_freeswitch.log.txt", map[offense.Rule]int{offense.AuthChallenge: 1}},
		{"C_extras_invite_wrong_password_freeswitch.log.txt", map[offense.Rule]int{offense.AuthChallenge: 1, offense.AuthFailure: 1}},
		{"C_extras_register_unknown_user_freeswitch.log.txt", map[offense.Rule]int{offense.AuthChallenge: 1, offense.UnknownUser: 1, offense.AuthFailure: 1}},
		{"freeswitch.log.full_session_A_B_C_D.txt", map[offense.Rule]int{offense.AuthChallenge: 10, offense.AuthFailure: 4, offense.UnknownUser: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			f, err := os.Open(dir + tc.file)
			if err != nil {
				t.Fatalf("fixture: %v", err)
			}
			defer f.Close()
			got := map[offense.Rule]int{}
			p := newTestParser()
			_, err = Scan(context.Background(), f, p, offense.SinkFunc(func(o offense.Offense) {
				got[o.Rule]++
				if o.IP != netip.MustParseAddr("127.0.0.1") {
					t.Errorf("offense from %v", o.IP)
				}
			}), nil)
			if err != nil {
				t.Fatal(err)
			}
			if p.Errors() != 0 {
				t.Errorf("%d parse errors", p.Errors())
			}
			if len(got) != len(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			for r, n := range tc.want {
				if got[r] != n {
					t.Errorf("%s: got %d, want %d (all: %v)", r, got[r], n, got)
				}
			}
		})
	}
}

func TestParseLines(t *testing.T) {
	ts := time.Date(2026, 11, 25, 19, 47, 20, 879698000, time.UTC)
	cases := []struct {
		name string
		line string
		want *offense.Offense // nil: no offense
		err  bool             // counted as a parse error
	}{
		{
			name: "auth failure, idle field",
			line: "2026-11-25 19:47:20.879698 86.47% [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [1001@127.0.0.1] from ip 203.0.113.5",
			want: &offense.Offense{IP: netip.MustParseAddr("203.0.113.5"), Rule: offense.AuthFailure, Time: ts, User: "1001", Method: "REGISTER", Detail: "profile internal", Verified: true},
		},
		{
			name: "auth failure, CRLF and no idle field",
			line: "2026-11-25 19:47:20.879698 [WARNING] sofia_reg.c:1787 SIP auth failure (INVITE) on sofia profile 'external' for [0044@203.0.113.1] from ip 2001:db8::5\r",
			want: &offense.Offense{IP: netip.MustParseAddr("2001:db8::5"), Rule: offense.AuthFailure, Time: ts, User: "0044", Method: "INVITE", Detail: "profile external", Verified: true},
		},
		{
			name: "challenge",
			line: "2026-11-25 19:47:20.879698 86.47% [WARNING] sofia_reg.c:1842 SIP auth challenge (INVITE) on sofia profile 'internal' for [999@127.0.0.1] from ip ::ffff:198.51.100.1",
			want: &offense.Offense{IP: netip.MustParseAddr("198.51.100.1"), Rule: offense.AuthChallenge, Time: ts, User: "999", Method: "INVITE", Detail: "profile internal"},
		},
		{
			// sofia_reg.c logs outside any session: a session UUID in
			// front means a client wrote the line (a %0A in a channel
			// name, see testdata/hostile), so it charges nobody.
			name: "unknown user, session uuid prefix",
			line: "3fbc1ad0-ff3f-4d41-902b-6a3279a0ed78 2026-11-25 19:47:20.879698 99.43% [WARNING] sofia_reg.c:3210 Can't find user [5555@example.com] from 198.51.100.2",
		},
		{
			name: "continuation line",
			line: "You must define a domain called '127.0.0.1' in your directory and add a user with the id=\"5555\" attribute",
		},
		{
			name: "acl reject",
			line: "2026-11-25 19:47:20.879698 86.47% [WARNING] sofia.c:10667 IP 198.51.100.3 Rejected by acl \"domains\"",
			want: &offense.Offense{IP: netip.MustParseAddr("198.51.100.3"), Rule: offense.ACLReject, Time: ts, Method: "INVITE", Detail: "acl domains"},
		},
		{
			name: "acl fallback to digest is traffic",
			line: "2026-11-25 19:47:20.879698 86.47% [DEBUG] sofia.c:10683 IP 198.51.100.3 Rejected by acl \"domains\". Falling back to Digest auth.",
		},
		{
			name: "bad address",
			line: "2026-11-25 19:47:20.879698 86.47% [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [1@h] from ip 999.1.1.1",
			err:  true,
		},
		{
			name: "bad date",
			line: "2026-13-25 19:47:20.879698 86.47% [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [1@h] from ip 192.0.2.1",
			err:  true,
		},
		{
			name: "rule text inside a call-id",
			line: "2026-11-25 19:47:20.879698 86.47% [INFO] sofia.c:10472 sofia/internal/sipp@127.0.0.1:15062 receiving invite from 198.51.100.4:5060 version: 1.11.1-release  64bit call-id: SIP auth failure (REGISTER) on sofia profile 'internal' for [1@h] from ip 192.0.2.1",
		},
		{name: "empty", line: ""},
		{name: "noise", line: "2026-11-25 19:45:37.855335 0.00% [DEBUG] sofia.c:4718 debug [0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestParser()
			got, ok := p.Parse([]byte(tc.line))
			if (p.Errors() > 0) != tc.err {
				t.Errorf("parse errors = %d, want error %v", p.Errors(), tc.err)
			}
			if tc.want == nil {
				if ok {
					t.Fatalf("got offense %+v, want none", got)
				}
				return
			}
			if !ok {
				t.Fatal("no offense")
			}
			w := *tc.want
			w.Source = offense.SourceLog
			if !got.Time.Equal(w.Time) {
				t.Errorf("time %v, want %v", got.Time, w.Time)
			}
			got.Time, w.Time = time.Time{}, time.Time{}
			if got != w {
				t.Errorf("got  %+v\nwant %+v", got, w)
			}
		})
	}
}

func TestYearInference(t *testing.T) {
	line := func(date string) []byte {
		return []byte(date + " [WARN] [SOFIA] [sofia_reg.c:1787] SIP auth failure (REGISTER) on sofia profile 'internal' for [1@h] from ip 192.0.2.1")
	}
	cases := []struct {
		name string
		now  time.Time
		date string
		want time.Time
	}{
		{"same year", time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC), "11-25 19:00:00.5", time.Date(2026, 11, 25, 19, 0, 0, 5e8, time.UTC)},
		{"december read in january", time.Date(2027, 1, 1, 0, 0, 5, 0, time.UTC), "12-31 23:59:59.000001", time.Date(2026, 12, 31, 23, 59, 59, 1000, time.UTC)},
		{"january read on new year's eve (clock skew)", time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC), "01-01 00:00:01.000000", time.Date(2027, 1, 1, 0, 0, 1, 0, time.UTC)},
		{"old replay", time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC), "12-24 10:00:00.000000", time.Date(2025, 12, 24, 10, 0, 0, 0, time.UTC)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := NewParser(func() time.Time { return tc.now })
			p.SetLocation(time.UTC)
			o, ok := p.Parse(line(tc.date))
			if !ok || !o.Time.Equal(tc.want) {
				t.Errorf("got %v %v, want %v", o.Time, ok, tc.want)
			}
		})
	}
}

// TestParseNoAlloc: noise lines and repeated offense lines cost no allocation.
func TestParseNoAlloc(t *testing.T) {
	lines := [][]byte{
		[]byte("3fbc1ad0-ff3f-4d41-902b-6a3279a0ed78 2026-11-25 19:46:38.919668 88.23% [DEBUG] switch_core_state_machine.c:846 (sofia/internal/sipp@127.0.0.1:15062) State HANGUP"),
		[]byte("2026-11-25 19:47:20.879698 86.47% [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [1001@127.0.0.1] from ip 203.0.113.5"),
		[]byte("2026-11-25 19:47:20.879698 86.47% [WARNING] sofia_reg.c:3210 Can't find user [1001@127.0.0.1] from 2001:db8::1"),
		[]byte("You must define a domain called '127.0.0.1' in your directory"),
	}
	p := newTestParser()
	for _, l := range lines {
		p.Parse(l) // warm the intern table
	}
	n := testing.AllocsPerRun(100, func() {
		for _, l := range lines {
			p.Parse(l)
		}
	})
	if n != 0 {
		t.Errorf("%v allocations per run", n)
	}
}

func TestPublicContexts(t *testing.T) {
	in, err := os.ReadFile("testdata/golden/no_route/input.log")
	if err != nil {
		t.Fatal(err)
	}
	count := func(p *Parser) int {
		n := 0
		for _, l := range strings.Split(string(in), "\n") {
			if o, ok := p.Parse([]byte(l)); ok && o.Rule == offense.NoRoute {
				n++
			}
		}
		return n
	}
	p := newTestParser()
	if n := count(p); n != 2 {
		t.Errorf("default: %d no_route, want 2", n)
	}
	p = newTestParser()
	p.SetPublicContexts("public", "default")
	if n := count(p); n != 3 {
		t.Errorf("public+default: %d no_route, want 3", n)
	}
	p = newTestParser()
	p.SetPublicContexts()
	if n := count(p); n != 0 {
		t.Errorf("none: %d no_route, want 0", n)
	}
}
