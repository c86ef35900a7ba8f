package config

import (
	"reflect"
	"slices"
	"sort"
	"strings"
)

// Diff returns the key paths whose values differ between a and b, sorted:
// leaves by their YAML path (jail.maxretry, esl.addresses, ban.set_v4) and
// rules per rule and field (rules.auth_challenge.enabled). A list is one
// key. Only names are returned, never values (secrets are keys too).
func Diff(a, b Config) []string {
	var out []string
	diffStruct(reflect.ValueOf(a), reflect.ValueOf(b), "", &out)
	sort.Strings(out)
	return out
}

func diffStruct(a, b reflect.Value, prefix string, out *[]string) {
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" || !f.IsExported() {
			continue
		}
		path := key
		if prefix != "" {
			path = prefix + "." + key
		}
		fa, fb := a.Field(i), b.Field(i)
		switch fa.Kind() {
		case reflect.Struct:
			diffStruct(fa, fb, path, out)
		case reflect.Map:
			diffRules(fa.Interface(), fb.Interface(), path, out)
		case reflect.Slice:
			if fa.Len() != fb.Len() || (fa.Len() > 0 && !reflect.DeepEqual(fa.Interface(), fb.Interface())) {
				*out = append(*out, path)
			}
		default:
			if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
				*out = append(*out, path)
			}
		}
	}
}

func diffRules(a, b any, path string, out *[]string) {
	ra, _ := a.(map[string]Rule)
	rb, _ := b.(map[string]Rule)
	var names []string
	for n := range ra {
		names = append(names, n)
	}
	for n := range rb {
		if _, ok := ra[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		x, y := ra[n], rb[n]
		if !samePtr(x.Enabled, y.Enabled) {
			*out = append(*out, path+"."+n+".enabled")
		}
		if !samePtr(x.Weight, y.Weight) {
			*out = append(*out, path+"."+n+".weight")
		}
	}
}

func samePtr[T comparable](x, y *T) bool {
	if x == nil || y == nil {
		return x == y
	}
	return *x == *y
}
