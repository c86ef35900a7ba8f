// Package eslwatch owns sipwarden's connections to FreeSWITCH's Event
// Socket (mod_event_socket, inbound): it keeps the whitelist's live
// registrations in step with each node (events, plus a full resync from
// `show registrations as json` after every connect and periodically) and
// reports digest failures (sofia::register_failure) as offenses.
//
// It carries its own small, defensive Event Socket client: a dial timeout,
// context cancellation, a frame size limit (an oversized frame is never
// allocated: its body is discarded and counted, and the connection goes
// on), unknown frame types counted and skipped, one reader goroutine per
// connection that always drains, serialised commands with a timeout, and
// the connection dropped and re-established (exponential backoff with
// jitter) on any protocol error. A broken or hostile peer can cost a
// reconnect, never the daemon. The event decoder reuses its buffers: a
// sofia::register costs about one allocation on its way into the whitelist.
//
// It must not ban, score or filter offenses (the jail does), and must not
// decide whether an address is allowed (the whitelist does).
package eslwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// Subscription is the event command sent after authentication: the sofia
// registration events and nothing else.
const Subscription = "event plain CUSTOM sofia::register sofia::unregister sofia::expire " +
	"sofia::register_failure sofia::register_attempt sofia::pre_register sofia::wrong_call_state"

// ResyncCommand lists a node's registrations.
const ResyncCommand = "api show registrations as json"

// Defaults of Options.
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultCommandTimeout = 10 * time.Second
	DefaultResyncEvery    = 5 * time.Minute
	DefaultBackoffMin     = 500 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
	// DefaultDownPolicy is esl.down_policy: while a node is not synced,
	// credential-class bans wait ("hold"); "enforce" applies them anyway.
	DefaultDownPolicy = "hold"
	DefaultMaxFrame   = 64 << 20 // a listing of 100k registrations is about 30 MB
)

// A listing that fails (over the frame limit, or not understood) is asked
// again after listingRetry at most (ResyncEvery if shorter): the node is
// not resynced meanwhile, and Ready says why.
const listingRetry = 30 * time.Second

