package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
)

var nsSeq atomic.Int64

// NS is a network namespace created by a test and deleted at its end (its
// ipsets and iptables rules go with it).
type NS struct {
	Name string
	H    netns.NsHandle
}

// NewNS creates a namespace with loopback up. It needs root and iproute2
// (see Root and Tool).
func NewNS(t testing.TB, tag string) *NS {
	t.Helper()
	Root(t)
	Tool(t, "ip", "iproute2")
	name := fmt.Sprintf("swtest-%d-%s%d", os.Getpid(), tag, nsSeq.Add(1))
	Sh(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("netns %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	Sh(t, "ip", "-n", name, "link", "set", "lo", "up")
	return &NS{Name: name, H: h}
}

// Exec runs a command inside the namespace and returns its output; a
// failure fails the test.
func (n *NS) Exec(t testing.TB, args ...string) string {
	t.Helper()
	return Sh(t, append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}

// Sh runs a command and returns its combined output; a failure fails the
// test with the output.
func Sh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// InNS runs f on a thread switched into ns: sockets f opens live there.
func InNS(ns netns.NsHandle, f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("restore netns: %w", err) // the thread stays locked and dies with the goroutine
	}
	runtime.UnlockOSThread()
	return ferr
}
