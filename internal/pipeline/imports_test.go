package pipeline

import (
	"os/exec"
	"strings"
	"testing"
)

// Replay and the daemon build from this package, so replay never needs the
// daemon: neither replay nor the pipeline depends on it, even indirectly.
func TestReplayDoesNotImportDaemon(t *testing.T) {
	const daemon = "github.com/sipwarden/sipwarden/internal/daemon"
	for _, pkg := range []string{"github.com/sipwarden/sipwarden/internal/replay", "github.com/sipwarden/sipwarden/internal/pipeline"} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		deps := strings.Fields(string(out))
		found := false
		for _, d := range deps {
			if d == daemon {
				t.Errorf("%s depends on %s", pkg, daemon)
			}
			if d == pkg {
				found = true
			}
		}
		if !found {
			t.Fatalf("go list -deps %s does not list the package itself: %q", pkg, out)
		}
	}
}
