package logwatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// Options configure a Follower.
type Options struct {
	// Files to follow; "-" reads Stdin (once).
	Files []string
	// FromStart reads what the files already hold (a first run); by default
	// a file is read from its end as it is when Run starts. Files that
	// appear later (created, rotated in) are always read from their start.
	FromStart bool
	// MaxLine is the longest line read (default DefaultMaxLine); longer
	// lines are counted and skipped.
	MaxLine int
	// Poll is how often files are checked without a notification (and the
	// only way when inotify is unavailable or PollOnly is set); default 1s.
	Poll time.Duration
	// PollOnly disables inotify (e.g. for network file systems).
	PollOnly bool
	// RotateGrace is how long a file renamed or deleted away is still read
	// after it last grew, for a writer that has not reopened its log yet
	// (FreeSWITCH reopens on "fsctl send_sighup"); default 1m.
	RotateGrace time.Duration
	// PublicContexts are the dialplan contexts whose unrouted calls are
	// no_route offenses; nil means "public".
	PublicContexts []string
	// Location is the zone of the log's timestamps; nil means time.Local.
	Location *time.Location
	// Stdin is read for "-"; nil means os.Stdin.
	Stdin io.Reader

	Sink       offense.Sink
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Follower follows FreeSWITCH log files across rotations and sends the
// offenses they show to a Sink.
type Follower struct {
	opts    Options
	log     *slog.Logger
	m       *Metrics
	tailers []*tailer
	stdin   bool
	ready   chan struct{} // closed once Run has positioned every file
}

// NewFollower checks o and returns a Follower; nothing is opened before Run.
func NewFollower(o Options) (*Follower, error) {
	var errs []error
	if len(o.Files) == 0 {
		errs = append(errs, errors.New("logwatch: no file to follow"))
	}
	if o.Sink == nil {
		errs = append(errs, errors.New("logwatch: no offense sink"))
	}
	if o.MaxLine <= 0 {
		o.MaxLine = DefaultMaxLine
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.RotateGrace <= 0 {
		o.RotateGrace = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Stdin == nil {
		o.Stdin = os.Stdin
	}
	f := &Follower{
		opts:  o,
		log:   o.Logger.With("component", "logwatch"),
		m:     NewMetrics(o.Registerer),
		ready: make(chan struct{}),
	}
	seen := map[string]bool{}
	for _, path := range o.Files {
		if path == "-" {
			if f.stdin {
				errs = append(errs, errors.New("logwatch: stdin (-) listed twice"))
			}
			f.stdin = true
			continue
		}
		if path == "" {
			errs = append(errs, errors.New("logwatch: empty file name"))
			continue
		}
		clean := filepath.Clean(path)
		if seen[clean] {
			errs = append(errs, fmt.Errorf("logwatch: %s listed twice", path))
			continue
		}
		seen[clean] = true
		f.tailers = append(f.tailers, &tailer{
			f:    f,
			path: clean,
			dir:  filepath.Dir(clean),
			wake: make(chan struct{}, 1),
			p:    f.newParser(),
			log:  f.log.With("file", clean),
		})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Follower) newParser() *Parser {
	p := NewParser(f.opts.Now)
	p.SetLocation(f.opts.Location)
	if f.opts.PublicContexts != nil {
		p.SetPublicContexts(f.opts.PublicContexts...)
	}
	return p
}

// Run follows the files until ctx is done, then returns nil.
func (f *Follower) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var w *fsnotify.Watcher
	if !f.opts.PollOnly && len(f.tailers) > 0 {
		var err error
		if w, err = fsnotify.NewWatcher(); err != nil {
			f.log.Warn("inotify unavailable, polling files", "every", f.opts.Poll, "err", err)
			w = nil
		}
	}
	byDir := map[string][]*tailer{}
	for _, t := range f.tailers {
		byDir[t.dir] = append(byDir[t.dir], t)
	}
	if w != nil {
		for dir := range byDir {
			if err := w.Add(dir); err != nil {
				f.log.Warn("cannot watch directory, polling it", "dir", dir, "every", f.opts.Poll, "err", err)
			}
		}
	}
	for _, t := range f.tailers {
		t.open(true)
	}
	close(f.ready)

	var wg sync.WaitGroup
	for _, t := range f.tailers {
		wg.Go(func() { t.run(ctx) })
	}
	if f.stdin {
		wg.Go(func() { f.readStdin(ctx) })
	}
	if w != nil {
		wg.Go(func() { f.dispatch(ctx, w, byDir) })
	}
	wg.Wait()
	if w != nil {
		w.Close()
	}
	return nil
}

// dispatch wakes the tailers of the directory an event happened in (a
// rotated-away file they still read lives there too).
func (f *Follower) dispatch(ctx context.Context, w *fsnotify.Watcher, byDir map[string][]*tailer) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			ts := byDir[filepath.Dir(filepath.Clean(ev.Name))]
			if ts == nil {
				ts = byDir[filepath.Clean(ev.Name)] // the directory itself
			}
			for _, t := range ts {
				select {
				case t.wake <- struct{}{}:
				default:
				}
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			// Overflow or a watch lost: the poll catches up.
			f.log.Warn("inotify", "err", err)
		}
	}
}

// emit reads one complete line.
func (f *Follower) emit(p *Parser, line []byte) {
	f.m.lines.Inc()
	if o, ok := p.Parse(line); ok {
		f.opts.Sink.Offend(o)
	}
}

// account moves a splitter's and a parser's counts to the metrics.
func (f *Follower) account(sp *splitter, p *Parser, errs *int64) {
	if n := sp.takeSkipped(); n > 0 {
		f.m.lines.Add(float64(n))
		f.m.tooLong.Add(float64(n))
	}
	if e := p.Errors(); e != *errs {
		f.m.parseErrors.Add(float64(e - *errs))
		*errs = e
	}
}

// tailer follows one path.
type tailer struct {
	ctx    context.Context // Run's; a long backlog stops reading when done
	f      *Follower
	path   string
	dir    string
	wake   chan struct{}
	p      *Parser
	errs   int64 // parser errors already counted
	log    *slog.Logger
	cur    *source   // the file now at path
	old    []*source // files rotated away, read until idle
	missed bool      // "waiting for the file" logged
	failed string    // last open error logged

	pmu     sync.Mutex
	problem string // why path cannot be read now; "" when it can (or does not exist yet)
}

func (t *tailer) setProblem(p string) {
	t.pmu.Lock()
	changed := t.problem != p
	t.problem = p
	t.pmu.Unlock()
	if changed {
		t.f.countProblems()
	}
}

// countProblems sets sipwarden_log_files_unreadable.
func (f *Follower) countProblems() {
	n := 0
	for _, t := range f.tailers {
		t.pmu.Lock()
		if t.problem != "" {
			n++
		}
		t.pmu.Unlock()
	}
	f.m.unreadable.Set(float64(n))
}

// Note names the files that cannot be read, and why: the /readyz detail
// (other sources may still work, so it does not fail readiness).
func (f *Follower) Note() string {
	var out []string
	for _, t := range f.tailers {
		t.pmu.Lock()
		if t.problem != "" {
			out = append(out, t.path+": "+t.problem)
		}
		t.pmu.Unlock()
	}
	return strings.Join(out, "; ")
}

// source is one open file.
type source struct {
	file  *os.File
	info  os.FileInfo
	off   int64 // bytes read
	sp    *splitter
	grown time.Time // when it last had new data
}

func (t *tailer) run(ctx context.Context) {
	t.ctx = ctx
	defer t.closeAll()
	tick := time.NewTicker(t.f.opts.Poll)
	defer tick.Stop()
	t.step()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
		case <-tick.C:
		}
		t.step()
	}
}

