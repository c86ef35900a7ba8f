// Package config owns sipwarden's configuration: the YAML schema of SPEC.md,
// built-in defaults that make `sipwarden run` useful with no file,
// ${VAR} expansion, SIPWARDEN_* environment overrides, *_file secrets and one
// validation pass that reports every problem at once with its key path.
//
// It knows nothing of the components it configures: the daemon maps these
// values onto each package's options.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// Config is the whole configuration. Field tags are the YAML keys; the
// environment variable of a key is SIPWARDEN_ + its path upper-cased with
// dots as underscores (esl.address -> SIPWARDEN_ESL_ADDRESS).
type Config struct {
	ESL       ESL             `yaml:"esl"`
	Logs      Logs            `yaml:"logs"`
	SIP       SIP             `yaml:"sip"`
	Rules     map[string]Rule `yaml:"rules"`
	Jail      Jail            `yaml:"jail"`
	Whitelist Whitelist       `yaml:"whitelist"`
	NeverBan  []string        `yaml:"never_ban"`
	Ban       Ban             `yaml:"ban"`
	Protect   Protect         `yaml:"protect"`
	API       API             `yaml:"api"`
	Log       Log             `yaml:"log"`
}

// ESL configures the FreeSWITCH Event Socket connections.
type ESL struct {
	Address        string        `yaml:"address"`
	Addresses      []string      `yaml:"addresses"`
	Password       string        `yaml:"password"`
	PasswordFile   string        `yaml:"password_file"`
	DialTimeout    time.Duration `yaml:"dial_timeout"`
	CommandTimeout time.Duration `yaml:"command_timeout"`
	ResyncInterval time.Duration `yaml:"resync_interval"`
	BackoffMin     time.Duration `yaml:"backoff_min"`
	BackoffMax     time.Duration `yaml:"backoff_max"`
	MaxFrameBytes  int           `yaml:"max_frame_bytes"`
	Profiles       []string      `yaml:"profiles"`
	// DownPolicy is what credential-class bans (auth_failure, unknown_user,
	// auth_challenge) do while an Event Socket node is down or not yet
	// synced: "hold" (scored, decided when it is back) or "enforce".
	DownPolicy string `yaml:"down_policy"`
	// Disabled turns the Event Socket watch off (logs/SIP only; nothing is
	// then whitelisted by registration).
	Disabled bool `yaml:"disabled"`
}

// Nodes returns every configured Event Socket address, address first.
func (e ESL) Nodes() []string {
	var out []string
	if e.Address != "" {
		out = append(out, e.Address)
	}
	for _, a := range e.Addresses {
		if a != e.Address {
			out = append(out, a)
		}
	}
	return out
}

// Logs configures FreeSWITCH log following.
type Logs struct {
	Files        []string      `yaml:"files"`
	FromStart    bool          `yaml:"from_start"`
	MaxLineBytes int           `yaml:"max_line_bytes"`
	PollInterval time.Duration `yaml:"poll_interval"`
	// PublicContexts are the dialplan contexts whose unrouted calls are
	// no_route offenses (default: public).
	PublicContexts []string `yaml:"public_contexts"`
	// Timezone of the times FreeSWITCH writes in its log (IANA name;
	// default Local, as FreeSWITCH logs local time).
	Timezone string `yaml:"timezone"`
}

// SIP configures the SIP payload sources and rule parameters.
type SIP struct {
	HEPListen         string        `yaml:"hep_listen"`
	CaptureInterface  string        `yaml:"capture_interface"`
	CapturePorts      []int         `yaml:"capture_ports"`
	ScannerUserAgents []string      `yaml:"scanner_user_agents"`
	TollPatterns      []string      `yaml:"toll_patterns"`
	FloodRequests     int           `yaml:"flood_requests"`
	FloodWindow       time.Duration `yaml:"flood_window"`
	ScanUsers         int           `yaml:"scan_users"`
	ScanWindow        time.Duration `yaml:"scan_window"`
	// HEPAllow lists the addresses (CIDRs) HEP is taken from; empty means
	// loopback and the Event Socket nodes. Required when hep_listen is
	// not on loopback.
	HEPAllow []string `yaml:"hep_allow"`
	// HEPCaptureIDs, when set, are the only HEP capture_id values taken.
	HEPCaptureIDs []int `yaml:"hep_capture_ids"`
	// Servers are FreeSWITCH's addresses (CIDRs): only responses they send
	// are evidence. Empty means the host's own addresses and the Event
	// Socket nodes (replay: the addresses a capture's requests go to and
	// that answer them).
	Servers []string `yaml:"servers"`
}

