// Package testenv says whether a test may run here: tests that need root or
// an installed tool run (and fail when it is missing) under CI=true, and skip
// with one line naming what they need everywhere else.
//
// It is imported by tests only.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// CI reports whether the tests run in CI, where nothing may skip.
func CI() bool { return os.Getenv("CI") == "true" }

// missing fails the test in CI and skips it elsewhere.
func missing(t testing.TB, what string) {
	t.Helper()
	if CI() {
		t.Fatalf("needs %s (CI=true: this test must run)", what)
	}
	t.Skipf("needs %s", what)
}

// Root requires euid 0 (network namespaces, ipsets, raw sockets).
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "root (network namespaces, ipsets, capabilities); CI runs as root")
	}
}

// Tool requires an installed command and returns its path; pkg names the
// Debian package that provides it.
func Tool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, fmt.Sprintf("%s (apt-get install %s)", name, pkg))
	}
	return p
}

// MainUnmet is for TestMain of packages whose every test needs the same
// privileges: it returns a one-line reason when they are missing (nil when
// they are all here). TestMain prints it and exits 1 in CI, 0 elsewhere.
func MainUnmet(root bool, tools ...string) error {
	if root && os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces, ipsets, capabilities)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("needs %s installed", tool)
		}
	}
	return nil
}

// ExitUnmet ends TestMain for an unmet MainUnmet: a failure in CI, a skip
// (exit 0, one line) elsewhere.
func ExitUnmet(pkg string, err error) {
	if CI() {
		fmt.Fprintf(os.Stderr, "%s: %v (CI=true: these tests must run)\n", pkg, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "%s: skipped: %v\n", pkg, err)
	os.Exit(0)
}
