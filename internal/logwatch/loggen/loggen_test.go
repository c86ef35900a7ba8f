package loggen_test

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"os"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/logwatch"
	"github.com/sipwarden/sipwarden/internal/logwatch/loggen"
	"github.com/sipwarden/sipwarden/internal/offense"
)

var (
	out   = flag.String("loggen.out", "", "TestWriteFile: write a generated log to this file")
	lines = flag.Int("loggen.lines", 1000000, "TestWriteFile: lines to write")
	seed  = flag.Int64("loggen.seed", 1, "TestWriteFile: seed")
	cls   = flag.Bool("loggen.classic", false, "TestWriteFile: classic layout (no idle-CPU field)")
)

// TestWriteFile is the command-less way to get a log for the benchmarks:
//
//	go test ./logwatch/loggen -run TestWriteFile -loggen.out /tmp/fs.log -loggen.lines 5000000
func TestWriteFile(t *testing.T) {
	if *out == "" {
		t.Skip("no -loggen.out")
	}
	f, err := os.Create(*out)
	if err != nil {
		t.Fatal(err)
	}
	o := loggen.Options{}
	if *cls {
		o.Format = loggen.Classic
	}
	st, err := loggen.GenerateOptions(f, *lines, *seed, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d lines, %d attack lines, offenses %v, %d legitimate challenges, %d attackers", *out, st.Lines, st.AttackLines, st.ByRule, st.Legit, len(st.Attackers))
}

func TestGenerate(t *testing.T) {
	for _, format := range []loggen.Format{loggen.Modern, loggen.Classic} {
		var a, b bytes.Buffer
		st, err := loggen.GenerateOptions(&a, 20000, 7, loggen.Options{Format: format})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := loggen.GenerateOptions(&b, 20000, 7, loggen.Options{Format: format}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Error("same seed, different logs")
		}
		if n := bytes.Count(a.Bytes(), []byte("\n")); n != 20000 || st.Lines != 20000 {
			t.Errorf("%d lines (stats %d), want 20000", n, st.Lines)
		}
		ratio := float64(st.AttackLines) / float64(st.Lines)
		if ratio < 0.03 || ratio > 0.08 {
			t.Errorf("attack ratio %.3f", ratio)
		}

		// The parser finds exactly what was written, from the attackers only.
		attackers := map[string]bool{}
		for _, ip := range st.Attackers {
			attackers[ip.String()] = true
		}
		got := map[string]int{}
		seen := map[string]bool{}
		p := logwatch.NewParser(func() time.Time { return time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC) })
		_, err = logwatch.Scan(context.Background(), &a, p, offense.SinkFunc(func(o offense.Offense) {
			got[string(o.Rule)]++
			if o.Rule != offense.AuthChallenge && !attackers[o.IP.String()] {
				t.Errorf("offense from %v, not an attacker", o.IP)
			}
			seen[o.IP.String()] = true
		}), nil)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int{}
		for r, n := range st.ByRule {
			want[r] = n
		}
		want["auth_challenge"] += st.Legit
		for r, n := range want {
			if got[r] != n {
				t.Errorf("format %d: %s: parsed %d, written %d", format, r, got[r], n)
			}
		}
		if p.Errors() != 0 {
			t.Errorf("%d parse errors", p.Errors())
		}
		if len(seen) < 100 {
			t.Errorf("only %d distinct addresses", len(seen))
		}
		sc := bufio.NewScanner(bytes.NewReader(b.Bytes()))
		sc.Scan()
		if format == loggen.Modern && !bytes.Contains(sc.Bytes(), []byte("% [")) {
			t.Errorf("modern line without idle field: %s", sc.Bytes())
		}
	}
}

func ExampleGenerate() {
	var buf bytes.Buffer
	if err := loggen.Generate(&buf, 3, 1); err != nil {
		panic(err)
	}
	os.Stdout.Write(buf.Bytes()[:0])
	// Output:
}
