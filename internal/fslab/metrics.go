package fslab

import (
	"strconv"
	"strings"
	"testing"
)

// MetricValue is the sum of every sample of the named metric whose labels
// include all of match ("k=v" pairs) in a Prometheus text exposition; 0
// when there is none.
func MetricValue(t testing.TB, exposition, name string, match ...string) float64 {
	t.Helper()
	var sum float64
	for _, line := range strings.Split(exposition, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		var labels string
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				t.Fatalf("bad exposition line %q", line)
			}
			labels, rest = rest[1:end], rest[end+1:]
		}
		matched := true
		for _, kv := range match {
			k, v, _ := strings.Cut(kv, "=")
			if !strings.Contains(","+labels+",", ","+k+"="+strconv.Quote(v)+",") {
				matched = false
			}
		}
		if !matched {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			t.Fatalf("bad exposition line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// HistogramQuantile estimates quantile q (0..1) of a histogram from its
// cumulative _bucket samples, as Prometheus' histogram_quantile does
// (linear inside the bucket). It returns the count too.
func HistogramQuantile(t testing.TB, exposition, name string, q float64) (value float64, count float64) {
	t.Helper()
	type bucket struct{ le, n float64 }
	var bs []bucket
	for _, line := range strings.Split(exposition, "\n") {
		rest, ok := strings.CutPrefix(line, name+"_bucket{")
		if !ok {
			continue
		}
		i := strings.Index(rest, `le="`)
		if i < 0 {
			continue
		}
		leStr := rest[i+4:]
		leStr = leStr[:strings.IndexByte(leStr, '"')]
		le, err := strconv.ParseFloat(leStr, 64)
		if err != nil {
			t.Fatalf("bad le in %q", line)
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		n, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			t.Fatalf("bad bucket line %q", line)
		}
		bs = append(bs, bucket{le, n})
	}
	if len(bs) == 0 {
		return 0, 0
	}
	total := bs[len(bs)-1].n
	if total == 0 {
		return 0, 0
	}
	rank := q * total
	prevLe, prevN := 0.0, 0.0
	for _, b := range bs {
		if b.n >= rank {
			if b.le > 1e300 { // +Inf: the largest finite edge
				return prevLe, total
			}
			if b.n == prevN {
				return b.le, total
			}
			return prevLe + (b.le-prevLe)*(rank-prevN)/(b.n-prevN), total
		}
		prevLe, prevN = b.le, b.n
	}
	return prevLe, total
}