// Options configures a Watcher. Zero durations and sizes take the defaults.
type Options struct {
	Addresses      []string // host:port of each FreeSWITCH node; the node's name
	Password       string
	DialTimeout    time.Duration
	CommandTimeout time.Duration // also the time a started frame has to arrive
	ResyncEvery    time.Duration
	BackoffMin     time.Duration
	BackoffMax     time.Duration
	MaxFrame       int      // largest Content-Length accepted
	Profiles       []string // sofia profiles whose registrations are trusted; empty = all

	Whitelist *whitelist.Whitelist
	Offenses  offense.Sink // may be nil
	// OnRegister, when set, is told of each sofia::register event (not of
	// listings) after the whitelist took it: the graduated response lifts
	// a quarantine at once when the failing user registers again.
	OnRegister func(r whitelist.Registration)
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Watcher watches every configured node, each over its own connection.
type Watcher struct {
	opts     Options
	log      *slog.Logger
	profiles map[string]bool
	nodes    []*node
	m        *metrics
	testHook func(what string) // tests: called after each event, resync and connect ("event", "resync", "ready")

	syncMu   sync.Mutex
	unsynced int           // nodes without a first resync
	synced   chan struct{} // closed when unsynced reaches 0
}

type node struct {
	addr string
	log  *slog.Logger

	mu      sync.Mutex
	ready   bool // connected, subscribed and the last listing applied
	synced  bool // a listing was applied at least once
	lastErr error

	// Offenses seen between the subscription and the first resync of a
	// session are held back until the listing is in the whitelist: an
	// address registered before we connected must not be scored as a
	// stranger in that window.
	hmu     sync.Mutex
	holding bool
	held    []offense.Offense

	oversizeLogged atomic.Bool
}

// maxHeld bounds the offenses held during a resync; more are dropped and
// counted.
const maxHeld = 10_000

func (w *Watcher) offend(n *node, o offense.Offense) {
	n.hmu.Lock()
	if n.holding {
		if len(n.held) < maxHeld {
			n.held = append(n.held, o)
		} else {
			w.m.skipped.WithLabelValues("held_overflow").Inc()
		}
		n.hmu.Unlock()
		return
	}
	n.hmu.Unlock()
	w.opts.Offenses.Offend(o)
}

func (n *node) hold() {
	n.hmu.Lock()
	n.holding = true
	n.hmu.Unlock()
}

// release emits the held offenses in order; offenses the reader sees
// meanwhile wait for the lock and so come after them.
func (w *Watcher) release(n *node) {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	for _, o := range n.held {
		w.opts.Offenses.Offend(o)
	}
	clear(n.held)
	n.held, n.holding = n.held[:0], false
}

// New checks opts and builds a Watcher; Run starts it.
func New(opts Options) (*Watcher, error) {
	var errs []error
	if len(opts.Addresses) == 0 {
		errs = append(errs, errors.New("eslwatch: no Event Socket address"))
	}
	for _, a := range opts.Addresses {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("eslwatch: address %q: %w", a, err))
		}
	}
	if strings.ContainsAny(opts.Password, "\r\n") {
		errs = append(errs, errors.New("eslwatch: password contains a line break"))
	}
	if opts.Whitelist == nil {
		errs = append(errs, errors.New("eslwatch: no whitelist"))
	}
	if opts.MaxFrame < 0 {
		errs = append(errs, errors.New("eslwatch: negative MaxFrame"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.DialTimeout, DefaultDialTimeout)
	def(&opts.CommandTimeout, DefaultCommandTimeout)
	def(&opts.ResyncEvery, DefaultResyncEvery)
	def(&opts.BackoffMin, DefaultBackoffMin)
	def(&opts.BackoffMax, DefaultBackoffMax)
	opts.BackoffMax = max(opts.BackoffMax, opts.BackoffMin)
	if opts.MaxFrame == 0 {
		opts.MaxFrame = DefaultMaxFrame
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	w := &Watcher{
		opts:     opts,
		log:      opts.Logger.With("component", "eslwatch"),
		m:        newMetrics(opts.Registerer),
		unsynced: len(opts.Addresses),
		synced:   make(chan struct{}),
	}
	if len(opts.Profiles) > 0 {
		w.profiles = make(map[string]bool)
		for _, p := range opts.Profiles {
			w.profiles[p] = true
		}
	}
	for _, a := range opts.Addresses {
		w.nodes = append(w.nodes, &node{addr: a, log: w.log.With("node", a), lastErr: errors.New("not connected yet")})
	}
	return w, nil
}

// Run watches every node until ctx is done, then returns nil.
func (w *Watcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, n := range w.nodes {
		wg.Go(func() { w.runNode(ctx, n) })
	}
	wg.Wait()
	return nil
}

// Synced is closed once every node has completed its first registration
// resync (its listing is in the whitelist). It stays closed through later
// disconnects: the whitelist keeps a lost node's registrations until they
// expire. The jail holds automatic bans until it is closed.
func (w *Watcher) Synced() <-chan struct{} { return w.synced }

// markSynced records a node's applied listing.
func (w *Watcher) markSynced(n *node) {
	n.mu.Lock()
	first := !n.synced
	n.synced = true
	n.mu.Unlock()
	if !first {
		return
	}
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	w.unsynced--
	if w.unsynced == 0 {
		close(w.synced)
		w.log.Info("every Event Socket node resynced", "nodes", len(w.nodes))
	}
}

// Ready reports whether every node is connected, subscribed and resynced;
// otherwise reason names the first node that is not, and why.
func (w *Watcher) Ready() (reason string, ok bool) {
	for _, n := range w.nodes {
		n.mu.Lock()
		ready, err := n.ready, n.lastErr
		n.mu.Unlock()
		if !ready {
			return fmt.Sprintf("event socket %s: %v", n.addr, err), false
		}
	}
	return "", true
}

func (n *node) setReady(ready bool, err error) {
	n.mu.Lock()
	n.ready = ready
	if err != nil {
		n.lastErr = err
	}
	n.mu.Unlock()
}

// runNode connects, serves and reconnects one node until ctx is done.
func (w *Watcher) runNode(ctx context.Context, n *node) {
	b := backoff{min: w.opts.BackoffMin, max: w.opts.BackoffMax}
	connectedBefore := false
	refused := false // the password was refused, and said so once
	for ctx.Err() == nil {
		start := time.Now()
		wasReady, err := w.session(ctx, n, connectedBefore)
		connectedBefore = connectedBefore || wasReady
		if ctx.Err() != nil {
			return
		}
		n.setReady(false, err)
		w.m.disconnects.WithLabelValues(reason(err)).Inc()
		if wasReady && time.Since(start) >= w.opts.BackoffMax {
			b.reset() // it was healthy for a while: this is a new incident
		}
		d := b.next()
		switch {
		case errors.Is(err, ErrAuth) && refused:
			// said once; retried quietly (the operator fixes the file, then it connects)
			n.log.Debug("event socket password refused again, retrying", "in", d.Round(time.Millisecond))
		case errors.Is(err, ErrAuth):
			refused = true
			n.log.Error("event socket password refused: check esl.password_file; retrying quietly", "err", err, "every", w.opts.BackoffMax)
		default:
			refused = false
			n.log.Warn("event socket connection lost, reconnecting", "err", err, "in", d.Round(time.Millisecond))
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// reason is a bounded label for why a session ended.
func reason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, ErrAuth):
		return "auth"
	case errors.Is(err, ErrRejected):
		return "rejected"
	case errors.Is(err, ErrFrameTooLarge):
		return "frame_too_large"
	case errors.Is(err, ErrProtocol):
		return "protocol"
	case errors.Is(err, ErrDisconnected):
		return "disconnect_notice"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrListing):
		return "resync"
	case errors.Is(err, errDial):
		return "dial"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	default:
		return "io"
	}
}

var errDial = errors.New("event socket connect")

// session runs one connection: dial, authenticate, subscribe, resync, then
// serve events and resync periodically until an error or ctx ends it.
// ready reports whether the session got as far as serving.
func (w *Watcher) session(ctx context.Context, n *node, reconnect bool) (ready bool, err error) {
	d := net.Dialer{Timeout: w.opts.DialTimeout, KeepAlive: 15 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", n.addr)
	if err != nil {
		return false, fmt.Errorf("%w: %w", errDial, err)
	}
	dec := newDecoder() // owned by the reader goroutine
	c := newConn(nc, w.opts.MaxFrame, w.opts.CommandTimeout,
		func(ct string, body []byte) { w.handle(n, dec, ct, body) },
		func(reason string, size int) { w.skip(n, reason, size) })
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	n.hold()
	go c.readLoop()
	defer func() {
		w.release(n) // never lose what was held, whatever happened
		stop()
		nc.Close()
		<-c.done // the reader goroutine is owned here
		if ready {
			w.m.connected.Dec()
		}
	}()

	greet, err := c.await(ctx, w.opts.DialTimeout)
	if err != nil {
		return false, fmt.Errorf("greeting: %w", err)
	}
	switch greet.contentType {
	case "auth/request":
	case "text/rude-rejection":
		return false, fmt.Errorf("%w: %s", ErrRejected, strings.TrimSpace(string(greet.body)))
	default:
		return false, fmt.Errorf("%w: greeting %q", ErrProtocol, greet.contentType)
	}
	r, err := c.command(ctx, "auth "+w.opts.Password, w.opts.CommandTimeout)
	if err != nil {
		return false, err
	}
	if !strings.HasPrefix(r.replyText, "+OK") {
		return false, fmt.Errorf("%w: password refused (%s): check esl.password_file", ErrAuth, strings.TrimSpace(r.replyText))
	}
	r, err = c.command(ctx, Subscription, w.opts.CommandTimeout)
	if err != nil {
		return false, err
	}
	if !strings.HasPrefix(r.replyText, "+OK") {
		return false, fmt.Errorf("%w: subscription refused: %s", ErrProtocol, r.replyText)
	}
	listErr, err := w.resync(ctx, c, n)
	if err != nil {
		return false, err
	}
	w.release(n)
	ready = true
	w.m.connected.Inc()
	if reconnect {
		w.m.reconnects.Inc()
	}
	n.log.Info("event socket connected", "resynced", listErr == nil)
	if w.testHook != nil {
		w.testHook("ready")
	}

	every := w.opts.ResyncEvery
	retry := min(every, listingRetry)
	t := time.NewTimer(every)
	if listErr != nil {
		t.Reset(retry)
	}
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case <-c.done:
			return true, c.err
		case <-t.C:
			listErr, err := w.resync(ctx, c, n)
			if err != nil {
				return true, err
			}
			if listErr != nil {
				t.Reset(retry)
			} else {
				t.Reset(every)
			}
		}
	}
}

