package api

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestEnsureToken(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "api.token")
	tok, created, err := EnsureToken(path)
	if err != nil || !created || len(tok) != 64 {
		t.Fatalf("first start: %q %v %v", tok, created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	again, created, err := EnsureToken(path)
	if err != nil || created || again != tok {
		t.Errorf("second start: %q %v %v, want the same token", again, created, err)
	}
	// Concurrent first starts agree on one token.
	p2 := filepath.Join(dir, "race.token")
	var wg sync.WaitGroup
	toks := make([]string, 8)
	for i := range toks {
		wg.Go(func() { toks[i], _, _ = EnsureToken(p2) })
	}
	wg.Wait()
	for _, tk := range toks {
		if tk == "" || tk != toks[0] {
			t.Fatalf("racing starts disagree: %q", toks)
		}
	}
	for name, setup := range map[string]func() string{
		"missing directory": func() string { return filepath.Join(dir, "nope", "api.token") },
		"world-readable": func() string {
			p := filepath.Join(dir, "open.token")
			os.WriteFile(p, []byte(strings.Repeat("a", 32)), 0o644)
			return p
		},
		"too short": func() string {
			p := filepath.Join(dir, "short.token")
			os.WriteFile(p, []byte("abc\n"), 0o600)
			return p
		},
		"a directory": func() string { return dir },
	} {
		if tok, _, err := EnsureToken(setup()); err == nil || tok != "" {
			t.Errorf("%s: token %q, err %v; want an error", name, tok, err)
		}
	}
}
