package logwatch

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// TestFollowStdinCancel: Run returns while stdin is idle, open and blocking.
func TestFollowStdinCancel(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	// A blocking pipe, like a shell's pipe into sipwarden: deadlines do
	// not work on it as it is.
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w := os.NewFile(uintptr(fds[0]), "stdin"), os.NewFile(uintptr(fds[1]), "pipe")
	defer w.Close()
	defer r.Close()
	if err := r.SetReadDeadline(time.Time{}); err == nil {
		t.Fatal("a blocking pipe accepts deadlines: the test tests nothing")
	}
	fw := follow(t, Options{Files: []string{"-"}, Stdin: r})
	fmt.Fprint(w, attackLine(1))
	waitFor(t, "1 offense", func() bool { return fw.c.len() >= 1 })
	fw.stop() // panics if Run does not return
	fw.c.want(t, 1, 2)
}