// Rule switches one offense rule and sets its weight.
type Rule struct {
	Enabled *bool    `yaml:"enabled"`
	Weight  *float64 `yaml:"weight"`
}

// Jail configures scoring and escalation.
type Jail struct {
	Findtime     time.Duration `yaml:"findtime"`
	MaxRetry     float64       `yaml:"maxretry"`
	Bantime      time.Duration `yaml:"bantime"`
	Factor       float64       `yaml:"factor"`
	MaxBantime   time.Duration `yaml:"maxbantime"`
	MaxOffenders int           `yaml:"max_offenders"`
	StateFile    string        `yaml:"state_file"`
	// UnverifiedFactor weighs evidence that a forged UDP source could
	// produce (no round trip with the source): 1 trusts it fully, 0.5
	// needs twice as much of it to ban.
	UnverifiedFactor float64 `yaml:"unverified_factor"`
}

// Whitelist configures the static allowlist and registration grace.
type Whitelist struct {
	Static []string      `yaml:"static"`
	Grace  time.Duration `yaml:"grace"`
}

// Ban configures the kernel backend.
type Ban struct {
	Backend  string `yaml:"backend"`
	SetV4    string `yaml:"set_v4"`
	SetV6    string `yaml:"set_v6"`
	MaxElem  int    `yaml:"maxelem"`
	V6Prefix int    `yaml:"v6_prefix"`
	// Fallback "dry-run" keeps the daemon running, with a warning, when the
	// ipset backend cannot be opened (no CAP_NET_ADMIN, no ip_set module);
	// empty (the default) refuses to start.
	Fallback string `yaml:"fallback"`
	// ResyncInterval is how often the kernel sets are read back and
	// repaired (recreated if deleted, lost bans re-added).
	ResyncInterval time.Duration `yaml:"resync_interval"`
	// InstallRule inserts the iptables/ip6tables DROP rules that use the
	// sets on RulePorts at start and removes them at stop.
	InstallRule bool  `yaml:"install_rule"`
	RulePorts   []int `yaml:"rule_ports"`
}

// API configures the HTTP API.
type API struct {
	Listen string `yaml:"listen"`
	// MetricsListen is an optional second listener serving only /metrics,
	// /healthz and /readyz.
	MetricsListen string `yaml:"metrics_listen"`
	Token         string `yaml:"token"`
	// TokenFile holds the bearer token every mutation needs; generated
	// (mode 0600) at the first start when missing. Default: api.token next
	// to jail.state_file, else none (every change is refused).
	TokenFile string `yaml:"token_file"`
}

// Log configures sipwarden's own logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Backends.
const (
	BackendIPSet  = "ipset"
	BackendDryRun = "dry-run"
)

// Load reads the file at path (empty: defaults only), applies environment
// overrides from env (os.Environ form; nil means none), reads *_file
// secrets and validates. The error lists every problem found.
func Load(path string, env []string) (Config, error) {
	cfg := Default()
	var errs []error
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
		if err := decode(raw, env, &cfg); err != nil {
			errs = append(errs, prefixLines(path, err))
		}
	}
	vars := envMap(env)
	errs = append(errs, unknownEnv(&cfg, vars)...)
	if err := applyEnv(&cfg, env); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, cfg.readSecrets()...)
	errs = append(errs, cfg.Validate())
	return cfg, errors.Join(errs...)
}

// prefixLines names the file on each of err's lines.
func prefixLines(path string, err error) error {
	var out []error
	for l := range strings.SplitSeq(err.Error(), "\n") {
		out = append(out, fmt.Errorf("%s: %s", path, l))
	}
	return errors.Join(out...)
}

var varRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// decode expands ${VAR} (an unset variable is an error) and decodes YAML
// with unknown keys rejected.
func decode(raw []byte, env []string, cfg *Config) error {
	vars := envMap(env)
	var missing []string
	raw = varRef.ReplaceAllFunc(raw, func(m []byte) []byte {
		name := string(varRef.FindSubmatch(m)[1])
		v, ok := vars[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return []byte(v)
	})
	var errs []error
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("unset environment variable(s) referenced: %s", strings.Join(missing, ", ")))
	}
	return errors.Join(append(errs, decodeYAML(raw, cfg))...)
}

