package ipset

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/sipwarden/sipwarden/internal/testenv"
)

var nsSeq atomic.Int64

// testNS is a network namespace created by a test and deleted at its end.
type testNS struct {
	Name string
	H    netns.NsHandle
}

func newNS(t testing.TB, tag string) *testNS {
	t.Helper()
	testenv.Root(t)
	testenv.Tool(t, "ip", "iproute2")
	name := fmt.Sprintf("swtest-ipset-%d-%s%d", os.Getpid(), tag, nsSeq.Add(1))
	sh(t, "ip", "netns", "add", name)
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
	sh(t, "ip", "-n", name, "link", "set", "lo", "up")
	return &testNS{Name: name, H: h}
}

// exec runs a command inside the namespace.
func (n *testNS) exec(t testing.TB, args ...string) string {
	t.Helper()
	return sh(t, append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}

func sh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNS runs f on a thread switched into ns: sockets f opens live there.
func inNS(ns netns.NsHandle, f func() error) error {
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
		return fmt.Errorf("restore netns: %w", err) // thread stays locked and dies with the goroutine
	}
	runtime.UnlockOSThread()
	return ferr
}
