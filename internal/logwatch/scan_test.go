package logwatch

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipwarden/sipwarden/internal/offense"
)

func scanAll(t *testing.T, r io.Reader, m *Metrics, max int) (lines int64, users []string, err error) {
	t.Helper()
	lines, err = ScanLimit(context.Background(), r, newTestParser(), offense.SinkFunc(func(o offense.Offense) {
		users = append(users, o.User)
	}), m, max)
	return lines, users, err
}

func TestScanLongLines(t *testing.T) {
	long := strings.Repeat("x", 100<<10)
	cases := []struct {
		name      string
		input     string
		max       int
		lines     int64
		users     string
		tooLong   float64
		wantError bool
	}{
		{"default limit", attackLine(1) + long + "\n" + attackLine(2), 0, 3, "[1 2]", 1, false},
		{"long line with an offense inside", attackLine(1) + strings.TrimSuffix(attackLine(5), "\n") + long + "\n" + attackLine(2), 0, 3, "[1 2]", 1, false},
		{"long last line without newline", attackLine(1) + long, 0, 2, "[1]", 1, false},
		{"at the limit", strings.TrimSuffix(attackLine(1), "\n") + "\n" + strings.Repeat("y", 200) + "\n", len(attackLine(1)) - 1, 2, "[1]", 1, false},
		{"just under the limit", attackLine(1) + attackLine(2), len(attackLine(1)) - 1, 2, "[1 2]", 0, false},
		{"several long lines in a row", long + "\n" + long + "\n" + long + "\n" + attackLine(3), 0, 4, "[3]", 3, false},
		{"CRLF", strings.ReplaceAll(attackLine(1)+attackLine(2), "\n", "\r\n"), 0, 2, "[1 2]", 0, false},
		{"empty", "", 0, 0, "[]", 0, false},
		{"no final newline", noiseLine + strings.TrimSuffix(attackLine(4), "\n"), 0, 2, "[4]", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := NewMetrics(reg)
			// A reader that returns little at a time splits lines across reads.
			for _, r := range []io.Reader{strings.NewReader(tc.input), &trickle{s: tc.input}} {
				lines, users, err := scanAll(t, r, m, tc.max)
				if err != nil {
					t.Fatal(err)
				}
				if lines != tc.lines {
					t.Errorf("%d lines, want %d", lines, tc.lines)
				}
				if got := strings.Join(strings.Fields(strings.Trim(strings.Join(users, " "), " ")), " "); "["+got+"]" != tc.users {
					t.Errorf("users [%s], want %s", got, tc.users)
				}
			}
			if got := testutil.ToFloat64(m.tooLong); got != 2*tc.tooLong {
				t.Errorf("too_long = %v, want %v", got, 2*tc.tooLong)
			}
			if got := testutil.ToFloat64(m.lines); got != 2*float64(tc.lines) {
				t.Errorf("lines_total = %v, want %v", got, 2*tc.lines)
			}
		})
	}
}

// trickle returns at most 7 bytes per Read.
type trickle struct{ s string }

func (r *trickle) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 7)], r.s)
	r.s = r.s[n:]
	return n, nil
}

func TestScanInvalidUTF8(t *testing.T) {
	in := "2026-11-25 19:47:20.879698 86.47% [WARNING] sofia_reg.c:3210 Can't find user [\xff\xfe@\xc3(] from 198.51.100.9\n\xff\xff\xff\n"
	lines, users, err := scanAll(t, strings.NewReader(in), nil, 0)
	if err != nil || lines != 2 || len(users) != 1 || users[0] != "\xff\xfe" {
		t.Errorf("lines %d users %q err %v", lines, users, err)
	}
}