// step reads whatever is new and follows rotations.
func (t *tailer) step() {
	now := t.f.opts.Now()
	keep := t.old[:0]
	for _, s := range t.old {
		t.drain(s)
		if now.Sub(s.grown) < t.f.opts.RotateGrace {
			keep = append(keep, s)
			continue
		}
		t.finish(s)
	}
	clear(t.old[len(keep):])
	t.old = keep

	if t.cur == nil {
		t.open(false)
		if t.cur == nil {
			return
		}
	}
	t.drain(t.cur)

	st, err := os.Stat(t.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Renamed or deleted: the writer may still append to it until it
		// reopens its log; read it while it grows.
		t.log.Info("log file moved away; reading it until idle, waiting for a new one")
		t.retire()
	case err != nil:
		// Cannot tell (permissions changed?): keep reading what is open.
		if msg := err.Error(); msg != t.failed {
			t.log.Warn("stat log file", "err", err)
			t.failed = msg
		}
	case !os.SameFile(st, t.cur.info):
		t.log.Info("log file replaced (rotation); reading the new one from its start")
		t.retire()
		t.open(false)
		if t.cur != nil {
			t.drain(t.cur)
		}
	case st.Size() < t.cur.off:
		// copytruncate: the writer (O_APPEND) goes on at the new end. A
		// partial line held is kept: its end is what follows.
		t.log.Info("log file truncated in place (copytruncate); reading it from its start", "was", t.cur.off, "now", st.Size())
		if _, err := t.cur.file.Seek(0, io.SeekStart); err != nil {
			t.log.Warn("seek log file", "err", err)
			t.retire()
			return
		}
		t.cur.off = 0
		t.drain(t.cur)
	}
}

