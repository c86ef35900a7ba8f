package eslwatch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors that end a session; the watcher reconnects after each.
var (
	ErrAuth         = errors.New("event socket authentication refused")
	ErrRejected     = errors.New("event socket connection rejected (text/rude-rejection: ACL)")
	ErrDisconnected = errors.New("event socket disconnect notice")
	ErrTimeout      = errors.New("event socket command timed out")
)

// reply is a command/reply, api/response or greeting frame, owned by the
// receiver. oversize is set (and body empty) when the frame was over the
// size limit and discarded.
type reply struct {
	contentType string
	replyText   string
	body        []byte
	oversize    int
}

// conn is one Event Socket connection. One reader goroutine reads every
// frame and never blocks on anyone: events go to the handler (which must
// be quick), replies to the one pending command or, if none waits, are
// counted and dropped. Commands are serialised and time out.
type conn struct {
	nc           net.Conn
	fr           *frameReader
	frameTimeout time.Duration
	onEvent      func(ct string, body []byte) // body is valid during the call only
	onSkip       func(reason string, size int)

	cmdMu   sync.Mutex // one command in flight
	waiting atomic.Bool
	replies chan reply // capacity 1; written only while waiting

	done chan struct{} // closed when the reader ends
	err  error         // why the reader ended; read after done
}

func newConn(nc net.Conn, maxFrame int, frameTimeout time.Duration, onEvent func(string, []byte), onSkip func(string, int)) *conn {
	c := &conn{
		nc:           nc,
		fr:           newFrameReader(nc, maxFrame),
		frameTimeout: frameTimeout,
		onEvent:      onEvent,
		onSkip:       onSkip,
		replies:      make(chan reply, 1),
		done:         make(chan struct{}),
	}
	// The greeting (auth/request or text/rude-rejection) is the reply to
	// connecting: wait for it from the start.
	c.waiting.Store(true)
	return c
}

// readLoop runs in the connection's one reader goroutine until the
// connection fails or is closed.
func (c *conn) readLoop() {
	defer close(c.done)
	c.err = c.read()
}

// deadlineEvery is how many frames read back to back share one read
// deadline (setting one costs a clock read and a timer update per frame).
const deadlineEvery = 64

func (c *conn) read() error {
	armed, frames := false, 0
	for {
		// Wait for a frame without a deadline (an idle socket is normal),
		// then give the frame frameTimeout to arrive: a peer that stalls
		// mid-frame is dropped. Frames read back to back (a storm) share
		// one deadline, renewed every deadlineEvery frames and after any
		// frame larger than the read buffer.
		if c.fr.br.Buffered() == 0 {
			if armed {
				if err := c.nc.SetReadDeadline(time.Time{}); err != nil {
					return err
				}
				armed = false
			}
			if _, err := c.fr.br.Peek(1); err != nil {
				return err
			}
		}
		if !armed || frames%deadlineEvery == 0 {
			if err := c.nc.SetReadDeadline(time.Now().Add(c.frameTimeout)); err != nil {
				return err
			}
			armed = true
		}
		frames++
		f, err := c.fr.next()
		if err != nil {
			return err
		}
		if len(f.body) > readBufSize || f.oversize > 0 {
			frames = 0 // the next frame gets a fresh deadline
		}
		switch ct := f.contentType(); ct {
		case ctEventPlain, ctEventJSON:
			if f.oversize > 0 {
				// One event over the limit (a pre_register with a huge
				// User-Agent): its body is gone, the stream is intact.
				c.onSkip("oversized", f.oversize)
				continue
			}
			c.onEvent(ct, f.body)
		case ctDisconnect:
			return ErrDisconnected
		case ctAuth, ctReply, ctAPI, ctRude:
			if !c.waiting.CompareAndSwap(true, false) {
				c.onSkip("unexpected_reply", 0)
				continue
			}
			r := reply{contentType: ct, replyText: string(f.get("Reply-Text")), oversize: f.oversize}
			if f.oversize > 0 {
				c.onSkip("oversized", f.oversize)
			} else {
				r.body = c.fr.detach() // a listing may be 30 MB: handed over, not copied
			}
			c.replies <- r
			if ct == ctRude {
				return ErrRejected
			}
		default:
			// log/data, text/event-xml, anything else: counted, skipped.
			if f.oversize > 0 {
				c.onSkip("oversized", f.oversize)
			} else {
				c.onSkip("unknown_type", 0)
			}
		}
	}
}

// await waits for the pending reply.
func (c *conn) await(ctx context.Context, timeout time.Duration) (reply, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-c.replies:
		return r, nil
	case <-c.done:
		// A reply may have been queued just before the reader ended.
		select {
		case r := <-c.replies:
			return r, nil
		default:
		}
		return reply{}, c.err
	case <-t.C:
		return reply{}, ErrTimeout
	case <-ctx.Done():
		return reply{}, ctx.Err()
	}
}

// command sends cmd and waits for its reply. A reply over the frame limit
// is an error wrapping ErrFrameTooLarge, after which the connection is
// still in step; any other error leaves it unusable: the caller closes it.
func (c *conn) command(ctx context.Context, cmd string, timeout time.Duration) (reply, error) {
	if strings.ContainsAny(cmd, "\r\n") {
		return reply{}, fmt.Errorf("command %q contains a line break", cmd)
	}
	c.cmdMu.Lock()
	defer c.cmdMu.Unlock()
	c.waiting.Store(true)
	if err := c.nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return reply{}, err
	}
	if _, err := c.nc.Write([]byte(cmd + "\n\n")); err != nil {
		return reply{}, fmt.Errorf("send %s: %w", verb(cmd), err)
	}
	r, err := c.await(ctx, timeout)
	if err != nil {
		return reply{}, fmt.Errorf("%s: %w", verb(cmd), err)
	}
	if r.oversize > 0 {
		return reply{}, fmt.Errorf("%s: %w: %s of %d bytes, limit %d (esl.max_frame_bytes)",
			verb(cmd), ErrFrameTooLarge, r.contentType, r.oversize, c.fr.max)
	}
	return r, nil
}

// verb names a command without its arguments (never log the password).
func verb(cmd string) string {
	v, rest, _ := strings.Cut(cmd, " ")
	if v == "api" {
		return cmd
	}
	if v == "event" {
		return v + " " + rest
	}
	return v
}
