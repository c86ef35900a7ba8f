package eslwatch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Errors of the frame reader. ErrProtocol ends the connection: once a frame
// is mis-read, nothing after it can be trusted. ErrFrameTooLarge does not:
// the frame's body is read and discarded, and the stream goes on.
var (
	ErrProtocol      = errors.New("event socket protocol error")
	ErrFrameTooLarge = errors.New("event socket frame over the size limit")
)

const (
	maxHeaderLine  = 8 << 10 // outer header lines are short ("Content-Length: 1369")
	maxHeaderLines = 64
	readBufSize    = 64 << 10
	keepBufMax     = 1 << 20 // a larger body buffer is released after use
)

// The content types the watcher acts on, as constants: the reader maps a
// known type to one of them without allocating.
const (
	ctEventPlain = "text/event-plain"
	ctEventJSON  = "text/event-json"
	ctDisconnect = "text/disconnect-notice"
	ctAuth       = "auth/request"
	ctReply      = "command/reply"
	ctAPI        = "api/response"
	ctRude       = "text/rude-rejection"
	ctNone       = ""
	ctOther      = "other" // any other type, counted and skipped
)

// frame is one Event Socket message: outer headers, then Content-Length
// bytes of body. Everything aliases the reader's buffers until the next
// read. A frame over the size limit comes with oversize set to its
// announced length and no body: the body was discarded.
type frame struct {
	hdr      []byte // the header lines, "Name: value\n" each
	body     []byte
	oversize int
}

// get returns the value of the first header name (nil when absent).
func (f *frame) get(name string) []byte {
	h := f.hdr
	for len(h) > 0 {
		i := bytes.IndexByte(h, '\n')
		line := h[:i]
		h = h[i+1:]
		c := bytes.IndexByte(line, ':')
		if equalFold(line[:c], name) {
			return bytes.TrimLeft(line[c+1:], " \t")
		}
	}
	return nil
}

func (f *frame) contentType() string {
	switch ct := f.get("Content-Type"); string(ct) {
	case ctEventPlain:
		return ctEventPlain
	case ctEventJSON:
		return ctEventJSON
	case ctDisconnect:
		return ctDisconnect
	case ctAuth:
		return ctAuth
	case ctReply:
		return ctReply
	case ctAPI:
		return ctAPI
	case ctRude:
		return ctRude
	case "":
		return ctNone
	}
	return ctOther
}

// frameReader reads frames as FreeSWITCH writes them: header lines ended by
// LF (a CR before it is tolerated), a blank line, then exactly
// Content-Length bytes. It never allocates more than max for a body, grows
// the body buffer only as bytes actually arrive, and reuses its buffers
// from one frame to the next.
type frameReader struct {
	br  *bufio.Reader
	max int
	buf []byte
	f   frame
}

func newFrameReader(r io.Reader, max int) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, readBufSize), max: max}
}

// detach hands the current body's buffer to the caller: the reader will
// not reuse it (a reply travels to another goroutine).
func (r *frameReader) detach() []byte {
	b := r.f.body
	if len(b) > 0 {
		r.buf = nil
	}
	return b
}

// next reads one frame. It returns io.EOF at a clean end between frames.
func (r *frameReader) next() (*frame, error) {
	if cap(r.buf) > keepBufMax {
		r.buf = nil
	}
	if cap(r.f.hdr) > keepBufMax {
		r.f.hdr = nil
	}
	r.f.hdr = r.f.hdr[:0]
	r.f.body = nil
	r.f.oversize = 0
	lines := 0
	for {
		line, err := r.br.ReadSlice('\n')
		if err != nil {
			switch {
			case errors.Is(err, bufio.ErrBufferFull):
				return nil, fmt.Errorf("%w: header line over %d bytes", ErrProtocol, readBufSize)
			case errors.Is(err, io.EOF) && len(line) == 0 && lines == 0:
				return nil, io.EOF
			case errors.Is(err, io.EOF):
				return nil, fmt.Errorf("frame headers: %w", io.ErrUnexpectedEOF)
			}
			return nil, err
		}
		line = bytes.TrimSuffix(line[:len(line)-1], []byte{'\r'})
		if len(line) == 0 {
			if lines == 0 {
				continue // stray blank line between frames
			}
			break
		}
		if len(line) > maxHeaderLine {
			return nil, fmt.Errorf("%w: header line of %d bytes", ErrProtocol, len(line))
		}
		if i := bytes.IndexByte(line, ':'); i <= 0 {
			return nil, fmt.Errorf("%w: malformed header line %.40q", ErrProtocol, line)
		}
		if lines == maxHeaderLines {
			return nil, fmt.Errorf("%w: more than %d header lines", ErrProtocol, maxHeaderLines)
		}
		lines++
		r.f.hdr = append(append(r.f.hdr, line...), '\n')
	}
	cl := r.f.get("Content-Length")
	if cl == nil {
		return &r.f, nil
	}
	n, ok := parseLength(cl)
	if !ok {
		return nil, fmt.Errorf("%w: Content-Length %.20q", ErrProtocol, cl)
	}
	if n > r.max {
		// Skip it whole: the frame boundary holds, the stream goes on.
		if d, err := r.br.Discard(n); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("oversized frame body (%d of %d bytes discarded): %w", d, n, err)
		}
		r.f.oversize = n
		return &r.f, nil
	}
	body, err := r.readBody(n)
	if err != nil {
		return nil, err
	}
	r.f.body = body
	return &r.f, nil
}

// parseLength accepts 1 to 10 decimal digits, with blanks around them.
func parseLength[T string | []byte](s T) (int, bool) {
	i, j := 0, len(s)
	for i < j && isBlank(s[i]) {
		i++
	}
	for j > i && isBlank(s[j-1]) {
		j--
	}
	if j == i || j-i > 10 {
		return 0, false
	}
	n := 0
	for ; i < j; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// readBody reads exactly n bytes. The buffer grows with what arrives, so a
// peer announcing a large body and sending little costs little.
func (r *frameReader) readBody(n int) ([]byte, error) {
	b := r.buf[:0]
	for len(b) < n {
		if len(b) == cap(b) {
			nc := min(n, max(2*cap(b), 16<<10))
			nb := make([]byte, len(b), nc)
			copy(nb, b)
			b = nb
		}
		m, err := r.br.Read(b[len(b):min(cap(b), n)])
		b = b[:len(b)+m]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			r.buf = b[:0]
			return nil, fmt.Errorf("frame body (%d of %d bytes): %w", len(b), n, err)
		}
	}
	r.buf = b[:0]
	return b, nil
}
