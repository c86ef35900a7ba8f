package jail

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a test starts (writer, responder, attacker process
// waiters, Event Socket client) must be gone when it ends.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