func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// EnvName returns the environment variable that overrides a key path.
func EnvName(path string) string {
	return "SIPWARDEN_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(path))
}

// applyEnv overrides leaves of cfg from SIPWARDEN_* variables. Lists are
// comma-separated. Rules are addressed as SIPWARDEN_RULES_<RULE>_WEIGHT and
// SIPWARDEN_RULES_<RULE>_ENABLED.
func applyEnv(cfg *Config, env []string) error {
	vars := envMap(env)
	var errs []error
	walk(reflect.ValueOf(cfg).Elem(), "", func(path string, v reflect.Value) {
		name := EnvName(path)
		s, ok := vars[name]
		if !ok {
			return
		}
		if err := setString(v, s); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", path, name, err))
		}
	})
	for _, r := range offense.Rules {
		for _, field := range []string{"enabled", "weight"} {
			path := "rules." + string(r) + "." + field
			s, ok := vars[EnvName(path)]
			if !ok {
				continue
			}
			rule := cfg.Rules[string(r)]
			var err error
			if field == "enabled" {
				var b bool
				b, err = strconv.ParseBool(s)
				if err != nil {
					err = fmt.Errorf("must be true or false, got %q", s)
				}
				rule.Enabled = &b
			} else {
				var f float64
				f, err = strconv.ParseFloat(s, 64)
				if err != nil {
					err = fmt.Errorf("must be a number, got %q", s)
				}
				rule.Weight = &f
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s (%s): %w", path, EnvName(path), err))
				continue
			}
			if cfg.Rules == nil {
				cfg.Rules = map[string]Rule{}
			}
			cfg.Rules[string(r)] = rule
		}
	}
	return errors.Join(errs...)
}

// walk calls fn for every settable leaf (not maps) with its YAML key path.
func walk(v reflect.Value, prefix string, fn func(string, reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" || !f.IsExported() {
			continue
		}
		path := key
		if prefix != "" {
			path = prefix + "." + key
		}
		fv := v.Field(i)
		switch fv.Kind() {
		case reflect.Struct:
			walk(fv, path, fn)
		case reflect.Map:
			// rules: handled by name
		default:
			fn(path, fv)
		}
	}
}

var durationType = reflect.TypeOf(time.Duration(0))

func setString(v reflect.Value, s string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration (durations look like 90s, 10m, 1h)", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("must be true or false, got %q", s)
		}
		v.SetBool(b)
	case reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("must be a whole number, got %q", s)
		}
		v.SetInt(int64(n))
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("must be a number, got %q", s)
		}
		v.SetFloat(f)
	case reflect.Slice:
		var parts []string
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		out := reflect.MakeSlice(v.Type(), len(parts), len(parts))
		for i, p := range parts {
			if err := setString(out.Index(i), p); err != nil {
				return err
			}
		}
		v.Set(out)
	default:
		return fmt.Errorf("cannot set %s from the environment", v.Kind())
	}
	return nil
}

// readSecrets fills password and token from their *_file keys.
func (c *Config) readSecrets() []error {
	var errs []error
	read := func(key, file string, dst *string) {
		if file == "" {
			return
		}
		b, err := os.ReadFile(file)
		if key == "api.token_file" && errors.Is(err, fs.ErrNotExist) {
			return // the daemon generates it at its first start
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			return
		}
		*dst = strings.TrimSpace(string(b))
	}
	read("esl.password_file", c.ESL.PasswordFile, &c.ESL.Password)
	read("api.token_file", c.API.TokenFile, &c.API.Token)
	return errs
}

