// Package api owns sipwarden's HTTP interface (SPEC.md): /metrics,
// /healthz, /readyz, /v1/whitelist, /v1/check, /v1/bans and /v1/offenders;
// the rules for who may mutate (a bearer token, always; generated at first
// start when none is configured), which Host and Origin headers are served
// (DNS rebinding, CSRF), who sees registration details; and the client the
// commands use.
//
// It observes the whitelist and the jail; it never sits in the offense path
// and holds no state of its own.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/jail"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// Whitelist is what the API reads of the whitelist.
type Whitelist interface {
	Allowed(netip.Addr) (why string, ok bool)
	Lookup(netip.Addr) (whitelist.Entry, bool)
	Entries() []whitelist.Entry
}

// Jail is what the API reads and asks of the jail.
type Jail interface {
	Ban(ctx context.Context, ip netip.Addr, d time.Duration, reason string) error
	Unban(ctx context.Context, ip netip.Addr) error
	Bans() []jail.Ban
	Offenders(limit int, after netip.Addr) ([]jail.Offender, netip.Addr)
	// Notable is the status view: the top scores and the protected entries.
	Notable(top, maxProtected int) (topOffenders, protected []jail.Offender)
	// Exempt is the ban decision without the ban: "never_ban", "static",
	// "registered", or "" when ip may be banned.
	Exempt(ip netip.Addr) (reason, why string)
}

// Check is one readiness condition: ok, or why not.
type Check struct {
	Name  string
	Ready func() (reason string, ok bool)
	// Note, when set and not empty, is a detail /readyz names without
	// failing (a ban set no rule references, a log not readable yet).
	Note func() string
}

// Options configures a Server.
type Options struct {
	Listen string
	// MetricsListen, when set, is a second listener serving only /metrics,
	// /healthz and /readyz (for a scraper on another network).
	MetricsListen string
	// Token is required (as a bearer token) by every mutation; empty: all
	// mutations are refused, with NoTokenWhy as the reason.
	Token      string
	NoTokenWhy string
	// DryRun: the ban backend writes no firewall; every ban object and
	// listing says so.
	DryRun bool
	// Nodes are the Event Socket addresses (for /v1/status).
	Nodes     []string
	Whitelist Whitelist
	Jail      Jail
	Protect   Protect // nil: no graduated response
	Checks    []Check
	Gatherer  prometheus.Gatherer
	Logger    *slog.Logger
}

// MaxBody bounds every request body.
const MaxBody = 64 << 10

// Server serves the HTTP API.
type Server struct {
	opt        Options
	log        *slog.Logger
	mux        *http.ServeMux
	h          http.Handler
	ln         net.Listener
	mln        net.Listener // metrics-only
	metricsMux *http.ServeMux
	names      map[string]bool
	// private: the API listens on loopback only, so registration details
	// are shown without a token.
	private bool
}

// New builds the server and binds its listener, so a port conflict fails
// start-up rather than a goroutine later.
func New(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opt: o, log: o.Logger.With("component", "api"), names: hostNames(o.Listen), private: loopbackListen(o.Listen)}
	s.mux = http.NewServeMux()
	metrics := http.NotFoundHandler()
	if o.Gatherer != nil {
		metrics = promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{})
	}
	healthz := func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
	// Scrapers and probes call these by whatever name they know the host
	// by: no Host check, and nothing there is secret or changes state.
	s.mux.Handle("GET /metrics", metrics)
	s.mux.HandleFunc("GET /healthz", healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET /v1/whitelist", s.guard(s.whitelistAll))
	s.mux.HandleFunc("GET /v1/whitelist/{ip}", s.guard(s.whitelistOne))
	s.mux.HandleFunc("GET /v1/check/{ip}", s.guard(s.check))
	s.mux.HandleFunc("GET /v1/bans", s.guard(s.bansList))
	s.mux.HandleFunc("POST /v1/bans", s.guard(s.mutating(s.bansAdd)))
	s.mux.HandleFunc("DELETE /v1/bans/{ip}", s.guard(s.mutating(s.bansDel)))
	s.mux.HandleFunc("GET /v1/offenders", s.guard(s.offenders))
	s.mux.HandleFunc("GET /v1/status", s.guard(s.status))
	s.mux.HandleFunc("GET /{$}", s.guard(s.statusPage))
	s.mux.HandleFunc("GET /v1/protected", s.guard(s.protected))
	s.h = s.mux
	if o.Listen != "" {
		ln, err := net.Listen("tcp", o.Listen)
		if err != nil {
			return nil, fmt.Errorf("api listen %s: %w", o.Listen, err)
		}
		s.ln = ln
	}
	if o.MetricsListen != "" {
		mm := http.NewServeMux()
		mm.Handle("GET /metrics", metrics)
		mm.HandleFunc("GET /healthz", healthz)
		mm.HandleFunc("GET /readyz", s.readyz)
		ln, err := net.Listen("tcp", o.MetricsListen)
		if err != nil {
			if s.ln != nil {
				s.ln.Close()
			}
			return nil, fmt.Errorf("api metrics_listen %s: %w", o.MetricsListen, err)
		}
		s.mln = ln
		s.metricsMux = mm
	}
	return s, nil
}