// resync replaces the node's registrations with FreeSWITCH's listing.
// Events processed while the listing was on its way are newer than it and
// are kept (whitelist.ReplaceNodeAfter). A listing that cannot be used
// (over the frame limit, or not understood) leaves the node's previous set
// as it was and is returned as listErr: the stream itself is intact and
// the session goes on. err is a failure of the connection.
func (w *Watcher) resync(ctx context.Context, c *conn, n *node) (listErr, err error) {
	mark := w.opts.Whitelist.Mark()
	t0 := time.Now()
	r, err := c.command(ctx, ResyncCommand, w.opts.CommandTimeout)
	switch {
	case errors.Is(err, ErrFrameTooLarge):
		w.m.resyncs.WithLabelValues("error").Inc()
		n.log.Error("registration listing over the frame limit; keeping the previous set (raise esl.max_frame_bytes)", "err", err)
		n.setReady(false, err)
		return err, nil
	case err != nil:
		w.m.resyncs.WithLabelValues("error").Inc()
		return nil, err
	case r.contentType != ctAPI:
		w.m.resyncs.WithLabelValues("error").Inc()
		return nil, fmt.Errorf("%w: %s answered with %q", ErrProtocol, ResyncCommand, r.contentType)
	}
	regs, skipped, err := ParseRegistrations(r.body, n.addr)
	if err != nil {
		w.m.resyncs.WithLabelValues("error").Inc()
		w.m.parseErrors.Inc()
		// FreeSWITCH answers "-ERR ..." when the command fails; either
		// way the stream itself is intact: keep the old set, stay up.
		n.log.Error("registration listing not understood; keeping the previous set", "err", err)
		n.setReady(false, err)
		return err, nil
	}
	if skipped > 0 {
		w.m.skipped.WithLabelValues("bad_registration").Add(float64(skipped))
	}
	if w.profiles != nil {
		kept := regs[:0]
		for _, r := range regs {
			if w.profiles[r.Profile] {
				kept = append(kept, r)
			}
		}
		regs = kept
	}
	w.opts.Whitelist.ReplaceNodeAfter(n.addr, regs, mark)
	w.m.resyncs.WithLabelValues("ok").Inc()
	n.setReady(true, nil) // connected, subscribed (resync runs after both) and resynced
	w.markSynced(n)
	if w.testHook != nil {
		w.testHook("resync")
	}
	n.log.Debug("registrations resynced", "count", len(regs), "bytes", len(r.body), "took", time.Since(t0).Round(time.Millisecond))
	return nil, nil
}