// open opens path; at startup, unless FromStart, from its end.
func (t *tailer) open(startup bool) {
	file, err := os.Open(t.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if !t.missed {
				t.log.Info("log file does not exist yet; waiting for it")
				t.missed = true
			}
		} else if msg := err.Error(); msg != t.failed {
			// one line per distinct failure, then quiet retries every poll
			hint := ""
			if errors.Is(err, fs.ErrPermission) {
				hint = " (is the sipwarden user in the freeswitch group?)"
			}
			t.log.Error("cannot read log file; retrying quietly"+hint, "err", err)
			t.failed = msg
			why := err.Error()
			if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
				why = pe.Err.Error()
			}
			t.setProblem("cannot read: " + why + hint)
		}
		return
	}
	info, err := file.Stat()
	if err != nil {
		file.Close()
		t.log.Warn("stat log file", "err", err)
		return
	}
	if info.IsDir() {
		file.Close()
		if t.failed != "directory" {
			t.log.Error("log path is a directory; name the log file in logs.files (e.g. /var/log/freeswitch/freeswitch.log); retrying quietly")
			t.failed = "directory"
			t.setProblem("is a directory, not a log file")
		}
		return
	}
	s := &source{file: file, info: info, sp: newSplitter(t.f.opts.MaxLine), grown: t.f.opts.Now()}
	if startup && !t.f.opts.FromStart {
		off, err := file.Seek(0, io.SeekEnd)
		if err != nil {
			file.Close()
			t.log.Warn("seek log file", "err", err)
			return
		}
		s.off = off
	}
	t.missed, t.failed = false, ""
	t.setProblem("")
	t.cur = s
}

// drain reads s to its current end, holding a partial last line.
func (t *tailer) drain(s *source) {
	for t.ctx == nil || t.ctx.Err() == nil {
		n, err := s.sp.fill(s.file)
		if n > 0 {
			s.off += int64(n)
			s.grown = t.f.opts.Now()
			for {
				line, ok := s.sp.next()
				if !ok {
					break
				}
				t.f.emit(t.p, line)
			}
			t.f.account(s.sp, t.p, &t.errs)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.log.Warn("read log file", "err", err)
			}
			return
		}
		if n == 0 {
			return
		}
	}
}

// retire moves the current file to the rotated-away list, reading what
// reached it since the last look first, so lines keep their order.
func (t *tailer) retire() {
	t.drain(t.cur)
	t.old = append(t.old, t.cur)
	t.cur = nil
}

// finish reads a rotated-away file's last partial line (its writer has
// moved on) and closes it.
func (t *tailer) finish(s *source) {
	if line, ok := s.sp.rest(); ok {
		t.f.emit(t.p, line)
	}
	t.f.account(s.sp, t.p, &t.errs)
	s.file.Close()
}

func (t *tailer) closeAll() {
	for _, s := range t.old {
		s.file.Close()
	}
	t.old = nil
	if t.cur != nil {
		t.cur.file.Close()
		t.cur = nil
	}
}

// readStdin reads Stdin to its end (or until ctx is done).
func (f *Follower) readStdin(ctx context.Context) {
	log := f.log.With("file", "-")
	r := f.opts.Stdin
	if file, ok := r.(*os.File); ok {
		pf, err := pollable(file)
		if err != nil {
			log.Debug("stdin cannot be interrupted; shutdown waits for its next line", "err", err)
		} else {
			if pf != file {
				defer pf.Close()
			}
			r = pf
		}
	}
	// Unblock a pending read when ctx is done.
	stop := context.AfterFunc(ctx, func() {
		switch v := r.(type) {
		case interface{ SetReadDeadline(time.Time) error }:
			v.SetReadDeadline(time.Now())
		case io.Closer:
			v.Close()
		}
	})
	defer stop()
	p := f.newParser()
	var errs int64
	sp := newSplitter(f.opts.MaxLine)
	for {
		_, err := sp.fill(r)
		for {
			line, ok := sp.next()
			if !ok {
				break
			}
			f.emit(p, line)
		}
		f.account(sp, p, &errs)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if line, ok := sp.rest(); ok {
				f.emit(p, line)
			}
			f.account(sp, p, &errs)
			if errors.Is(err, io.EOF) {
				log.Info("stdin closed")
			} else {
				log.Warn("read stdin", "err", err)
			}
			return
		}
	}
}