// Handler returns the API's handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.h }

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// MetricsAddr is the metrics-only listener's address (nil when none).
func (s *Server) MetricsAddr() net.Addr {
	if s.mln == nil {
		return nil
	}
	return s.mln.Addr()
}

// Run serves until ctx is cancelled, then shuts down within 3 s.
func (s *Server) Run(ctx context.Context) error {
	newSrv := func(h http.Handler) *http.Server {
		return &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    16 << 10,
		}
	}
	srvs := []*http.Server{newSrv(s.h)}
	lns := []net.Listener{s.ln}
	if s.mln != nil {
		srvs = append(srvs, newSrv(s.metricsMux))
		lns = append(lns, s.mln)
	}
	errc := make(chan error, len(srvs))
	for i, srv := range srvs {
		go func() { errc <- srv.Serve(lns[i]) }()
	}
	var err error
	pending := len(srvs)
	select {
	case err = <-errc:
		err = fmt.Errorf("api: %w", err)
		pending--
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for _, srv := range srvs {
		if serr := srv.Shutdown(sctx); serr != nil && err == nil {
			err = fmt.Errorf("api shutdown: %w", serr)
		}
	}
	for range pending {
		<-errc
	}
	return err
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var reasons []string
	notes := s.notes()
	for _, c := range s.opt.Checks {
		if c.Ready == nil {
			continue
		}
		if why, ok := c.Ready(); !ok {
			reasons = append(reasons, c.Name+": "+why)
		}
	}
	if len(reasons) > 0 {
		body := map[string]any{"ready": false, "reason": strings.Join(reasons, "; "), "reasons": reasons}
		if len(notes) > 0 {
			body["notes"] = notes
		}
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	body := map[string]any{"ready": true}
	if len(notes) > 0 {
		body["notes"] = notes
	}
	writeJSON(w, http.StatusOK, body)
}

// notes are the checks' details that do not fail readiness.
func (s *Server) notes() []string {
	var out []string
	for _, c := range s.opt.Checks {
		if c.Note == nil {
			continue
		}
		if n := c.Note(); n != "" {
			out = append(out, c.Name+": "+n)
		}
	}
	return out
}

// WhitelistEntry is one answer of /v1/whitelist/{ip}.
type WhitelistEntry struct {
	whitelist.Entry
	Whitelisted bool   `json:"whitelisted"`
	Reason      string `json:"reason,omitempty"`
}

func (s *Server) whitelistAll(w http.ResponseWriter, r *http.Request) {
	entries := s.opt.Whitelist.Entries()
	if entries == nil {
		entries = []whitelist.Entry{}
	}
	redact := s.redact(r)
	if redact {
		for i := range entries {
			entries[i] = redacted(entries[i])
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries, "redacted": redact})
}

// redact: off loopback, who is registered from where (users, contacts,
// user agents, call-ids) is shown only with the token.
func (s *Server) redact(r *http.Request) bool {
	return !s.private && !s.authorized(r)
}

// redacted keeps what a scraper of the whitelist may know: that an address
// is whitelisted, how many registrations it holds and until when.
func redacted(e whitelist.Entry) whitelist.Entry {
	regs := make([]whitelist.Registration, len(e.Registrations))
	for i, g := range e.Registrations {
		regs[i] = whitelist.Registration{ExpiresAt: g.ExpiresAt, Profile: g.Profile}
	}
	e.Registrations = regs
	return e
}

// CheckAnswer is GET /v1/check/{ip}: may ip be banned? fail2ban's
// contract through `sipwarden check`: do not ban when BanAllowed is false.
type CheckAnswer struct {
	IP            string `json:"ip"`
	BanAllowed    bool   `json:"ban_allowed"`
	Reason        string `json:"reason,omitempty"` // never_ban, static, registered
	Why           string `json:"why,omitempty"`
	Registrations int    `json:"registrations"`
	// Protection is the graduated response in force for a registered
	// address: quarantined (a NAT mapping) or throttled.
	Protection string `json:"protection,omitempty"`
}

func (s *Server) check(w http.ResponseWriter, r *http.Request) {
	ip, ok := pathIP(w, r)
	if !ok {
		return
	}
	reason, why := s.opt.Jail.Exempt(ip)
	a := CheckAnswer{IP: ip.String(), BanAllowed: reason == "", Reason: reason, Why: why, Protection: s.protection(ip)}
	if e, found := s.opt.Whitelist.Lookup(ip); found {
		a.Registrations = len(e.Registrations)
	}
	writeJSON(w, http.StatusOK, a)
}

func (s *Server) whitelistOne(w http.ResponseWriter, r *http.Request) {
	ip, ok := pathIP(w, r)
	if !ok {
		return
	}
	why, allowed := s.opt.Whitelist.Allowed(ip)
	if !allowed {
		writeJSON(w, http.StatusNotFound, map[string]any{"ip": ip.String(), "whitelisted": false})
		return
	}
	e, found := s.opt.Whitelist.Lookup(ip)
	if !found {
		e = whitelist.Entry{IP: ip, Static: why == "static"}
	}
	if e.Registrations == nil {
		e.Registrations = []whitelist.Registration{}
	}
	if s.redact(r) {
		e = redacted(e)
	}
	writeJSON(w, http.StatusOK, WhitelistEntry{Entry: e, Whitelisted: true, Reason: why})
}

// Ban is a ban as the API shows it: dry_run says it exists only in
// sipwarden's memory (ban.backend dry-run), not in the firewall.
type Ban struct {
	jail.Ban
	DryRun bool `json:"dry_run"`
}

func (s *Server) bansList(w http.ResponseWriter, _ *http.Request) {
	bans := s.opt.Jail.Bans()
	out := make([]Ban, len(bans))
	for i, b := range bans {
		out[i] = Ban{b, s.opt.DryRun}
	}
	writeJSON(w, http.StatusOK, map[string]any{"bans": out, "dry_run": s.opt.DryRun})
}

// BanRequest is the body of POST /v1/bans. Duration is a Go duration
// ("90m") or a number of seconds; empty uses the jail's bantime.
type BanRequest struct {
	IP       string          `json:"ip"`
	Duration json.RawMessage `json:"duration,omitempty"`
	Reason   string          `json:"reason,omitempty"`
}

func parseDuration(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if s == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, err
		}
		if d < 0 {
			return 0, errors.New("negative duration")
		}
		return d, nil
	}
	var n float64
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, errors.New(`duration must be a string like "90m" or a number of seconds`)
	}
	if n < 0 || n > 1e9 {
		return 0, errors.New("duration seconds out of range")
	}
	return time.Duration(n * float64(time.Second)), nil
}

