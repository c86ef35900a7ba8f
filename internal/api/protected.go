package api

import (
	"net/http"
	"net/netip"

	"github.com/sipwarden/sipwarden/internal/jail"
	"github.com/sipwarden/sipwarden/internal/protect"
)

// Protect is what the API reads of the graduated response
// (*protect.Guard satisfies it).
type Protect interface {
	Offices() []protect.Office
	// State is "quarantined", "throttled" or "" for ip.
	State(netip.Addr) string
	// Targeted lists the users failing from several addresses
	// (distributed guessing).
	Targeted() []protect.Target
}

// protected serves GET /v1/protected: per protected address with
// failures, who is failing (user, port, User-Agent, count, first and last
// seen), the quarantined mappings and the throttle. Off loopback without
// the token, users, User-Agents and accounts are withheld like the
// whitelist's registration details.
func (s *Server) protected(w http.ResponseWriter, r *http.Request) {
	if s.opt.Protect == nil {
		writeJSON(w, http.StatusOK, map[string]any{"protected": []protect.Office{}, "targets": []protect.Target{}, "enabled": false})
		return
	}
	offs := s.opt.Protect.Offices()
	targets := s.opt.Protect.Targeted()
	if targets == nil {
		targets = []protect.Target{}
	}
	redact := s.redact(r)
	if redact {
		for i := range targets {
			targets[i].User, targets[i].Sample = "", nil
		}
		for i := range offs {
			offs[i].Accounts = nil
			for j := range offs[i].Failing {
				offs[i].Failing[j].User, offs[i].Failing[j].UserAgent = "", ""
			}
			for j := range offs[i].Quarantined {
				offs[i].Quarantined[j].Users = nil
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"protected": offs, "targets": targets, "enabled": true, "redacted": redact})
}

// withProtection turns the state of protected offenders into the rung of
// the graduated response in force: quarantined or throttled.
func (s *Server) withProtection(list []jail.Offender) {
	if s.opt.Protect == nil {
		return
	}
	for i := range list {
		if list[i].State != jail.StateProtected {
			continue
		}
		if st := s.opt.Protect.State(list[i].IP); st != "" {
			list[i].State = st
		}
	}
}

// protection is the rung in force for ip, for GET /v1/check.
func (s *Server) protection(ip netip.Addr) string {
	if s.opt.Protect == nil {
		return ""
	}
	return s.opt.Protect.State(ip)
}
