package logwatch

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// attackLine is a distinct auth_failure line: user n.
func attackLine(n int) string {
	return fmt.Sprintf("2026-11-25 19:47:20.879698 86.47%% [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [%d@127.0.0.1] from ip 203.0.113.%d\n", n, 1+n%250)
}

const noiseLine = "2026-11-25 19:46:28.879686 96.77% [DEBUG] sofia.c:10566 verifying acl \"domains\" for ip/port 127.0.0.1:0.\n"

// collector records the users of the offenses it receives.
type collector struct {
	mu    sync.Mutex
	users []string
}

func (c *collector) Offend(o offense.Offense) {
	c.mu.Lock()
	c.users = append(c.users, o.User)
	c.mu.Unlock()
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.users)
}

// want checks that users from..to-1 were each seen exactly once, and nothing else.
func (c *collector) want(t *testing.T, from, to int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	got := append([]string(nil), c.users...)
	sort.Strings(got)
	var want []string
	for i := from; i < to; i++ {
		want = append(want, fmt.Sprint(i))
	}
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("users seen %v, want %v", got, want)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type followed struct {
	f      *Follower
	c      *collector
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func follow(t *testing.T, o Options) *followed {
	t.Helper()
	c := &collector{}
	reg := prometheus.NewRegistry()
	o.Sink, o.Registerer = c, reg
	if o.Poll == 0 {
		o.Poll = 20 * time.Millisecond
	}
	f, err := NewFollower(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	select {
	case <-f.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not start")
	}
	fw := &followed{f: f, c: c, reg: reg, cancel: cancel, done: done}
	t.Cleanup(fw.stop)
	return fw
}

// stop cancels Run and waits for it to return (once).
func (fw *followed) stop() {
	fw.once.Do(func() {
		fw.cancel()
		select {
		case err := <-fw.done:
			if err != nil {
				panic(fmt.Sprintf("Run: %v", err))
			}
		case <-time.After(10 * time.Second):
			panic("Run did not return after cancel")
		}
	})
}

func (fw *followed) lines() float64 { return testutil.ToFloat64(fw.f.m.lines) }

func appendLines(t *testing.T, path string, from, to int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := from; i < to; i++ {
		if _, err := f.WriteString(noiseLine + attackLine(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// modes runs a test with inotify alone (the poll is too slow to matter)
// and with the poll alone.
func modes(t *testing.T, run func(t *testing.T, mode Options)) {
	for _, m := range []struct {
		name string
		o    Options
	}{
		{"inotify", Options{Poll: time.Hour}},
		{"poll", Options{Poll: 20 * time.Millisecond, PollOnly: true}},
	} {
		t.Run(m.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			run(t, m.o)
		})
	}
}

func TestFollowStartAtEnd(t *testing.T) {
	modes(t, func(t *testing.T, mode Options) {
		path := filepath.Join(t.TempDir(), "freeswitch.log")
		appendLines(t, path, 0, 5)
		fw := follow(t, Options{Files: []string{path}, PollOnly: mode.PollOnly, Poll: mode.Poll})
		appendLines(t, path, 5, 8)
		waitFor(t, "3 offenses", func() bool { return fw.c.len() >= 3 })
		fw.stop()
		fw.c.want(t, 5, 8)
		if n := fw.lines(); n != 6 {
			t.Errorf("%v lines counted, want 6", n)
		}
	})
}

func TestFollowFromStart(t *testing.T) {
	modes(t, func(t *testing.T, mode Options) {
		path := filepath.Join(t.TempDir(), "freeswitch.log")
		appendLines(t, path, 0, 5)
		fw := follow(t, Options{Files: []string{path}, FromStart: true, PollOnly: mode.PollOnly, Poll: mode.Poll})
		appendLines(t, path, 5, 8)
		waitFor(t, "8 offenses", func() bool { return fw.c.len() >= 8 })
		fw.stop()
		fw.c.want(t, 0, 8)
	})
}

// TestFollowRename is logrotate's "create": the file is renamed, the
// writer goes on appending to it until it reopens, then writes to a new
// file at the same path.
func TestFollowRename(t *testing.T) {
	modes(t, func(t *testing.T, mode Options) {
		dir := t.TempDir()
		path := filepath.Join(dir, "freeswitch.log")
		appendLines(t, path, 0, 10)
		fw := follow(t, Options{Files: []string{path}, FromStart: true, PollOnly: mode.PollOnly, Poll: mode.Poll})
		waitFor(t, "10 offenses", func() bool { return fw.c.len() >= 10 })

		if err := os.Rename(path, path+".1"); err != nil {
			t.Fatal(err)
		}
		appendLines(t, path+".1", 10, 15) // the writer has not reopened yet
		waitFor(t, "15 offenses", func() bool { return fw.c.len() >= 15 })
		appendLines(t, path, 15, 20) // logrotate created it; the writer reopened
		waitFor(t, "20 offenses", func() bool { return fw.c.len() >= 20 })
		// A second rotation.
		if err := os.Rename(path, path+".2"); err != nil {
			t.Fatal(err)
		}
		appendLines(t, path, 20, 25)
		waitFor(t, "25 offenses", func() bool { return fw.c.len() >= 25 })
		fw.stop()
		fw.c.want(t, 0, 25)
		if n := fw.lines(); n != 50 {
			t.Errorf("%v lines counted, want 50", n)
		}
	})
}

// TestFollowRenameBeforeNewData: the new file exists (empty) before the
// writer has reopened; lines written to the old one meanwhile are read.
func TestFollowRenameBeforeNewData(t *testing.T) {
	modes(t, func(t *testing.T, mode Options) {
		path := filepath.Join(t.TempDir(), "freeswitch.log")
		appendLines(t, path, 0, 3)
		fw := follow(t, Options{Files: []string{path}, FromStart: true, PollOnly: mode.PollOnly, Poll: mode.Poll})
		waitFor(t, "3 offenses", func() bool { return fw.c.len() >= 3 })
		if err := os.Rename(path, path+".1"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		appendLines(t, path+".1", 3, 6)
		waitFor(t, "6 offenses", func() bool { return fw.c.len() >= 6 })
		appendLines(t, path, 6, 9)
		waitFor(t, "9 offenses", func() bool { return fw.c.len() >= 9 })
		fw.stop()
		fw.c.want(t, 0, 9)
	})
}

// TestFollowCopyTruncate is logrotate's "copytruncate": the file is copied
// and truncated in place; the writer (O_APPEND) goes on at the new end.
func TestFollowCopyTruncate(t *testing.T) {
	modes(t, func(t *testing.T, mode Options) {
		path := filepath.Join(t.TempDir(), "freeswitch.log")
		w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		write := func(from, to int) {
			for i := from; i < to; i++ {
				if _, err := w.WriteString(noiseLine + attackLine(i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		write(0, 10)
		fw := follow(t, Options{Files: []string{path}, FromStart: true, PollOnly: mode.PollOnly, Poll: mode.Poll})
		waitFor(t, "10 offenses", func() bool { return fw.c.len() >= 10 })
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+".1", data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		write(10, 14) // fewer bytes than before: the truncation is visible by size
		waitFor(t, "14 offenses", func() bool { return fw.c.len() >= 14 })
		fw.stop()
		fw.c.want(t, 0, 14)
		if n := fw.lines(); n != 28 {
			t.Errorf("%v lines counted, want 28", n)
		}
	})
}

func TestFollowMissingThenCreated(t *testing.T) {
	modes(t, func(t *testing.T, mode Options) {
		path := filepath.Join(t.TempDir(), "freeswitch.log")
		fw := follow(t, Options{Files: []string{path}, PollOnly: mode.PollOnly, Poll: mode.Poll}) // not FromStart: a new file is read whole
		appendLines(t, path, 0, 4)
		waitFor(t, "4 offenses", func() bool { return fw.c.len() >= 4 })
		fw.stop()
		fw.c.want(t, 0, 4)
	})
}

func TestFollowMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "log", "freeswitch")
	path := filepath.Join(dir, "freeswitch.log")
	fw := follow(t, Options{Files: []string{path}})
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	appendLines(t, path, 0, 2)
	waitFor(t, "2 offenses", func() bool { return fw.c.len() >= 2 })
	fw.stop()
	fw.c.want(t, 0, 2)
}

func TestFollowDeleteRecreate(t *testing.T) {
	modes(t, func(t *testing.T, mode Options) {
		path := filepath.Join(t.TempDir(), "freeswitch.log")
		appendLines(t, path, 0, 5)
		fw := follow(t, Options{Files: []string{path}, FromStart: true, PollOnly: mode.PollOnly, Poll: mode.Poll})
		waitFor(t, "5 offenses", func() bool { return fw.c.len() >= 5 })
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		appendLines(t, path, 5, 9)
		waitFor(t, "9 offenses", func() bool { return fw.c.len() >= 9 })
		fw.stop()
		fw.c.want(t, 0, 9)
	})
}

// TestFollowPartialLine: a line is read only once its newline is written.
func TestFollowPartialLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "freeswitch.log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fw := follow(t, Options{Files: []string{path}})
	line := attackLine(7)
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteString(noiseLine + line[:40]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the complete line", func() bool { return fw.lines() == 1 })
	if n := fw.c.len(); n != 0 {
		t.Fatalf("%d offenses from a partial line", n)
	}
	if _, err := w.WriteString(line[40:]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the offense", func() bool { return fw.c.len() == 1 })
	fw.stop()
	fw.c.want(t, 7, 8)
	if n := fw.lines(); n != 2 {
		t.Errorf("%v lines, want 2", n)
	}
}

// TestFollowRotatedPartialLine: a rotated-away file's unterminated last
// line is read once the file has been idle for RotateGrace.
func TestFollowRotatedPartialLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "freeswitch.log")
	line := attackLine(1)
	if err := os.WriteFile(path, []byte(attackLine(0)+line[:len(line)-1]), 0o644); err != nil {
		t.Fatal(err)
	}
	fw := follow(t, Options{Files: []string{path}, FromStart: true, RotateGrace: 50 * time.Millisecond})
	waitFor(t, "1 offense", func() bool { return fw.c.len() >= 1 })
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "2 offenses", func() bool { return fw.c.len() >= 2 })
	fw.stop()
	fw.c.want(t, 0, 2)
}

func TestFollowSeveralFiles(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.log"), filepath.Join(t.TempDir(), "b.log")
	fw := follow(t, Options{Files: []string{a, b}})
	appendLines(t, a, 0, 3)
	appendLines(t, b, 3, 6)
	waitFor(t, "6 offenses", func() bool { return fw.c.len() >= 6 })
	fw.stop()
	fw.c.want(t, 0, 6)
}

func TestFollowStdin(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	path := filepath.Join(t.TempDir(), "freeswitch.log")
	fw := follow(t, Options{Files: []string{"-", path}, Stdin: r})
	for i := 0; i < 3; i++ {
		fmt.Fprint(w, noiseLine+attackLine(i))
	}
	fmt.Fprint(w, attackLine(3)[:20])
	waitFor(t, "3 offenses", func() bool { return fw.c.len() >= 3 })
	fmt.Fprint(w, attackLine(3)[20:])
	appendLines(t, path, 4, 5)
	waitFor(t, "5 offenses", func() bool { return fw.c.len() >= 5 })
	w.Close()
	// Run goes on after stdin's end: the file is still followed.
	appendLines(t, path, 5, 6)
	waitFor(t, "6 offenses", func() bool { return fw.c.len() >= 6 })
	fw.stop()
	fw.c.want(t, 0, 6)
}

func TestNewFollowerErrors(t *testing.T) {
	cases := map[string]Options{
		"no files":      {Sink: &collector{}},
		"no sink":       {Files: []string{"x"}},
		"stdin twice":   {Files: []string{"-", "-"}, Sink: &collector{}},
		"file twice":    {Files: []string{"/a/b", "/a//b"}, Sink: &collector{}},
		"empty name":    {Files: []string{""}, Sink: &collector{}},
		"several flaws": {Files: []string{"-", "-", ""}},
	}
	for name, o := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := NewFollower(o); err == nil {
				t.Error("no error")
			}
		})
	}
}

// TestFollowChunkedWrites: the fixture session log written in small pieces
// (lines cut anywhere) yields exactly what reading it whole does.
func TestFollowChunkedWrites(t *testing.T) {
	data, err := os.ReadFile("testdata/golden/full_session/input.log")
	if err != nil {
		t.Fatal(err)
	}
	var want collector
	wantLines, err := Scan(context.Background(), bytes.NewReader(data), newTestParser(), &want, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "freeswitch.log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fw := follow(t, Options{Files: []string{path}})
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i, size := 0, 1; i < len(data); i, size = i+size, size%97+13 {
		if _, err := w.Write(data[i:min(i+size, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every line", func() bool { return fw.lines() == float64(wantLines) })
	fw.stop()
	if fmt.Sprint(fw.c.users) != fmt.Sprint(want.users) {
		t.Errorf("offenses %v, want %v", fw.c.users, want.users)
	}
}
