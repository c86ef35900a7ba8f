// Package protect owns the graduated response for addresses that hold a
// live registration: protection is not immunity. The jail hands it the
// offenses of a protected address (decision reason Registered); it tracks
// who is failing there (per user: port, User-Agent, count, first and last
// seen; bounded) and answers with one rung of the ladder:
//
//	watch      report only (unverified evidence, no port, other rules)
//	quarantine block only the offending NAT mapping (ip, transport, port)
//	throttle   rate-limit new SIP requests from the whole address (over budget)
//
// Credential-class failures (auth_failure, unknown_user) are excused up to a
// budget: each failing mapping is quarantined, and past the budget (too many
// distinct failing ports or users per window, or failures per hour) the
// address is throttled. Never-excused rules (scanner_user_agent,
// sip_injection, toll_fraud_invite, extension_scan, flood) quarantine the
// mapping at once (throttle without a port) and name the accounts registered
// there. Only verified evidence (a round trip, FreeSWITCH's own word) may
// quarantine or throttle; the rest is reported.
//
// It must not decide whether an address is protected (internal/decision
// does), must not score (the jail does) and never bans an address. Kernel
// writes go through a Firewall from the one writer goroutine of Run.
package protect

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// Defaults of Options (config keys protect.*).
const (
	DefaultWindow           = 10 * time.Minute // protect.window: distinct ports/users are counted within it
	DefaultMaxPorts         = 3                // protect.max_ports: distinct failing mappings per window within budget
	DefaultMaxUsers         = 3                // protect.max_users: distinct failing users per window within budget
	DefaultMaxPerHour       = 30               // protect.max_failures_per_hour: verified credential failures per hour within budget
	DefaultMaxAddresses     = 4096             // protect.max_addresses: protected addresses tracked
	DefaultMaxUsersTracked  = 64               // per address
	DefaultMaxMappingsTrack = 256              // per address
	DefaultQueueSize        = 1024
)

// Action is a rung of the ladder.
type Action uint8

// The actions, mildest first.
const (
	Watch Action = iota
	Quarantine
	Throttle
)

// String is the verdict as the API, replay and metrics name it.
func (a Action) String() string {
	switch a {
	case Quarantine:
		return "quarantined"
	case Throttle:
		return "throttled"
	}
	return "watching"
}

// Class of a rule for the ladder.
type Class uint8

// Classes.
const (
	Other        Class = iota // reported only
	Credential                // excused within the budget
	NeverExcused              // quarantined at once
)

// ClassOf returns the class of r.
func ClassOf(r offense.Rule) Class {
	switch r {
	case offense.AuthFailure, offense.UnknownUser:
		return Credential
	case offense.ScannerUserAgent, offense.SIPInjection, offense.TollFraudInvite, offense.ExtensionScan, offense.Flood:
		return NeverExcused
	}
	return Other
}

func (c Class) String() string {
	switch c {
	case Credential:
		return "credential"
	case NeverExcused:
		return "never_excused"
	}
	return "other"
}

// Mapping is one NAT mapping: what a quarantine blocks. An empty Transport
// (the Event Socket names none) blocks the port on UDP and TCP.
type Mapping struct {
	IP        netip.Addr
	Transport offense.Transport
	Port      uint16
}

func (m Mapping) String() string {
	t := string(m.Transport)
	if t == "" {
		t = "udp+tcp"
	}
	return fmt.Sprintf("%s,%s:%d", m.IP, t, m.Port)
}

// Firewall is what protect needs from a kernel backend. Adds refresh the
// timeout of an entry already present; deleting an absent entry is not an
// error. *ipset.Mappings and DryRun satisfy it.
type Firewall interface {
	AddMapping(ctx context.Context, m Mapping, d time.Duration) error
	DelMapping(ctx context.Context, m Mapping) error
	AddThrottle(ctx context.Context, ip netip.Addr, d time.Duration) error
	DelThrottle(ctx context.Context, ip netip.Addr) error
}