// Validate reports every problem at once, each with its key path.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
	}
	hostPort := func(path, s string, empty bool) {
		if s == "" {
			if !empty {
				bad(path, "must be host:port")
			}
			return
		}
		if _, port, err := net.SplitHostPort(s); err != nil {
			bad(path, "must be host:port: %v", err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad(path, "bad port %q", port)
		}
	}
	positive := func(path string, d time.Duration) {
		if d <= 0 {
			bad(path, "must be a positive duration, got %s", d)
		}
	}
	if !c.ESL.Disabled {
		nodes := c.ESL.Nodes()
		if len(nodes) == 0 {
			bad("esl.address", "no Event Socket address (set esl.address or esl.addresses, or esl.disabled: true)")
		}
		for i, a := range nodes {
			hostPort(fmt.Sprintf("esl.addresses[%d]", i), a, false)
		}
		if c.ESL.Password == "" {
			bad("esl.password", "must not be empty")
		}
	}
	positive("esl.dial_timeout", c.ESL.DialTimeout)
	positive("esl.command_timeout", c.ESL.CommandTimeout)
	positive("esl.resync_interval", c.ESL.ResyncInterval)
	positive("esl.backoff_min", c.ESL.BackoffMin)
	if c.ESL.BackoffMax < c.ESL.BackoffMin {
		bad("esl.backoff_max", "must be >= esl.backoff_min")
	}
	if c.ESL.DownPolicy != "hold" && c.ESL.DownPolicy != "enforce" {
		bad("esl.down_policy", "must be hold or enforce, got %q", c.ESL.DownPolicy)
	}
	if c.ESL.MaxFrameBytes < 4096 {
		bad("esl.max_frame_bytes", "must be at least 4096, got %d", c.ESL.MaxFrameBytes)
	}
	for i, f := range c.Logs.Files {
		if f == "" {
			bad(fmt.Sprintf("logs.files[%d]", i), "empty path")
		}
	}
	if c.Logs.MaxLineBytes < 256 {
		bad("logs.max_line_bytes", "must be at least 256, got %d", c.Logs.MaxLineBytes)
	}
	positive("logs.poll_interval", c.Logs.PollInterval)
	if c.Logs.Timezone != "" && c.Logs.Timezone != "Local" {
		if _, err := time.LoadLocation(c.Logs.Timezone); err != nil {
			bad("logs.timezone", "%v", err)
		}
	}
	hostPort("sip.hep_listen", c.SIP.HEPListen, true)
	for i, p := range c.SIP.CapturePorts {
		if p <= 0 || p > 65535 {
			bad(fmt.Sprintf("sip.capture_ports[%d]", i), "bad port %d", p)
		}
	}
	for i, p := range c.SIP.TollPatterns {
		if _, err := regexp.Compile(p); err != nil {
			bad(fmt.Sprintf("sip.toll_patterns[%d]", i), "bad pattern: %v", err)
		}
	}
	if c.SIP.FloodRequests <= 0 {
		bad("sip.flood_requests", "must be > 0")
	}
	positive("sip.flood_window", c.SIP.FloodWindow)
	if c.SIP.ScanUsers <= 0 {
		bad("sip.scan_users", "must be > 0")
	}
	positive("sip.scan_window", c.SIP.ScanWindow)
	for i, a := range c.SIP.HEPAllow {
		if _, err := ParsePrefix(a); err != nil {
			bad(fmt.Sprintf("sip.hep_allow[%d]", i), "%v", err)
		}
	}
	for i, id := range c.SIP.HEPCaptureIDs {
		if id < 0 || id > math.MaxUint32 {
			bad(fmt.Sprintf("sip.hep_capture_ids[%d]", i), "must be within 0..%d, got %d", uint32(math.MaxUint32), id)
		}
	}
	for i, a := range c.SIP.Servers {
		if _, err := ParsePrefix(a); err != nil {
			bad(fmt.Sprintf("sip.servers[%d]", i), "%v", err)
		}
	}
	if c.SIP.HEPListen != "" && len(c.SIP.HEPAllow) == 0 && !loopbackListen(c.SIP.HEPListen) {
		bad("sip.hep_allow", "must list the capture agents' addresses when sip.hep_listen (%s) is not on loopback: anyone who can reach it could forge SIP from any address", c.SIP.HEPListen)
	}
	for name, r := range c.Rules {
		if !offense.Rule(name).Known() {
			bad("rules."+name, "unknown rule (known: %s)", ruleNames())
		}
		if r.Weight != nil && *r.Weight < 0 {
			bad("rules."+name+".weight", "must be >= 0")
		}
	}
	positive("jail.findtime", c.Jail.Findtime)
	if c.Jail.MaxRetry <= 0 {
		bad("jail.maxretry", "must be > 0")
	}
	positive("jail.bantime", c.Jail.Bantime)
	if c.Jail.Factor < 1 {
		bad("jail.factor", "must be >= 1")
	}
	if c.Jail.MaxBantime < c.Jail.Bantime {
		bad("jail.maxbantime", "must be >= jail.bantime")
	}
	if c.Jail.UnverifiedFactor <= 0 || c.Jail.UnverifiedFactor > 1 {
		bad("jail.unverified_factor", "must be within (0, 1], got %g", c.Jail.UnverifiedFactor)
	}
	if c.Jail.MaxOffenders < 1 {
		bad("jail.max_offenders", "must be >= 1")
	}
	for i, s := range c.Whitelist.Static {
		if _, err := ParsePrefix(s); err != nil {
			bad(fmt.Sprintf("whitelist.static[%d]", i), "%v", err)
		}
	}
	if c.Whitelist.Grace < 0 {
		bad("whitelist.grace", "must be >= 0")
	}
	for i, s := range c.NeverBan {
		if _, err := ParsePrefix(s); err != nil {
			bad(fmt.Sprintf("never_ban[%d]", i), "%v", err)
		}
	}
	switch c.Ban.Backend {
	case BackendIPSet, BackendDryRun:
	default:
		bad("ban.backend", "must be %q or %q, got %q", BackendIPSet, BackendDryRun, c.Ban.Backend)
	}
	switch c.Ban.Fallback {
	case "", BackendDryRun:
	default:
		bad("ban.fallback", "must be empty or %q, got %q", BackendDryRun, c.Ban.Fallback)
	}
	positive("ban.resync_interval", c.Ban.ResyncInterval)
	for i, p := range c.Ban.RulePorts {
		if p <= 0 || p > 65535 {
			bad(fmt.Sprintf("ban.rule_ports[%d]", i), "bad port %d", p)
		}
	}
	if c.Ban.InstallRule && c.Ban.Backend != BackendIPSet {
		bad("ban.install_rule", "needs ban.backend %q", BackendIPSet)
	}
	setName := regexp.MustCompile(`^[A-Za-z0-9_.-]{1,31}$`)
	if !setName.MatchString(c.Ban.SetV4) {
		bad("ban.set_v4", "must be 1-31 characters of [A-Za-z0-9_.-], got %q", c.Ban.SetV4)
	}
	if !setName.MatchString(c.Ban.SetV6) {
		bad("ban.set_v6", "must be 1-31 characters of [A-Za-z0-9_.-], got %q", c.Ban.SetV6)
	}
	if c.Ban.SetV4 == c.Ban.SetV6 {
		bad("ban.set_v6", "must differ from ban.set_v4")
	}
	if c.Ban.MaxElem < 1 {
		bad("ban.maxelem", "must be >= 1")
	}
	if c.Ban.V6Prefix < 16 || c.Ban.V6Prefix > 128 {
		bad("ban.v6_prefix", "must be between 16 and 128, got %d", c.Ban.V6Prefix)
	}
	hostPort("api.listen", c.API.Listen, false)
	hostPort("api.metrics_listen", c.API.MetricsListen, true)
	if c.API.MetricsListen != "" && c.API.MetricsListen == c.API.Listen {
		bad("api.metrics_listen", "must differ from api.listen")
	}
	if c.API.Token != "" && len(c.API.Token) < 16 {
		bad("api.token", "must be at least 16 characters (or leave it empty: a token is generated into api.token_file)")
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "must be text or json, got %q", c.Log.Format)
	}
	c.validateProtect(bad)
	return errors.Join(errs...)
}

