// Package api owns sipwarden's HTTP interface (SPEC.md): /metrics,
// /healthz, /readyz, /v1/whitelist, /v1/bans and /v1/offenders, the rules
// for who may mutate (a bearer token, or loopback only when none is set), and
// the client the `check` and `bans` subcommands use.
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
	"net"
	"net/http"
	"net/netip"
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
	Offenders() []jail.Offender
}

// Check is one readiness condition: ok, or why not.
type Check struct {
	Name  string
	Ready func() (reason string, ok bool)
}

// Options configures a Server.
type Options struct {
	Listen    string
	Token     string // empty: mutations from loopback only
	Whitelist Whitelist
	Jail      Jail
	Checks    []Check
	Gatherer  prometheus.Gatherer
	Logger    *slog.Logger
}

// MaxBody bounds every request body.
const MaxBody = 64 << 10

// Server serves the HTTP API.
type Server struct {
	opt Options
	log *slog.Logger
	mux *http.ServeMux
	ln  net.Listener
}

// New builds the server and binds its listener, so a port conflict fails
// start-up rather than a goroutine later.
func New(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opt: o, log: o.Logger.With("component", "api")}
	s.mux = http.NewServeMux()
	if o.Gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET /v1/whitelist", s.whitelistAll)
	s.mux.HandleFunc("GET /v1/whitelist/{ip}", s.whitelistOne)
	s.mux.HandleFunc("GET /v1/bans", s.bansList)
	s.mux.HandleFunc("POST /v1/bans", s.mutating(s.bansAdd))
	s.mux.HandleFunc("DELETE /v1/bans/{ip}", s.mutating(s.bansDel))
	s.mux.HandleFunc("GET /v1/offenders", s.offenders)
	if o.Listen != "" {
		ln, err := net.Listen("tcp", o.Listen)
		if err != nil {
			return nil, fmt.Errorf("api listen %s: %w", o.Listen, err)
		}
		s.ln = ln
	}
	return s, nil
}

// Handler returns the API's handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.mux }

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx is cancelled, then shuts down within 3 s.
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	if err != nil {
		return fmt.Errorf("api shutdown: %w", err)
	}
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var reasons []string
	for _, c := range s.opt.Checks {
		if why, ok := c.Ready(); !ok {
			reasons = append(reasons, c.Name+": "+why)
		}
	}
	if len(reasons) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": strings.Join(reasons, "; "), "reasons": reasons})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
}

// WhitelistEntry is one answer of /v1/whitelist/{ip}.
type WhitelistEntry struct {
	whitelist.Entry
	Whitelisted bool   `json:"whitelisted"`
	Reason      string `json:"reason,omitempty"`
}

func (s *Server) whitelistAll(w http.ResponseWriter, _ *http.Request) {
	entries := s.opt.Whitelist.Entries()
	if entries == nil {
		entries = []whitelist.Entry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries})
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
	writeJSON(w, http.StatusOK, WhitelistEntry{Entry: e, Whitelisted: true, Reason: why})
}

func (s *Server) bansList(w http.ResponseWriter, _ *http.Request) {
	bans := s.opt.Jail.Bans()
	if bans == nil {
		bans = []jail.Ban{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"bans": bans})
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
	s.log.Info("manual ban", "ip", ip, "duration", d, "reason", reason, "remote", r.RemoteAddr)
	for _, b := range s.opt.Jail.Bans() {
		if b.IP == ip {
			writeJSON(w, http.StatusCreated, b)
			return
		}
	}
	writeJSON(w, http.StatusCreated, map[string]string{"ip": ip.String()})
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

func (s *Server) offenders(w http.ResponseWriter, _ *http.Request) {
	list := s.opt.Jail.Offenders()
	if list == nil {
		list = []jail.Offender{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"offenders": list})
}

// mutating guards a handler: with a token, a matching bearer token is
// required; without one, only loopback peers may mutate.
func (s *Server) mutating(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.opt.Token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.opt.Token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="sipwarden"`)
				writeError(w, http.StatusUnauthorized, "a valid bearer token is required")
				return
			}
			h(w, r)
			return
		}
		if !fromLoopback(r) {
			writeError(w, http.StatusForbidden, "no api.token is set: changes are accepted from loopback only")
			return
		}
		h(w, r)
	}
}

func fromLoopback(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
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