func (s *Server) bansAdd(w http.ResponseWriter, r *http.Request) {
	var req BanRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body over "+strconv.Itoa(MaxBody)+" bytes")
			return
		}
		writeError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return
	}
	ip, err := ParseIP(req.IP)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	d, err := parseDuration(req.Duration)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad duration: "+err.Error())
		return
	}
	reason := req.Reason
	if reason == "" {
		reason = "manual"
	}
	if len(reason) > 200 {
		writeError(w, http.StatusBadRequest, "reason over 200 characters")
		return
	}
	switch err := s.opt.Jail.Ban(r.Context(), ip, d, reason); {
	case errors.Is(err, ban.ErrWhitelisted), errors.Is(err, ban.ErrNeverBan):
		writeError(w, http.StatusConflict, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	msg := "manual ban"
	if s.opt.DryRun {
		msg = "manual ban: would ban (dry-run, nothing written to the firewall)"
	}
	s.log.Info(msg, "ip", ip, "duration", d, "reason", reason, "remote", r.RemoteAddr, "dry_run", s.opt.DryRun)
	for _, b := range s.opt.Jail.Bans() {
		if b.IP == ip || b.Prefix.Contains(ip) {
			writeJSON(w, http.StatusCreated, Ban{b, s.opt.DryRun})
			return
		}
	}
	writeJSON(w, http.StatusCreated, map[string]any{"ip": ip.String(), "dry_run": s.opt.DryRun})
}

func (s *Server) bansDel(w http.ResponseWriter, r *http.Request) {
	ip, ok := pathIP(w, r)
	if !ok {
		return
	}
	switch err := s.opt.Jail.Unban(r.Context(), ip); {
	case errors.Is(err, ban.ErrNotBanned):
		writeError(w, http.StatusNotFound, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("manual unban", "ip", ip, "remote", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}

// offenders pages through the jail in address order: ?limit= (default
// jail.DefaultOffendersLimit, at most jail.MaxOffendersLimit) entries after
// ?after=; "next" is the after of the following page, absent at the end.
func (s *Server) offenders(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := jail.DefaultOffendersLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > jail.MaxOffendersLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: want 1..%d", jail.MaxOffendersLimit))
			return
		}
		limit = n
	}
	var after netip.Addr
	if v := q.Get("after"); v != "" {
		a, err := netip.ParseAddr(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "after: not an IP address")
			return
		}
		after = a.Unmap()
	}
	list, next := s.opt.Jail.Offenders(limit, after)
	if list == nil {
		list = []jail.Offender{}
	}
	s.withProtection(list)
	out := map[string]any{"offenders": list}
	if next.IsValid() {
		out["next"] = next
	}
	writeJSON(w, http.StatusOK, out)
}

// guard refuses what a browser could be tricked into sending: a Host the
// API is not known by (DNS rebinding: a page on evil.example whose name now
// resolves to 127.0.0.1) and a cross-origin Origin (CSRF).
func (s *Server) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.hostOK(r.Host) {
			writeError(w, http.StatusForbidden, "foreign Host header: the API answers to its IP address, localhost or this host's name")
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
			writeError(w, http.StatusForbidden, "cross-origin request refused")
			return
		}
		if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
			writeError(w, http.StatusForbidden, "cross-origin request refused")
			return
		}
		h(w, r)
	}
}

