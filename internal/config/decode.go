package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// decodeYAML decodes one YAML document into v (a pointer to a struct),
// walking the node tree itself so that every problem is reported at once,
// by key path, in the operator's words rather than Go's: an unknown key
// with the nearest known one, a value of the wrong kind with what was
// expected. A bad value leaves the field at its default and decoding goes
// on, so one mistake never hides the next.
func decodeYAML(raw []byte, v any) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return fmt.Errorf("line %d: a second YAML document (---): the configuration is one document", extra.Line)
	}
	d := &decoder{}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	d.value(root, reflect.ValueOf(v).Elem(), "")
	return errors.Join(d.errs...)
}

type decoder struct{ errs []error }

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	where := path
	if where == "" {
		where = "(top level)"
	}
	d.errs = append(d.errs, fmt.Errorf("%s: %s (line %d)", where, fmt.Sprintf(format, args...), n.Line))
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping (key: value lines)"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	return strconv.Quote(n.Value)
}

func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	n = resolve(n)
	if n.Kind == yaml.AliasNode {
		d.fail(n, path, "alias chain too deep")
		return
	}
	if v.Type() == durationType {
		d.duration(n, v, path)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Map:
		d.mapping(n, v, path)
	case reflect.Pointer:
		if isNull(n) {
			v.SetZero()
			return
		}
		p := reflect.New(v.Type().Elem())
		if d.keep(func() { d.value(n, p.Elem(), path) }) {
			v.Set(p)
		}
	case reflect.Slice:
		d.list(n, v, path)
	default:
		d.scalar(n, v, path)
	}
}

// keep runs f and reports whether it added no error.
func (d *decoder) keep(f func()) bool {
	before := len(d.errs)
	f()
	return len(d.errs) == before
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		return // "esl:" with nothing under it keeps the defaults
	}
	fields := map[string]int{}
	var names []string
	t := v.Type()
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if key == "" || key == "-" || !t.Field(i).IsExported() {
			continue
		}
		fields[key] = i
		names = append(names, key)
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "must be a mapping of keys (%s), got %s", strings.Join(names, ", "), describe(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "a key must be a plain word, got %s", describe(k))
			continue
		}
		if k.Value == "<<" {
			d.fail(k, path, "merge keys (<<) are not supported: write the keys out")
			continue
		}
		p := join(path, k.Value)
		idx, ok := fields[k.Value]
		if !ok {
			if s := suggest(k.Value, names); s != "" {
				d.fail(k, p, "unknown key, did you mean %s?", s)
			} else {
				d.fail(k, p, "unknown key (known here: %s)", strings.Join(names, ", "))
			}
			continue
		}
		if seen[k.Value] {
			d.fail(k, p, "key given twice")
			continue
		}
		seen[k.Value] = true
		d.value(val, v.Field(idx), p)
	}
}

// mapping decodes a map[string]T whose keys are names (rules).
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "must be a mapping of names to settings, got %s", describe(n))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			d.fail(k, path, "a key must be a plain name, got %s", describe(k))
			continue
		}
		p := join(path, k.Value)
		if seen[k.Value] {
			d.fail(k, p, "key given twice")
			continue
		}
		seen[k.Value] = true
		key := reflect.ValueOf(k.Value).Convert(v.Type().Key())
		elem := reflect.New(v.Type().Elem()).Elem()
		if old := v.MapIndex(key); old.IsValid() {
			elem.Set(old)
		}
		d.value(val, elem, p)
		v.SetMapIndex(key, elem)
	}
}

func (d *decoder) list(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		v.SetZero()
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "must be a list (like [a, b] or lines starting with -), got %s", describe(n))
		return
	}
	out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	ok := true
	for i, e := range n.Content {
		ok = d.keep(func() { d.value(e, out.Index(i), fmt.Sprintf("%s[%d]", path, i)) }) && ok
	}
	if ok {
		v.Set(out)
	}
}

