package eslwatch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Errors of the frame reader. Every one of them ends the connection: once a
// frame is mis-read, nothing after it can be trusted.
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

// header is one "Name: value" line.
type header struct{ name, value string }

// frame is one Event Socket message: outer headers, then Content-Length
// bytes of body. body aliases the reader's buffer until the next read.
type frame struct {
	headers []header
	body    []byte
}

func (f *frame) get(name string) string {
	for _, h := range f.headers {
		if strings.EqualFold(h.name, name) {
			return h.value
		}
	}
	return ""
}

func (f *frame) contentType() string { return f.get("Content-Type") }

// frameReader reads frames as FreeSWITCH writes them: header lines ended by
// LF (a CR before it is tolerated), a blank line, then exactly
// Content-Length bytes. It never allocates more than max for a body, and
// grows the body buffer only as bytes actually arrive.
type frameReader struct {
	br  *bufio.Reader
	max int
	buf []byte
	f   frame
}

func newFrameReader(r io.Reader, max int) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, readBufSize), max: max}
}

// next reads one frame. It returns io.EOF at a clean end between frames.
func (r *frameReader) next() (*frame, error) {
	if cap(r.buf) > keepBufMax {
		r.buf = nil
	}
	r.f.headers = r.f.headers[:0]
	r.f.body = nil
	for {
		line, err := r.br.ReadSlice('\n')
		if err != nil {
			switch {
			case errors.Is(err, bufio.ErrBufferFull):
				return nil, fmt.Errorf("%w: header line over %d bytes", ErrProtocol, readBufSize)
			case errors.Is(err, io.EOF) && len(line) == 0 && len(r.f.headers) == 0:
				return nil, io.EOF
			case errors.Is(err, io.EOF):
				return nil, fmt.Errorf("frame headers: %w", io.ErrUnexpectedEOF)
			}
			return nil, err
		}
		line = bytes.TrimSuffix(line[:len(line)-1], []byte{'\r'})
		if len(line) == 0 {
			if len(r.f.headers) == 0 {
				continue // stray blank line between frames
			}
			break
		}
		if len(line) > maxHeaderLine {
			return nil, fmt.Errorf("%w: header line of %d bytes", ErrProtocol, len(line))
		}
		i := bytes.IndexByte(line, ':')
		if i <= 0 {
			return nil, fmt.Errorf("%w: malformed header line %.40q", ErrProtocol, line)
		}
		if len(r.f.headers) == maxHeaderLines {
			return nil, fmt.Errorf("%w: more than %d header lines", ErrProtocol, maxHeaderLines)
		}
		r.f.headers = append(r.f.headers, header{
			name:  string(line[:i]),
			value: string(bytes.TrimLeft(line[i+1:], " \t")),
		})
	}
	cl := r.f.get("Content-Length")
	if cl == "" {
		return &r.f, nil
	}
	n, ok := parseLength(cl)
	if !ok {
		return nil, fmt.Errorf("%w: Content-Length %.20q", ErrProtocol, cl)
	}
	if n > r.max {
		return nil, fmt.Errorf("%w: Content-Length %s, limit %d", ErrFrameTooLarge, cl, r.max)
	}
	body, err := r.readBody(n)
	if err != nil {
		return nil, err
	}
	r.f.body = body
	return &r.f, nil
}

// parseLength accepts 1 to 10 decimal digits.
func parseLength(s string) (int, bool) {
	s = strings.TrimSpace(s)
	if len(s) == 0 || len(s) > 10 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

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
