package examples_test

import (
	"reflect"
	"testing"

	"github.com/sipwarden/sipwarden/config"
)

// TestSipwardenYAMLIsDefaults loads the annotated reference with the real
// config loader (unknown keys rejected, validation on) and checks that every
// value it shows is the built-in default.
func TestSipwardenYAMLIsDefaults(t *testing.T) {
	got, err := config.Load("sipwarden.yaml", nil)
	if err != nil {
		t.Fatalf("config.Load(examples/sipwarden.yaml): %v", err)
	}
	want := config.Default()
	// rules: the file spells out every rule; the defaults leave them to the jail.
	got.Rules, want.Rules = nil, nil
	// The one deliberate difference, said so in the file: persistence on, in
	// the directory the systemd unit and the container provide.
	if got.Jail.StateFile != "/var/lib/sipwarden/state.json" {
		t.Errorf("jail.state_file = %q, want /var/lib/sipwarden/state.json", got.Jail.StateFile)
	}
	got.Jail.StateFile = want.Jail.StateFile
	normalize(&got)
	normalize(&want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("examples/sipwarden.yaml differs from config.Default():\n got %+v\nwant %+v", got, want)
	}
}

// normalize makes empty and nil lists equal.
func normalize(c *config.Config) {
	v := reflect.ValueOf(c).Elem()
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				if v.Field(i).CanSet() {
					walk(v.Field(i))
				}
			}
		case reflect.Slice:
			if v.Len() == 0 && v.CanSet() {
				v.Set(reflect.Zero(v.Type()))
			}
		}
	}
	walk(v)
}