func TestOpen(t *testing.T) {
	plain, err := os.ReadFile("testdata/golden/modern_v4/input.log")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(plain)
	zw.Close()
	files := map[string][]byte{
		"freeswitch.log":      plain,
		"freeswitch.log.1":    gz.Bytes(), // gzip whatever the name
		"freeswitch.log.2.gz": gz.Bytes(),
		"empty.log":           nil,
		"one-byte.log":        {'\n'},
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	_, want, _ = scanAll(t, bytes.NewReader(plain), nil, 0)
	if len(want) != 7 {
		t.Fatalf("%d offenses in the plain file", len(want))
	}
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			rc, err := Open(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			lines, users, err := scanAll(t, rc, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) > 100 && strings.Join(users, ",") != strings.Join(want, ",") {
				t.Errorf("offenses %v, want %v", users, want)
			}
			if len(data) <= 100 && (len(users) != 0 || lines != int64(len(data))) {
				t.Errorf("lines %d offenses %v", lines, users)
			}
		})
	}

	t.Run("missing", func(t *testing.T) {
		if _, err := Open(filepath.Join(dir, "nope")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err %v, want ErrNotExist", err)
		}
	})
	t.Run("truncated gzip", func(t *testing.T) {
		path := filepath.Join(dir, "cut.gz")
		os.WriteFile(path, gz.Bytes()[:gz.Len()/2], 0o644)
		rc, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if _, _, err := scanAll(t, rc, nil, 0); err == nil {
			t.Error("no error for a truncated gzip stream")
		}
	})
}

func TestScanCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	in := strings.Repeat(noiseLine, 100000)
	n, err := Scan(ctx, strings.NewReader(in), newTestParser(), offense.SinkFunc(func(offense.Offense) {}), nil)
	if !errors.Is(err, context.Canceled) || n >= 100000 {
		t.Errorf("n %d err %v", n, err)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m1 := NewMetrics(reg)
	m2 := m1 // two scans share one set
	in := attackLine(1) + strings.Replace(attackLine(2), "203.0.113.", "203.0.113.999", 1) + noiseLine
	if _, err := Scan(context.Background(), strings.NewReader(in), newTestParser(), offense.SinkFunc(func(offense.Offense) {}), m1); err != nil {
		t.Fatal(err)
	}
	if _, err := Scan(context.Background(), strings.NewReader(in), newTestParser(), offense.SinkFunc(func(offense.Offense) {}), m2); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP sipwarden_log_lines_total FreeSWITCH log lines read (skipped ones included).
# TYPE sipwarden_log_lines_total counter
sipwarden_log_lines_total 6
# HELP sipwarden_parse_errors_total Input records that could not be parsed, by source; they are counted and skipped.
# TYPE sipwarden_parse_errors_total counter
sipwarden_parse_errors_total{source="log"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "sipwarden_log_lines_total", "sipwarden_parse_errors_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m1.tooLong); n != 1 {
		t.Errorf("too_long series: %d", n)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a second set of log metrics registered on one registry")
			}
		}()
		NewMetrics(reg)
	}()
	if NewMetrics(nil) == nil {
		t.Error("nil registerer")
	}
}

var scanFile = flag.String("logwatch.file", "", "TestScanFile: a log file (plain or gzip) to time Open+Scan on")

// TestScanFile times what replay does on a real file, for comparisons with
// fail2ban-regex:
//
//	go test ./logwatch -run TestScanFile -v -logwatch.file /tmp/fs.log
func TestScanFile(t *testing.T) {
	if *scanFile == "" {
		t.Skip("no -logwatch.file")
	}
	start := time.Now()
	rc, err := Open(*scanFile)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	byRule := map[offense.Rule]int{}
	ips := map[netip.Addr]bool{}
	p := NewParser(nil)
	n, err := Scan(context.Background(), rc, p, offense.SinkFunc(func(o offense.Offense) {
		byRule[o.Rule]++
		ips[o.IP] = true
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	t.Logf("%d lines in %v: %.0f lines/s; offenses %v from %d addresses; %d parse errors", n, d.Round(time.Millisecond), float64(n)/d.Seconds(), byRule, len(ips), p.Errors())
}