// Ladder is the jail's ban policy in force, handed with each offense so a
// quarantine follows the jail's bantime and escalation (and its reloads).
type Ladder struct {
	Bantime, MaxBantime time.Duration
	Factor              float64
}

func (l Ladder) duration(n int) time.Duration {
	if l.Bantime <= 0 {
		l.Bantime = time.Hour
	}
	if l.MaxBantime < l.Bantime {
		l.MaxBantime = l.Bantime
	}
	d := float64(l.Bantime)
	for i := 1; i < n && d < float64(l.MaxBantime); i++ {
		d *= max(l.Factor, 1)
	}
	return min(time.Duration(d), l.MaxBantime)
}

// Options configures a Guard. Zero values take the defaults.
type Options struct {
	Window     time.Duration
	MaxPorts   int
	MaxUsers   int
	MaxPerHour int
	// MaxAddresses bounds the addresses tracked; beyond it the one idle
	// longest without a quarantine or throttle in force is forgotten.
	MaxAddresses int
	// DistributedAddresses: distinct addresses failing against one user
	// within Window that raise distributed guessing (DefaultDistributedAddresses).
	DistributedAddresses int
	Firewall             Firewall // nil: NewDryRun()
	// Accounts names the accounts registered at an address (the
	// whitelist's registrations), for logs and the API. May be nil.
	Accounts   func(netip.Addr) []string
	QueueSize  int
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Failing is one user failing at a protected address.
type Failing struct {
	User      string            `json:"user"`
	Port      uint16            `json:"port,omitempty"`
	Transport offense.Transport `json:"transport,omitempty"`
	UserAgent string            `json:"user_agent,omitempty"`
	Rule      offense.Rule      `json:"rule"`
	Count     int               `json:"count"`
	Verified  bool              `json:"verified"`
	FirstSeen time.Time         `json:"first_seen"`
	LastSeen  time.Time         `json:"last_seen"`
}

// Quarantined is one mapping in quarantine.
type Quarantined struct {
	Transport offense.Transport `json:"transport,omitempty"` // empty: udp and tcp
	Port      uint16            `json:"port"`
	Rule      offense.Rule      `json:"rule"`
	Users     []string          `json:"users,omitempty"`
	// Credential is true when all its evidence was credential-class: a
	// registration of one of Users lifts it.
	Credential bool      `json:"credential"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// Office is one protected address as GET /v1/protected shows it.
type Office struct {
	IP             netip.Addr    `json:"ip"`
	State          string        `json:"state"` // watching, quarantined, throttled
	Why            string        `json:"why,omitempty"`
	Accounts       []string      `json:"accounts,omitempty"`
	Failing        []Failing     `json:"failing"`
	Quarantined    []Quarantined `json:"quarantined"`
	ThrottledUntil time.Time     `json:"throttled_until,omitzero"`
}

// Result is what Offend decided for one offense.
type Result struct {
	Action  Action
	Mapping Mapping // for Quarantine
	Why     string
	// Accounts are the accounts registered at the address, named when a
	// never-excused rule fired there.
	Accounts []string
	Duration time.Duration // of the quarantine or throttle
	New      bool          // a kernel write was queued (not a repeat)
}

type failing struct {
	Failing
	first, last int64
}

type quar struct {
	rule       offense.Rule
	users      []string
	credential bool
	expires    int64
}

type office struct {
	users   map[string]*failing
	maps    map[Mapping]int64 // failing mappings -> last failure (verified)
	hour    [2]uint32         // verified credential failures: current and previous hour bucket
	hourAt  int64             // start of the current hour bucket
	quar    map[Mapping]*quar
	nQuar   int // quarantines so far (escalation)
	thr     int64
	thrCred bool // all the throttle's evidence was credential-class
	thrWhy  string
	nThr    int
	last    int64
	why     string
}

type opKind uint8

const (
	opAddMap opKind = iota
	opDelMap
	opAddThr
	opDelThr
)

type op struct {
	kind opKind
	m    Mapping
	d    time.Duration
	seen time.Time
}

// Guard applies the ladder. Safe for concurrent use.
type Guard struct {
	opt     Options
	log     *slog.Logger
	now     func() time.Time
	m       *metrics
	targets *targets
	queue   chan op

	mu      sync.Mutex
	offices map[netip.Addr]*office
}

// New returns a Guard; Run writes its decisions to the kernel.
func New(o Options) (*Guard, error) {
	setDefault(&o.Window, DefaultWindow)
	setDefault(&o.MaxPorts, DefaultMaxPorts)
	setDefault(&o.MaxUsers, DefaultMaxUsers)
	setDefault(&o.MaxPerHour, DefaultMaxPerHour)
	setDefault(&o.MaxAddresses, DefaultMaxAddresses)
	setDefault(&o.QueueSize, DefaultQueueSize)
	setDefault(&o.DistributedAddresses, DefaultDistributedAddresses)
	if o.Window < time.Second || o.MaxPorts < 1 || o.MaxUsers < 1 || o.MaxPerHour < 1 || o.MaxAddresses < 1 {
		return nil, fmt.Errorf("protect: window >= 1s and max_ports, max_users, max_failures_per_hour, max_addresses >= 1")
	}
	if o.Firewall == nil {
		o.Firewall = NewDryRun()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	g := &Guard{opt: o, log: o.Logger.With("component", "protect"), now: o.Now,
		queue: make(chan op, o.QueueSize), offices: make(map[netip.Addr]*office)}
	g.m = newMetrics(o.Registerer, g)
	g.targets = newTargets(o.DistributedAddresses, DefaultMaxTargets, o.Window, g.log, o.Now, o.Registerer)
	return g, nil
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Offend judges one offense of an address a live registration protects
// (the jail calls it when the decision's reason is Registered) and queues
// the kernel write it calls for.
func (g *Guard) Offend(o offense.Offense, l Ladder) Result {
	ip := o.IP.Unmap().WithZone("")
	if !ip.IsValid() {
		return Result{Action: Watch, Why: "invalid address"}
	}
	t := o.Time
	if t.IsZero() {
		t = g.now()
	}
	tn := t.UnixNano()
	class := ClassOf(o.Rule)
	mp := Mapping{IP: ip, Transport: o.Transport, Port: o.Port}
	if mp.Transport == offense.TransportTLS {
		mp.Transport = offense.TransportTCP // TLS is TCP on the wire
	}
	// the start of a ban runs from now, not from a late record's own time
	start := max(tn, g.now().UnixNano())

	g.mu.Lock()
	of := g.offices[ip]
	if of == nil {
		if len(g.offices) >= g.opt.MaxAddresses && !g.evictLocked(start) {
			g.mu.Unlock()
			g.m.dropped.Inc()
			return Result{Action: Watch, Why: "too many protected addresses tracked"}
		}
		of = &office{users: make(map[string]*failing), maps: make(map[Mapping]int64), quar: make(map[Mapping]*quar)}
		g.offices[ip] = of
	}
	of.last = max(of.last, tn)
	g.trackLocked(of, o, mp, tn)

	res := Result{Action: Watch}
	switch {
	case !o.Verified:
		res.Why = "unverified " + string(o.Rule) + ": reported only"
	case class == Other:
		res.Why = string(o.Rule) + ": reported only"
	case class == Credential:
		if o.Port != 0 {
			// distinct ports, whatever the source called the transport
			// (the Event Socket names none, a capture says udp)
			of.maps[Mapping{IP: ip, Port: o.Port}] = tn
		}
		of.rollHour(tn)
		if of.hour[0] < ^uint32(0) {
			of.hour[0]++
		}
		if over, why := g.overBudgetLocked(of, tn); over {
			res = g.throttleLocked(of, ip, start, l, true, why)
		} else if o.Port != 0 {
			res = g.quarantineLocked(of, mp, o, start, l, true)
		} else {
			res.Why = "within budget, no port: reported only"
		}
	default: // never excused
		res.Accounts = g.accounts(ip)
		if o.Port != 0 {
			res = g.quarantineLocked(of, mp, o, start, l, false)
		} else {
			res = g.throttleLocked(of, ip, start, l, false, string(o.Rule)+" without a port")
		}
		res.Accounts = g.accounts(ip)
	}
	of.why = res.Why
	g.mu.Unlock()

	g.m.action(res.Action, class).Inc()
	if res.New {
		kind, m := opAddMap, res.Mapping
		if res.Action == Throttle {
			kind, m = opAddThr, Mapping{IP: ip}
		}
		select {
		case g.queue <- op{kind: kind, m: m, d: res.Duration, seen: time.Now()}:
		default:
			g.m.dropped.Inc()
		}
		g.logResult(o, res)
	}
	return res
}

func (g *Guard) accounts(ip netip.Addr) []string {
	if g.opt.Accounts == nil {
		return nil
	}
	a := slices.Clone(g.opt.Accounts(ip))
	slices.Sort(a)
	return slices.Compact(a)
}

func (g *Guard) logResult(o offense.Offense, r Result) {
	args := []any{"ip", o.IP.String(), "action", r.Action.String(), "rule", string(o.Rule), "user", o.User,
		"port", o.Port, "transport", string(o.Transport), "duration", r.Duration, "why", r.Why}
	if len(r.Accounts) > 0 {
		args = append(args, "accounts", strings.Join(r.Accounts, ","))
	}
	switch r.Action {
	case Quarantine:
		g.log.Warn(fmt.Sprintf("protected %s: quarantined mapping %s (%s)", o.IP, r.Mapping, r.Why), args...)
	case Throttle:
		g.log.Warn(fmt.Sprintf("protected %s: throttled (%s)", o.IP, r.Why), args...)
	}
}

// trackLocked records who is failing (bounded per address).
func (g *Guard) trackLocked(of *office, o offense.Offense, mp Mapping, tn int64) {
	user := o.User
	if len(user) > 64 {
		user = user[:64]
	}
	f := of.users[user]
	if f == nil {
		if len(of.users) >= DefaultMaxUsersTracked {
			// forget the one seen longest ago: the view is of who fails now
			var old string
			oldT := int64(1<<63 - 1)
			for u, x := range of.users {
				if x.last < oldT {
					old, oldT = u, x.last
				}
			}
			delete(of.users, old)
		}
		f = &failing{Failing: Failing{User: user}, first: tn}
		of.users[user] = f
	}
	f.Count++
	f.Rule = o.Rule
	f.Verified = f.Verified || o.Verified
	if o.Port != 0 {
		f.Port, f.Transport = o.Port, mp.Transport
	}
	if ua := o.Detail; ua != "" && o.Source == offense.SourceESL {
		f.UserAgent = truncate(ua, 80) // the Event Socket's Detail is the User-Agent
	}
	f.first = min(f.first, tn)
	f.last = max(f.last, tn)
	if len(of.maps) > DefaultMaxMappingsTrack {
		for m, last := range of.maps {
			if tn-last >= int64(g.opt.Window) {
				delete(of.maps, m)
			}
		}
		for m := range of.maps { // still full of live ones: drop any
			if len(of.maps) <= DefaultMaxMappingsTrack {
				break
			}
			delete(of.maps, m)
		}
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (of *office) rollHour(tn int64) {
	const h = int64(time.Hour)
	switch {
	case of.hourAt == 0:
		of.hourAt = tn
	case tn >= of.hourAt+2*h:
		of.hour, of.hourAt = [2]uint32{}, tn
	case tn >= of.hourAt+h:
		of.hour, of.hourAt = [2]uint32{0, of.hour[0]}, of.hourAt+h
	}
}

// perHour is the sliding-window estimate of failures within the last hour.
func (of *office) perHour(tn int64) float64 {
	f := float64(tn-of.hourAt) / float64(time.Hour)
	return float64(of.hour[0]) + float64(of.hour[1])*max(0, 1-f)
}

// overBudgetLocked reports whether the address's verified credential
// failures exceed the budget.
func (g *Guard) overBudgetLocked(of *office, tn int64) (bool, string) {
	win := int64(g.opt.Window)
	ports := 0
	for _, last := range of.maps {
		if tn-last < win {
			ports++
		}
	}
	users := 0
	for _, f := range of.users {
		if f.Verified && ClassOf(f.Rule) == Credential && tn-f.last < win {
			users++
		}
	}
	switch {
	case ports > g.opt.MaxPorts:
		return true, fmt.Sprintf("%d failing ports within %s (budget %d)", ports, g.opt.Window, g.opt.MaxPorts)
	case users > g.opt.MaxUsers:
		return true, fmt.Sprintf("%d failing users within %s (budget %d)", users, g.opt.Window, g.opt.MaxUsers)
	case of.perHour(tn) > float64(g.opt.MaxPerHour):
		return true, fmt.Sprintf("%.0f failures within 1h (budget %d)", of.perHour(tn), g.opt.MaxPerHour)
	}
	return false, ""
}

func (g *Guard) quarantineLocked(of *office, mp Mapping, o offense.Offense, start int64, l Ladder, credential bool) Result {
	q := of.quar[mp]
	if q != nil && q.expires > start {
		if !credential {
			q.credential = false
		}
		if o.User != "" && !slices.Contains(q.users, o.User) && len(q.users) < 8 {
			q.users = append(q.users, o.User)
		}
		return Result{Action: Quarantine, Mapping: mp, Why: "already quarantined"}
	}
	of.nQuar++
	d := l.duration(of.nQuar)
	q = &quar{rule: o.Rule, credential: credential, expires: start + int64(d)}
	if o.User != "" {
		q.users = []string{o.User}
	}
	of.quar[mp] = q
	why := string(o.Rule) + " within budget"
	if !credential {
		why = string(o.Rule) + " is never excused"
	}
	return Result{Action: Quarantine, Mapping: mp, Why: why, Duration: d, New: true}
}

func (g *Guard) throttleLocked(of *office, ip netip.Addr, start int64, l Ladder, credential bool, why string) Result {
	if of.thr > start {
		if !credential {
			of.thrCred = false
		}
		return Result{Action: Throttle, Mapping: Mapping{IP: ip}, Why: "already throttled: " + of.thrWhy}
	}
	of.nThr++
	d := l.duration(of.nThr)
	of.thr, of.thrCred, of.thrWhy = start+int64(d), credential, why
	return Result{Action: Throttle, Mapping: Mapping{IP: ip}, Why: why, Duration: d, New: true}
}

// evictLocked forgets the address idle longest with nothing in force.
func (g *Guard) evictLocked(now int64) bool {
	var victim netip.Addr
	oldest := int64(1<<63 - 1)
	for ip, of := range g.offices {
		if of.active(now) {
			continue
		}
		if of.last < oldest {
			victim, oldest = ip, of.last
		}
	}
	if !victim.IsValid() {
		return false
	}
	delete(g.offices, victim)
	return true
}

func (of *office) active(now int64) bool {
	if of.thr > now {
		return true
	}
	for _, q := range of.quar {
		if q.expires > now {
			return true
		}
	}
	return false
}

// Registered is told of a registration event (sofia::register): user
// registered at ip. Quarantines at ip whose evidence was all
// credential-class and named user are lifted at once (the phone has its
// password again, usually on a new mapping); the throttle is lifted when
// its evidence was all credential-class and every user that failed there
// has registered since. It returns how many entries it lifted.
func (g *Guard) Registered(ip netip.Addr, user string) int {
	ip = ip.Unmap().WithZone("")
	now := g.now().UnixNano()
	var ops []op
	g.mu.Lock()
	of := g.offices[ip]
	if of == nil || user == "" {
		g.mu.Unlock()
		return 0
	}
	if f := of.users[user]; f != nil && ClassOf(f.Rule) == Credential {
		delete(of.users, user)
	}
	for m, q := range of.quar {
		if q.expires <= now {
			delete(of.quar, m)
			continue
		}
		if q.credential && slices.Contains(q.users, user) {
			delete(of.quar, m)
			delete(of.maps, Mapping{IP: ip, Port: m.Port})
			ops = append(ops, op{kind: opDelMap, m: m})
		}
	}
	if of.thr > now && of.thrCred {
		left := 0
		for _, f := range of.users {
			if f.Verified {
				left++
			}
		}
		if left == 0 {
			of.thr = 0
			clear(of.maps)
			of.hour = [2]uint32{}
			ops = append(ops, op{kind: opDelThr, m: Mapping{IP: ip}})
		}
	}
	g.mu.Unlock()
	for _, o := range ops {
		select {
		case g.queue <- o:
		default:
			g.m.dropped.Inc()
		}
		g.m.lifted.Inc()
		g.log.Info("lifted on registration", "ip", ip.String(), "user", user, "entry", liftName(o))
	}
	return len(ops)
}

func liftName(o op) string {
	if o.kind == opDelThr {
		return "throttle"
	}
	return o.m.String()
}

// State is the verdict for ip: "quarantined", "throttled", or "" when
// nothing is in force.
func (g *Guard) State(ip netip.Addr) string {
	ip = ip.Unmap().WithZone("")
	now := g.now().UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stateLocked(g.offices[ip], now)
}

// Ever is like State but also answers for what has expired since (replay).
func (g *Guard) Ever(ip netip.Addr) string {
	ip = ip.Unmap().WithZone("")
	g.mu.Lock()
	defer g.mu.Unlock()
	of := g.offices[ip]
	switch {
	case of == nil:
		return ""
	case of.nThr > 0:
		return Throttle.String()
	case of.nQuar > 0:
		return Quarantine.String()
	}
	return ""
}

func (g *Guard) stateLocked(of *office, now int64) string {
	if of == nil {
		return ""
	}
	if of.thr > now {
		return Throttle.String()
	}
	for _, q := range of.quar {
		if q.expires > now {
			return Quarantine.String()
		}
	}
	return ""
}

// Offices lists the protected addresses with failures, busiest first.
func (g *Guard) Offices() []Office {
	now := g.now().UnixNano()
	g.mu.Lock()
	out := make([]Office, 0, len(g.offices))
	for ip, of := range g.offices {
		o := Office{IP: ip, State: g.stateLocked(of, now), Why: of.why, Failing: []Failing{}, Quarantined: []Quarantined{}}
		if o.State == "" {
			o.State = Watch.String()
		}
		for _, f := range of.users {
			x := f.Failing
			x.FirstSeen, x.LastSeen = time.Unix(0, f.first).UTC(), time.Unix(0, f.last).UTC()
			o.Failing = append(o.Failing, x)
		}
		for m, q := range of.quar {
			if q.expires > now {
				o.Quarantined = append(o.Quarantined, Quarantined{Transport: m.Transport, Port: m.Port, Rule: q.rule,
					Users: slices.Clone(q.users), Credential: q.credential, ExpiresAt: time.Unix(0, q.expires).UTC()})
			}
		}
		if of.thr > now {
			o.ThrottledUntil = time.Unix(0, of.thr).UTC()
		}
		out = append(out, o)
	}
	g.mu.Unlock()
	for i := range out {
		out[i].Accounts = g.accounts(out[i].IP)
		slices.SortFunc(out[i].Failing, func(a, b Failing) int { return b.LastSeen.Compare(a.LastSeen) })
		slices.SortFunc(out[i].Quarantined, func(a, b Quarantined) int { return int(a.Port) - int(b.Port) })
	}
	slices.SortFunc(out, func(a, b Office) int {
		if len(a.Failing) != len(b.Failing) {
			return len(b.Failing) - len(a.Failing)
		}
		return a.IP.Compare(b.IP)
	})
	return out
}

// failingUsers counts users with verified failures within the window at
// every protected address (the gauge).
func (g *Guard) failingUsers() (users, quarantined, throttled float64) {
	now := g.now().UnixNano()
	win := int64(g.opt.Window)
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, of := range g.offices {
		for _, f := range of.users {
			if now-f.last < win {
				users++
			}
		}
		for _, q := range of.quar {
			if q.expires > now {
				quarantined++
			}
		}
		if of.thr > now {
			throttled++
		}
	}
	return
}

// sweep forgets addresses with nothing in force and no failure within the
// window, and expired quarantines.
func (g *Guard) sweep() {
	now := g.now().UnixNano()
	win := int64(g.opt.Window)
	g.mu.Lock()
	defer g.mu.Unlock()
	for ip, of := range g.offices {
		for m, q := range of.quar {
			if q.expires <= now {
				delete(of.quar, m)
			}
		}
		for u, f := range of.users {
			if now-f.last >= max(win, int64(time.Hour)) {
				delete(of.users, u)
			}
		}
		if !of.active(now) && now-of.last >= max(win, int64(time.Hour)) {
			delete(g.offices, ip)
		}
	}
}

// Run writes queued decisions to the kernel until ctx is cancelled.
func (g *Guard) Run(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			g.sweep()
		case o := <-g.queue:
			g.apply(ctx, o)
		}
	}
}

// Drain applies what is queued without a running writer (replay, tests).
func (g *Guard) Drain(ctx context.Context) {
	if g == nil {
		return
	}
	for {
		select {
		case o := <-g.queue:
			g.apply(ctx, o)
		default:
			return
		}
	}
}

func (g *Guard) apply(ctx context.Context, o op) {
	var err error
	fw := g.opt.Firewall
	switch o.kind {
	case opAddMap:
		err = fw.AddMapping(ctx, o.m, o.d)
	case opDelMap:
		err = fw.DelMapping(ctx, o.m)
	case opAddThr:
		err = fw.AddThrottle(ctx, o.m.IP, o.d)
	case opDelThr:
		err = fw.DelThrottle(ctx, o.m.IP)
	}
	if err != nil {
		g.m.errors.Inc()
		g.log.Error("kernel write failed", "entry", o.m.String(), "err", err)
		return
	}
	if !o.seen.IsZero() {
		g.m.latency.Observe(time.Since(o.seen).Seconds())
	}
}

// Summary says, for ip, what the ladder did over the guard's memory (for
// replay's why column): "quarantined udp:40004 for 1004".
func (g *Guard) Summary(ip netip.Addr) string {
	ip = ip.Unmap().WithZone("")
	g.mu.Lock()
	defer g.mu.Unlock()
	of := g.offices[ip]
	if of == nil {
		return ""
	}
	var parts []string
	if of.nThr > 0 {
		parts = append(parts, "throttled: "+of.thrWhy)
	}
	if len(of.quar) > 0 {
		ms := make([]string, 0, len(of.quar))
		for m, q := range of.quar {
			s := strings.TrimPrefix(m.String(), m.IP.String()+",")
			if len(q.users) > 0 {
				s += " for " + strings.Join(q.users, ",")
			}
			ms = append(ms, s)
		}
		slices.Sort(ms)
		if len(ms) > 3 {
			ms = append(ms[:3], "...")
		}
		if len(ms) == 1 {
			parts = append(parts, "quarantined "+ms[0])
		} else {
			parts = append(parts, fmt.Sprintf("quarantined %d mappings: %s", len(of.quar), strings.Join(ms, ", ")))
		}
	}
	if n := len(of.users); n > 1 {
		parts = append(parts, fmt.Sprintf("%d failing users", n))
	}
	return strings.Join(parts, "; ")
}
