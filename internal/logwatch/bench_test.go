package logwatch

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/logwatch/loggen"
	"github.com/sipwarden/sipwarden/internal/offense"
)

// benchLog is a realistic log: fixture-like noise and ~5% attack lines from
// a few hundred addresses (see loggen).
func benchLog(b *testing.B, format loggen.Format) []byte {
	b.Helper()
	var buf bytes.Buffer
	if _, err := loggen.GenerateOptions(&buf, 200000, 1, loggen.Options{Format: format}); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkParse measures the line recogniser alone, on the lines of a
// generated log (one op = one line).
func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct {
		name   string
		format loggen.Format
	}{{"modern", loggen.Modern}, {"classic", loggen.Classic}} {
		b.Run(bc.name, func(b *testing.B) {
			lines := bytes.Split(bytes.TrimSuffix(benchLog(b, bc.format), []byte("\n")), []byte("\n"))
			p := NewParser(func() time.Time { return time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC) })
			var found int
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, ok := p.Parse(lines[i%len(lines)]); ok {
					found++
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
			if found == 0 {
				b.Fatal("no offense found")
			}
		})
	}
}

// BenchmarkScan measures what replay does: split a stream into lines, parse
// them, hand offenses to a sink (one op = one pass over a 200000-line log).
func BenchmarkScan(b *testing.B) {
	data := benchLog(b, loggen.Modern)
	m := NewMetrics(nil)
	var offenses int
	sink := offense.SinkFunc(func(offense.Offense) { offenses++ })
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	var lines int64
	for i := 0; i < b.N; i++ {
		p := NewParser(func() time.Time { return time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC) })
		n, err := Scan(context.Background(), bytes.NewReader(data), p, sink, m)
		if err != nil {
			b.Fatal(err)
		}
		lines += n
	}
	b.ReportMetric(float64(lines)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkParseLine measures one line of each kind (one op = one line).
func BenchmarkParseLine(b *testing.B) {
	for _, bc := range []struct{ name, line string }{
		{"debug_session", "94d2c422-acd2-08a0-0729-39487f6999eb 2026-11-25 00:00:00.032422 32.71% [DEBUG] switch_core_state_machine.c:581 (sofia/internal/1002@192.0.2.24:5071) Running State Change CS_NEW (Cur 1 Tot 1)"},
		{"debug", "2026-11-25 00:00:00.036154 15.26% [DEBUG] sofia.c:10566 verifying acl \"domains\" for ip/port 192.0.2.24:0."},
		{"continuation", "You must define a domain called 'pbx.example.com' in your directory and add a user with the id=\"8366\" attribute"},
		{"receiving_invite", "94d2c422-acd2-08a0-0729-39487f6999eb 2026-11-25 00:00:00.035659 31.66% [INFO] sofia.c:10472 sofia/internal/1002@192.0.2.24:5071 receiving invite from 192.0.2.24:5071 version: 1.11.1-release  64bit call-id: 1-37739@192.0.2.24"},
		{"auth_failure", "2026-11-25 00:00:00.440587 31.46% [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [8366@pbx.example.com] from ip 198.51.100.94"},
		{"unknown_user_v6", "2026-11-25 00:00:00.440587 31.46% [WARNING] sofia_reg.c:3210 Can't find user [8366@pbx.example.com] from 2001:db8::1:94"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := NewParser(nil)
			line := []byte(bc.line)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				p.Parse(line)
			}
		})
	}
}
