package api

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/sipwarden/sipwarden/internal/jail"
)

// Status is GET /v1/status: one screen of what an operator checks first.
// `sipwarden status` prints it and the page at / renders it.
type Status struct {
	Ready               bool             `json:"ready"`
	Reasons             []string         `json:"reasons"`
	Notes               []string         `json:"notes,omitempty"` // details that do not fail readiness
	DryRun              bool             `json:"dry_run"`
	Nodes               []NodeStatus     `json:"event_socket"`
	Registrations       int              `json:"registrations"`
	RegisteredAddresses int              `json:"registered_addresses"`
	StaticEntries       int              `json:"static_entries"`
	Bans                int              `json:"bans"`
	Protected           []StatusOffender `json:"protected"`
	TopOffenders        []StatusOffender `json:"top_offenders"`
	Redacted            bool             `json:"redacted"`
	Time                time.Time        `json:"time"`
}

// NodeStatus is one Event Socket node.
type NodeStatus struct {
	Address       string `json:"address"`
	Connected     bool   `json:"connected"`
	Problem       string `json:"problem,omitempty"`
	Registrations int    `json:"registrations"`
}

// StatusOffender is an offender as the status shows it.
type StatusOffender struct {
	IP       string         `json:"ip"`
	State    string         `json:"state"`
	Score    float64        `json:"score"`
	Offenses map[string]int `json:"offenses"`
	Why      string         `json:"why,omitempty"`
	User     string         `json:"user,omitempty"`
	LastSeen string         `json:"last_seen,omitempty"`
}

// topOffenders is how many offenders the status lists.
const topOffenders = 10

// maxProtected bounds the protected entries /v1/status lists.
const maxProtected = 1000

func (s *Server) buildStatus(r *http.Request) Status {
	st := Status{Ready: true, Reasons: []string{}, DryRun: s.opt.DryRun, Time: time.Now().UTC().Truncate(time.Second),
		Redacted: s.redact(r), Protected: []StatusOffender{}, TopOffenders: []StatusOffender{}}
	st.Notes = s.notes()
	for _, c := range s.opt.Checks {
		if c.Ready == nil {
			continue
		}
		if why, ok := c.Ready(); !ok {
			st.Ready = false
			st.Reasons = append(st.Reasons, c.Name+": "+why)
		}
	}
	perNode := map[string]int{}
	for _, e := range s.opt.Whitelist.Entries() {
		if e.Static {
			st.StaticEntries++
			continue
		}
		if len(e.Registrations) > 0 {
			st.RegisteredAddresses++
		}
		for _, g := range e.Registrations {
			st.Registrations++
			perNode[g.Node]++
		}
	}
	for _, n := range s.opt.Nodes {
		ns := NodeStatus{Address: n, Connected: true, Registrations: perNode[n]}
		for _, why := range st.Reasons {
			if strings.HasPrefix(why, "esl:") && strings.Contains(why, n) {
				ns.Connected, ns.Problem = false, strings.TrimSpace(strings.TrimPrefix(why, "esl:"))
			}
		}
		st.Nodes = append(st.Nodes, ns)
	}
	if st.Nodes == nil {
		st.Nodes = []NodeStatus{}
	}
	st.Bans = len(s.opt.Jail.Bans())
	top, protected := s.opt.Jail.Notable(topOffenders, maxProtected)
	for _, o := range protected {
		st.Protected = append(st.Protected, statusOffender(o, st.Redacted))
	}
	for _, o := range top {
		st.TopOffenders = append(st.TopOffenders, statusOffender(o, st.Redacted))
	}
	return st
}

func statusOffender(o jail.Offender, redact bool) StatusOffender {
	so := StatusOffender{IP: o.IP.String(), State: o.State, Score: o.Score, Why: o.Why, User: o.User, Offenses: map[string]int{}}
	if o.Prefix.IsValid() {
		so.IP = o.Prefix.String()
	}
	if redact {
		so.User = ""
	}
	for r, n := range o.Offenses {
		so.Offenses[string(r)] = n
	}
	if !o.LastSeen.IsZero() {
		so.LastSeen = o.LastSeen.UTC().Format(time.RFC3339)
	}
	return so
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.buildStatus(r))
}

// FetchStatus reads GET /v1/status.
func FetchStatus(ctx context.Context, c *Client) (Status, error) {
	var st Status
	err := c.Get(ctx, "/v1/status", &st)
	return st, err
}