// skip counts a frame the reader skipped; an oversized one is also logged,
// once per node (the metric counts the rest).
func (w *Watcher) skip(n *node, reason string, size int) {
	w.m.skipped.WithLabelValues(reason).Inc()
	if reason == "oversized" && n.oversizeLogged.CompareAndSwap(false, true) {
		n.log.Warn("event socket frame over the size limit skipped (esl.max_frame_bytes); further ones are only counted",
			"bytes", size, "limit", w.opts.MaxFrame)
	}
}

// handle runs in the reader goroutine for every event: it must be quick.
func (w *Watcher) handle(n *node, d *decoder, ct string, body []byte) {
	w.handleEvent(n, d, ct, body)
	if w.testHook != nil {
		w.testHook("event")
	}
}

func (w *Watcher) handleEvent(n *node, d *decoder, ct string, body []byte) {
	var err error
	if ct == ctEventJSON {
		err = d.ev.parseJSON(body)
	} else {
		err = d.ev.parsePlain(body)
	}
	if err != nil {
		w.m.parseErrors.Inc()
		w.m.skipped.WithLabelValues("malformed_event").Inc()
		return
	}
	name := d.ev.kind()
	w.m.event(name).Inc()
	switch string(name) {
	case "sofia::register":
		if !w.trusted(&d.ev) {
			return
		}
		r, expires, ok := d.registerEvent(n.addr, w.opts.Now())
		if !ok {
			w.m.skipped.WithLabelValues("bad_registration").Inc()
			return
		}
		if expires <= 0 {
			w.opts.Whitelist.RemoveRegistration(r)
			return
		}
		w.opts.Whitelist.Upsert(r)
		if w.opts.OnRegister != nil {
			w.opts.OnRegister(r)
		}
	case "sofia::unregister", "sofia::expire":
		r, ok := d.goneEvent(n.addr)
		if !ok {
			w.m.skipped.WithLabelValues("bad_registration").Inc()
			return
		}
		w.opts.Whitelist.RemoveRegistration(r)
	case "sofia::register_failure":
		w.registerFailure(n, &d.ev)
	}
	// pre_register, register_attempt (a challenge, or the attempt a failure
	// reports) and wrong_call_state are counted only: never offenses.
}

