package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad: any file is either a valid configuration or an error; never a
// panic, and a config that loads validates.
func FuzzLoad(f *testing.F) {
	if b, err := os.ReadFile("../../examples/sipwarden.yaml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("esl:\n  password: ${PW}\njail:\n  findtime: 2m\nrules:\n  flood: {weight: 2}\n"))
	f.Add([]byte("never_ban: [10.0.0.0/8, '::1']\nban: {backend: dry-run, v6_prefix: 64}\n"))
	f.Add([]byte("a: [\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(p, []string{"PW=x"})
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Load accepted a config that does not validate: %v", err)
		}
		Prefixes(cfg.NeverBan)
		cfg.RuleWeights()
	})
}
