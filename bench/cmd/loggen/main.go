// Command loggen writes a generated FreeSWITCH log for bench/run (see
// package loggen) and prints what it wrote as one JSON object on stderr
// (lines, attack_lines, by_rule, legit, attackers).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/sipwarden/sipwarden/internal/logwatch/loggen"
)

func main() { os.Exit(run()) }

func run() int {
	lines := flag.Int("lines", 1_000_000, "lines to write")
	seed := flag.Int64("seed", 1, "random seed")
	classic := flag.Bool("classic", false, "classic layout (no idle-CPU field), the one Debian's fail2ban filter reads")
	out := flag.String("o", "", "output file (required)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "loggen: -o FILE is required")
		return 2
	}
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loggen:", err)
		return 1
	}
	w := bufio.NewWriterSize(f, 1<<20)
	o := loggen.Options{}
	if *classic {
		o.Format = loggen.Classic
	}
	st, err := loggen.GenerateOptions(w, *lines, *seed, o)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loggen:", err)
		return 1
	}
	report := struct {
		Lines       int            `json:"lines"`
		AttackLines int            `json:"attack_lines"`
		ByRule      map[string]int `json:"by_rule"`
		Legit       int            `json:"legit"`
		Attackers   int            `json:"attackers"`
	}{st.Lines, st.AttackLines, st.ByRule, st.Legit, len(st.Attackers)}
	if err := json.NewEncoder(os.Stderr).Encode(report); err != nil {
		fmt.Fprintln(os.Stderr, "loggen:", err)
		return 1
	}
	return 0
}
