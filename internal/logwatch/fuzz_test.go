package logwatch

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// FuzzLine: Parse never panics, and what it returns holds together.
func FuzzLine(f *testing.F) {
	files, _ := filepath.Glob("testdata/golden/*/input.log")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			f.Add(append([]byte(nil), sc.Bytes()...))
		}
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		p := newTestParser()
		o, ok := p.Parse(line)
		if !ok {
			if o != (offense.Offense{}) {
				t.Fatalf("no match but %+v", o)
			}
			return
		}
		if !o.IP.IsValid() || o.IP.Is4In6() || o.IP.Zone() != "" {
			t.Fatalf("address %v", o.IP)
		}
		if !o.Rule.Known() || o.Rule == offense.NoRoute {
			// no_route needs earlier session lines: a fresh parser never says it.
			t.Fatalf("rule %q", o.Rule)
		}
		if o.Source != offense.SourceLog || o.Time.IsZero() {
			t.Fatalf("source %q time %v", o.Source, o.Time)
		}
		if o.Verified != (o.Rule == offense.AuthFailure || o.Detail != "" && bytes.HasPrefix([]byte(o.Detail), []byte("event socket"))) {
			t.Fatalf("verified %v for %+v", o.Verified, o)
		}
		if o.Method != "" && o.Method != "REGISTER" && o.Method != "INVITE" {
			t.Fatalf("method %q", o.Method)
		}
		if p.Errors() != 0 {
			t.Fatalf("an offense and a parse error")
		}
		// Trailing blanks and a CR change nothing; nor does a syslog prefix
		// where there was none.
		variants := [][]byte{append(append([]byte(nil), line...), " \r"...)}
		if h, _ := splitHeader(line); h.sysDate == nil {
			variants = append(variants, append([]byte("Nov 25 19:47:20 pbx freeswitch[1]: "), line...))
		}
		for _, variant := range variants {
			o2, ok2 := newTestParser().Parse(variant)
			if !ok2 || o2.IP != o.IP || o2.Rule != o.Rule || o2.User != o.User || o2.Detail != o.Detail {
				t.Fatalf("variant %q: %+v %v, want %+v", variant, o2, ok2, o)
			}
		}
	})
}
