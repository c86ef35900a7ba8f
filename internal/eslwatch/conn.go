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

// reply is a copied command/reply, api/response or greeting frame.
type reply struct {
	contentType string
	replyText   string
	body        []byte
}

// conn is one Event Socket connection. One reader goroutine reads every
// frame and never blocks on anyone: events go to the handler (which must
// be quick), replies to the one pending command or, if none waits, are
// counted and dropped. Commands are serialised and time out.
type conn struct {
	nc           net.Conn
	fr           *frameReader
	frameTimeout time.Duration
	onEvent      func(ct string, body []byte)
	onSkip       func(reason string)

	cmdMu   sync.Mutex // one command in flight
	waiting atomic.Bool
	replies chan reply // capacity 1; written only while waiting

	done chan struct{} // closed when the reader ends
	err  error         // why the reader ended; read after done
}

func newConn(nc net.Conn, maxFrame int, frameTimeout time.Duration, onEvent func(string, []byte), onSkip func(string)) *conn {
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

func (c *conn) read() error {
	for {
		// Wait for a frame without a deadline (an idle socket is normal),
		// then give the whole frame frameTimeout to arrive: a peer that
		// stalls mid-frame is dropped.
		if _, err := c.fr.br.Peek(1); err != nil {
			return err
		}
		if err := c.nc.SetReadDeadline(time.Now().Add(c.frameTimeout)); err != nil {
			return err
		}
		f, err := c.fr.next()
		if err != nil {
			return err
		}
		if err := c.nc.SetReadDeadline(time.Time{}); err != nil {
			return err
		}
		switch ct := f.contentType(); ct {
		case "text/event-plain", "text/event-json":
			c.onEvent(ct, f.body)
		case "text/disconnect-notice":
			return ErrDisconnected
		case "auth/request", "command/reply", "api/response", "text/rude-rejection":
			if !c.waiting.CompareAndSwap(true, false) {
				c.onSkip("unexpected_reply")
				continue
			}
			c.replies <- reply{contentType: ct, replyText: f.get("Reply-Text"), body: append([]byte(nil), f.body...)}
			if ct == "text/rude-rejection" {
				return ErrRejected
			}
		default:
			// log/data, text/event-xml, anything else: counted, skipped.
			c.onSkip("unknown_type")
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

// command sends cmd and waits for its reply. Any error leaves the
// connection unusable: the caller closes it.
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
