package logwatch

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// DefaultMaxLine is the longest line read; longer lines are counted
// (sipwarden_log_lines_skipped_total{reason="too_long"}) and skipped.
const DefaultMaxLine = 64 << 10

// DefaultPoll is how often a followed file is checked without a
// notification.
const DefaultPoll = time.Second

// DefaultPublicContext is the dialplan context whose unrouted calls are
// no_route offenses when none is configured.
const DefaultPublicContext = "public"

// Open opens a log file for reading, decompressing it when its content is
// gzip (whatever its name).
func Open(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	br := bufio.NewReaderSize(f, 64<<10)
	magic, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, fmt.Errorf("read log %s: %w", path, err)
	}
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("gunzip log %s: %w", path, err)
		}
		return &readCloser{Reader: zr, close: func() error { zr.Close(); return f.Close() }}, nil
	}
	return &readCloser{Reader: br, close: f.Close}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r *readCloser) Close() error { return r.close() }

// Scan reads r to its end, line by line, and sends every offense p finds to
// sink. It is what replay and the benchmarks use. Lines longer than
// DefaultMaxLine are counted and skipped; a last line without a newline is
// read. m may be nil. It returns the number of lines read (skipped ones
// included) and stops early, with ctx's error, when ctx is done.
func Scan(ctx context.Context, r io.Reader, p *Parser, sink offense.Sink, m *Metrics) (lines int64, err error) {
	return ScanLimit(ctx, r, p, sink, m, DefaultMaxLine)
}

// ScanLimit is Scan with another line length limit (<= 0 means
// DefaultMaxLine).
func ScanLimit(ctx context.Context, r io.Reader, p *Parser, sink offense.Sink, m *Metrics, maxLine int) (lines int64, err error) {
	sp := newSplitter(maxLine)
	errs0 := p.Errors()
	var pending, skipped int64
	flush := func() {
		if m != nil {
			m.lines.Add(float64(pending))
			if skipped > 0 {
				m.tooLong.Add(float64(skipped))
			}
			if e := p.Errors(); e != errs0 {
				m.parseErrors.Add(float64(e - errs0))
				errs0 = e
			}
		}
		lines += pending
		pending, skipped = 0, 0
	}
	defer flush()
	for {
		for {
			line, ok := sp.next()
			if !ok {
				break
			}
			pending++
			if o, ok := p.Parse(line); ok {
				sink.Offend(o)
			}
		}
		if n := sp.takeSkipped(); n > 0 {
			pending += n
			skipped += n
		}
		if pending >= 1<<14 {
			flush()
			if err := ctx.Err(); err != nil {
				return lines, err
			}
		}
		_, rerr := sp.fill(r)
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				if line, ok := sp.rest(); ok {
					pending++
					if o, ok := p.Parse(line); ok {
						sink.Offend(o)
					}
				}
				if n := sp.takeSkipped(); n > 0 {
					pending += n
					skipped += n
				}
				return lines, nil
			}
			return lines, fmt.Errorf("read log: %w", rerr)
		}
	}
}

// splitter cuts a byte stream into lines without copying them, holds a
// partial last line until its newline arrives, and drops lines longer than
// max (counting them).
type splitter struct {
	buf      []byte
	r, w     int
	max      int
	skipping bool  // inside a too-long line, dropping until its newline
	skipped  int64 // too-long lines dropped since takeSkipped
}

func newSplitter(max int) *splitter {
	if max <= 0 {
		max = DefaultMaxLine
	}
	size := 2 * (max + 1)
	if size < 64<<10 {
		size = 64 << 10
	}
	return &splitter{buf: make([]byte, size), max: max}
}

// next returns the next complete line (without "\n"), valid until the next
// call to fill.
func (s *splitter) next() ([]byte, bool) {
	for s.r < s.w {
		i := bytes.IndexByte(s.buf[s.r:s.w], '\n')
		if i < 0 {
			if s.w-s.r > s.max {
				// Too long already: drop what we have, keep dropping.
				if !s.skipping {
					s.skipping = true
					s.skipped++
				}
				s.r, s.w = 0, 0
			}
			return nil, false
		}
		line := s.buf[s.r : s.r+i]
		s.r += i + 1
		if s.skipping {
			s.skipping = false
			continue
		}
		if len(line) > s.max {
			s.skipped++
			continue
		}
		return line, true
	}
	return nil, false
}

// fill reads more bytes from r, first moving the partial line to the front.
func (s *splitter) fill(r io.Reader) (int, error) {
	if s.r > 0 {
		s.w = copy(s.buf, s.buf[s.r:s.w])
		s.r = 0
	}
	if s.w == len(s.buf) {
		// Cannot happen: next drops a partial line longer than max.
		s.w = 0
	}
	n, err := r.Read(s.buf[s.w:])
	s.w += n
	if n > 0 && errors.Is(err, io.EOF) {
		err = nil
	}
	return n, err
}

// rest returns the partial line held (the stream ended without a final
// newline), and forgets it.
func (s *splitter) rest() ([]byte, bool) {
	line := s.buf[s.r:s.w]
	s.r, s.w = 0, 0
	if s.skipping {
		s.skipping = false
		return nil, false
	}
	if len(line) == 0 {
		return nil, false
	}
	if len(line) > s.max {
		s.skipped++
		return nil, false
	}
	return line, true
}

// pending reports whether a partial line is held.
func (s *splitter) pending() bool { return s.w > s.r || s.skipping }

func (s *splitter) takeSkipped() int64 {
	n := s.skipped
	s.skipped = 0
	return n
}
