package api

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// EnsureToken returns the token stored at path, creating it (32 random
// bytes, hex, mode 0600, never overwriting) when the file does not exist
// but its directory does. created says the file was written now. A token
// file readable by every local user is refused: it would hand them the
// firewall.
func EnsureToken(path string) (token string, created bool, err error) {
	if path == "" {
		return "", false, errors.New("neither api.token_file nor jail.state_file is set, so there is no file to keep a token in")
	}
	if tok, err := readToken(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return tok, false, err
	}
	if _, err := os.Stat(filepath.Dir(path)); err != nil {
		return "", false, fmt.Errorf("cannot create the token file %s: %w", path, err)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, err
	}
	tok := hex.EncodeToString(b[:])
	// Written aside, then linked into place: a concurrent start sees either
	// no file or the whole token, and link never replaces an existing one.
	f, err := os.CreateTemp(filepath.Dir(path), ".api.token-*")
	if err != nil {
		return "", false, fmt.Errorf("cannot create the token file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, werr := f.WriteString(tok + "\n")
	if werr == nil {
		werr = f.Chmod(0o600)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return "", false, fmt.Errorf("writing the token file %s: %w", path, werr)
	}
	if err := os.Link(tmp, path); errors.Is(err, fs.ErrExist) {
		tok, err := readToken(path) // another start won the race: use its token
		return tok, false, err
	} else if err != nil {
		return "", false, fmt.Errorf("cannot create the token file: %w", err)
	}
	return tok, true, nil
}

func readToken(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("token file %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o004 != 0 {
		return "", fmt.Errorf("token file %s is readable by every user (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 {
		return "", fmt.Errorf("token file %s holds %d characters: at least 16 are needed", path, len(tok))
	}
	return tok, nil
}