func (s *Server) hostOK(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" {
		return false // HTTP/1.1 requires Host; an empty one is a hand-made request we need not serve
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() == "" {
		return true // an address literal cannot be rebound
	}
	return s.names[host]
}

func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Path != "" && u.Path != "/" {
		return false
	}
	return strings.EqualFold(u.Host, host)
}

// hostNames are the names besides address literals the API answers to.
func hostNames(listen string) map[string]bool {
	m := map[string]bool{"localhost": true, "localhost.localdomain": true, "ip6-localhost": true}
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" {
		m[strings.ToLower(h)] = true
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		h = strings.ToLower(h)
		m[h] = true
		short, _, _ := strings.Cut(h, ".")
		m[short] = true
	}
	return m
}

// loopbackListen: only local processes can reach the listener.
func loopbackListen(listen string) bool {
	h, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if h == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.Unmap().IsLoopback()
}

// authorized: the request carries the configured bearer token.
func (s *Server) authorized(r *http.Request) bool {
	if s.opt.Token == "" {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.opt.Token)) == 1
}

// mutating guards a handler: a matching bearer token is required, always,
// and a body must be declared JSON (an HTML form cannot send that).
func (s *Server) mutating(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.opt.Token == "" {
			why := s.opt.NoTokenWhy
			if why == "" {
				why = "no API token is configured"
			}
			writeError(w, http.StatusForbidden, "changes are refused: "+why)
			return
		}
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sipwarden"`)
			writeError(w, http.StatusUnauthorized, "a valid bearer token is required (api.token_file; the CLI reads it through -config)")
			return
		}
		if r.Method == http.MethodPost || r.ContentLength > 0 || r.Header.Get("Content-Type") != "" {
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil || mt != "application/json" {
				writeError(w, http.StatusUnsupportedMediaType, "the body must be JSON with Content-Type: application/json")
				return
			}
		}
		h(w, r)
	}
}

func pathIP(w http.ResponseWriter, r *http.Request) (netip.Addr, bool) {
	ip, err := ParseIP(r.PathValue("ip"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return netip.Addr{}, false
	}
	return ip, true
}

// ParseIP reads one IPv4 or IPv6 address (no zone, unmapped).
func ParseIP(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("invalid IP address %q", s)
	}
	if ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("invalid IP address %q: zones are not accepted", s)
	}
	return ip.Unmap(), nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