func ruleNames() string {
	var s []string
	for _, r := range offense.Rules {
		s = append(s, string(r))
	}
	return strings.Join(s, ", ")
}

// loopbackListen reports whether a host:port listens on loopback only.
func loopbackListen(hp string) bool {
	host, _, err := net.SplitHostPort(hp)
	if err != nil {
		return true // reported by the host:port check
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// ParsePrefix reads a CIDR or a bare address (taken as a single-host
// prefix), unmapping IPv4-mapped IPv6.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	bad := func() (netip.Prefix, error) {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR (like 192.0.2.7, 192.0.2.0/24 or 2001:db8::/32)", s)
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Zone() != "" {
			return bad()
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return bad()
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Prefixes parses a list validated by Validate.
func Prefixes(list []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if p, err := ParsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// RuleWeights returns the configured weight of every rule that sets one and
// the set of rules switched off.
func (c *Config) RuleWeights() (weights map[offense.Rule]float64, disabled map[offense.Rule]bool) {
	weights = map[offense.Rule]float64{}
	disabled = map[offense.Rule]bool{}
	for name, r := range c.Rules {
		if r.Weight != nil {
			weights[offense.Rule(name)] = *r.Weight
		}
		if r.Enabled != nil && !*r.Enabled {
			disabled[offense.Rule(name)] = true
		}
	}
	return weights, disabled
}