func (w *Watcher) trusted(ev *event) bool {
	return w.profiles == nil || w.profiles[string(ev.raw("profile-name"))]
}

// maxSkew is how far an event's Event-Date-Timestamp may be from the
// local clock and still be taken as the offense time.
const maxSkew = time.Minute

// registerFailure reports a digest failure (FreeSWITCH answered 403 after
// a challenge). to-user is the user tried for a REGISTER and the dialled
// number for an INVITE; the event has no call-id and no realm.
func (w *Watcher) registerFailure(n *node, ev *event) {
	if w.opts.Offenses == nil {
		return
	}
	ip, ok := eventAddr(ev)
	if !ok {
		w.m.skipped.WithLabelValues("bad_registration").Inc()
		return
	}
	// The event's own time, unless the node's clock disagrees with ours
	// by more than maxSkew: the jail's windows run on our clock, and an
	// event arriving now happened now.
	now := w.opts.Now()
	t, ok := eventTime(ev)
	if !ok || t.Sub(now).Abs() > maxSkew {
		t = now
	}
	method := strings.ToUpper(ev.Get("registration-type"))
	if method == "" {
		method = "REGISTER"
	}
	w.offend(n, offense.Offense{
		IP:       ip,
		Port:     eventPort(ev), // the event names no transport
		Rule:     offense.AuthFailure,
		Source:   offense.SourceESL,
		Time:     t,
		User:     ev.Get("to-user"),
		Method:   method,
		Detail:   ev.Get("user-agent"),
		Verified: true, // a challenge round trip came first
	})
}

// backoff is exponential with jitter: the n-th delay is drawn from
// [d/2, d] with d = min*2^n capped at max.
type backoff struct {
	min, max time.Duration
	n        int
}

func (b *backoff) next() time.Duration {
	d := b.min
	for i := 0; i < b.n && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	if d < b.max {
		b.n++
	}
	half := d / 2
	return half + rand.N(half+1)
}

func (b *backoff) reset() { b.n = 0 }