func (d *decoder) duration(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "must be a duration (durations look like 90s, 10m, 1h), got %s", describe(n))
		return
	}
	dur, err := time.ParseDuration(n.Value)
	if err != nil {
		hint := "durations look like 90s, 10m, 1h"
		if _, nerr := strconv.ParseFloat(n.Value, 64); nerr == nil && n.Value != "0" {
			hint += "; a bare number has no unit"
		}
		d.fail(n, path, "%q is not a duration (%s)", n.Value, hint)
		return
	}
	v.SetInt(int64(dur))
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "must be a single value, got %s", describe(n))
		return
	}
	if isNull(n) {
		v.SetZero()
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if err := n.Decode(&b); err != nil {
			d.fail(n, path, "must be true or false, got %s", strconv.Quote(n.Value))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		var i int64
		if err := n.Decode(&i); err != nil || n.Tag != "!!int" || v.OverflowInt(i) {
			d.fail(n, path, "must be a whole number, got %s", strconv.Quote(n.Value))
			return
		}
		v.SetInt(i)
	case reflect.Float64, reflect.Float32:
		var f float64
		if err := n.Decode(&f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			d.fail(n, path, "must be a number, got %s", strconv.Quote(n.Value))
			return
		}
		v.SetFloat(f)
	default:
		d.fail(n, path, "cannot be set from YAML (%s)", v.Kind())
	}
}

// suggest returns the known name closest to got, if close enough to be a
// typo.
func suggest(got string, known []string) string {
	best, bestD := "", math.MaxInt
	for _, k := range known {
		if dist := editDistance(strings.ToLower(got), strings.ToLower(k)); dist < bestD {
			best, bestD = k, dist
		}
	}
	limit := 2
	if len(got) > 8 {
		limit = 3
	}
	if bestD <= limit || (len(got) >= 4 && (strings.HasPrefix(best, got) || strings.HasPrefix(got, best))) {
		return best
	}
	return ""
}

// editDistance is Damerau-Levenshtein with adjacent transpositions (so
// "maxretyr" is one step from "maxretry").
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 64 || len(rb) > 64 {
		return math.MaxInt / 2
	}
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range rb {
		d[0][j+1] = j + 1
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// envVars lists every SIPWARDEN_* variable that means something: one per
// configuration leaf, the rule switches, and those the commands read.
func envVars(cfg *Config) []string {
	names := append([]string{"SIPWARDEN_CONFIG", "SIPWARDEN_API"}, ExtraEnv...)
	walk(reflect.ValueOf(cfg).Elem(), "", func(path string, _ reflect.Value) {
		names = append(names, EnvName(path))
	})
	sort.Strings(names)
	return names
}

// ExtraEnv are SIPWARDEN_* variables that are not configuration keys but
// are read by tests and tools running next to sipwarden (the FreeSWITCH
// runtime for the lab tests); they are not reported as unknown.
var ExtraEnv = []string{"SIPWARDEN_FREESWITCH"}

// unknownEnv reports SIPWARDEN_* variables that match no key: a typo in an
// override must fail as loudly as one in the file.
func unknownEnv(cfg *Config, vars map[string]string) []error {
	known := map[string]bool{}
	names := envVars(cfg)
	for _, n := range names {
		known[n] = true
	}
	var bad []string
	for k := range vars {
		if !strings.HasPrefix(k, "SIPWARDEN_") || known[k] {
			continue
		}
		if rest, ok := strings.CutPrefix(k, "SIPWARDEN_RULES_"); ok && ruleEnv(rest) {
			continue
		}
		bad = append(bad, k)
	}
	sort.Strings(bad)
	var errs []error
	for _, k := range bad {
		var cands []string
		for _, n := range names {
			cands = append(cands, strings.TrimPrefix(n, "SIPWARDEN_"))
		}
		for _, r := range ruleList() {
			cands = append(cands, strings.TrimPrefix(EnvName("rules."+r+".weight"), "SIPWARDEN_"), strings.TrimPrefix(EnvName("rules."+r+".enabled"), "SIPWARDEN_"))
		}
		if s := suggest(strings.TrimPrefix(k, "SIPWARDEN_"), cands); s != "" {
			errs = append(errs, fmt.Errorf("%s: unknown environment variable, did you mean SIPWARDEN_%s?", k, s))
		} else {
			errs = append(errs, fmt.Errorf("%s: unknown environment variable (SIPWARDEN_ + a key path in capitals, dots as underscores, like SIPWARDEN_JAIL_BANTIME)", k))
		}
	}
	return errs
}

func ruleEnv(rest string) bool {
	for _, r := range ruleList() {
		up := strings.ToUpper(r)
		if rest == up+"_WEIGHT" || rest == up+"_ENABLED" {
			return true
		}
	}
	return false
}

func ruleList() []string {
	out := make([]string, 0, len(offense.Rules))
	for _, r := range offense.Rules {
		out = append(out, string(r))
	}
	return out
}
