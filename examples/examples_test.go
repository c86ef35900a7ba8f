// Package examples_test validates the operator kit with the real tools:
// promtool, docker-compose, systemd-analyze, fail2ban, ipset, iptables, nft
// and sipp. The tools are installed in CI (Debian packages prometheus,
// docker-compose, systemd, fail2ban, ipset, iptables, nftables,
// sip-tester); a missing tool fails the test, it never skips it.
package examples_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"go.yaml.in/yaml/v3"

	"github.com/sipwarden/sipwarden/internal/config"

	"github.com/sipwarden/sipwarden/internal/testenv"
)

// knownMetrics are the metric names dashboards and alerts may use: those of
// SPEC.md, plus sipwarden_build_info (daemon) and the ban-set gauges the
// SetNearlyFull alert needs (sipwarden_ban_set_entries and
// sipwarden_ban_set_maxelem, labelled by set), and the protect gauges.
var knownMetrics = map[string]bool{
	"sipwarden_esl_connected":            true,
	"sipwarden_esl_reconnects_total":     true,
	"sipwarden_esl_events_total":         true,
	"sipwarden_esl_credential_bans_held": true,
	"sipwarden_registrations":            true,
	"sipwarden_whitelist_ips":            true,
	"sipwarden_offenses_total":           true,
	"sipwarden_bans_total":               true,
	"sipwarden_bans_active":              true,
	"sipwarden_ban_skipped_total":        true,
	"sipwarden_log_lines_total":          true,
	"sipwarden_log_files_unreadable":     true,
	"sipwarden_sip_messages_total":       true,
	"sipwarden_parse_errors_total":       true,
	"sipwarden_ban_latency_seconds":      true, // histogram: _bucket, _sum, _count
	"sipwarden_build_info":               true,
	"sipwarden_state_file_writable":      true,
	"sipwarden_ban_set_entries":          true,
	"sipwarden_ban_set_maxelem":          true,
	"sipwarden_ban_set_full":             true, // SipwardenBanSetFull
	"sipwarden_ban_set_unreferenced":     true, // bans that drop nothing
	// the graduated response (internal/protect) the protected-office alerts use
	"sipwarden_protect_failing_users":        true,
	"sipwarden_protect_quarantined_mappings": true,
	"sipwarden_protect_throttled_addresses":  true,
	"sipwarden_protect_targeted_users":       true, // SipwardenDistributedGuessing
}

// tool returns the path of a required binary or fails the test.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	return testenv.Tool(t, name, pkg)
}

// run runs a command in dir and returns its combined output; a non-zero exit
// fails the test with the output.
func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// --- config ---------------------------------------------------------------

// TestSipwardenYAMLIsDefaults loads the annotated reference with the real
// config loader (unknown keys rejected, validation on) and checks that every
// value it shows is the built-in default.
func TestSipwardenYAMLIsDefaults(t *testing.T) {
	got, err := config.Load("sipwarden.yaml", nil)
	if err != nil {
		t.Fatalf("config.Load(examples/sipwarden.yaml): %v", err)
	}
	want := config.Default()
	// rules: the file spells out every rule; the defaults leave them to the jail.
	got.Rules, want.Rules = nil, nil
	// The one deliberate difference, said so in the file: persistence on, in
	// the directory the systemd unit and the container provide.
	if got.Jail.StateFile != "/var/lib/sipwarden/state.json" {
		t.Errorf("jail.state_file = %q, want /var/lib/sipwarden/state.json", got.Jail.StateFile)
	}
	got.Jail.StateFile = want.Jail.StateFile
	normalize(&got)
	normalize(&want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("examples/sipwarden.yaml differs from config.Default():\n got %+v\nwant %+v", got, want)
	}
}

// TestSipwardenYAMLRules checks that the reference names every rule.
func TestSipwardenYAMLRules(t *testing.T) {
	cfg, err := config.Load("sipwarden.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"auth_failure", "unknown_user", "acl_reject", "scanner_user_agent", "toll_fraud_invite",
		"extension_scan", "flood", "malformed_sip", "sip_injection", "no_route", "auth_challenge"} {
		rule, ok := cfg.Rules[r]
		if !ok || rule.Enabled == nil || rule.Weight == nil {
			t.Errorf("rules.%s: want enabled and weight spelled out", r)
		}
	}
}

// TestLabConfigLoads loads the compose lab's configuration.
func TestLabConfigLoads(t *testing.T) {
	cfg, err := config.Load("lab/compose/sipwarden.yaml", nil)
	if err != nil {
		t.Fatalf("config.Load(examples/lab/compose/sipwarden.yaml): %v", err)
	}
	if cfg.ESL.Password != "lab-esl-password" {
		t.Errorf("esl.password = %q, want the lab event_socket.conf.xml password", cfg.ESL.Password)
	}
	es := string(readFile(t, "lab/compose/freeswitch/event_socket.conf.xml"))
	if !strings.Contains(es, `value="`+cfg.ESL.Password+`"`) {
		t.Errorf("lab event_socket.conf.xml does not use password %q", cfg.ESL.Password)
	}
}

// normalize makes empty and nil lists equal.
func normalize(c *config.Config) {
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				if v.Field(i).CanSet() {
					walk(v.Field(i))
				}
			}
		case reflect.Slice:
			if v.Len() == 0 && v.CanSet() {
				v.Set(reflect.Zero(v.Type()))
			}
		}
	}
	walk(reflect.ValueOf(c).Elem())
}

// --- Prometheus -------------------------------------------------------------

func TestPromtool(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	run(t, "prometheus", promtool, "check", "rules", "alerts.yml")
	run(t, "prometheus", promtool, "check", "config", "prometheus.yml")
	run(t, "prometheus", promtool, "test", "rules", "alerts_test.yml")

	// The lab's config names the rules at their path inside the container.
	lab := string(readFile(t, "lab/compose/prometheus.yml"))
	if !strings.Contains(lab, "/etc/prometheus/alerts.yml") {
		t.Fatal("lab prometheus.yml does not load /etc/prometheus/alerts.yml")
	}
	abs, err := filepath.Abs("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(tmp, []byte(strings.ReplaceAll(lab, "/etc/prometheus/alerts.yml", abs)), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, ".", promtool, "check", "config", tmp)
}

// TestMetricNames checks that alerts and dashboard use only known metrics,
// and that every dashboard expression is valid PromQL (promtool checks it
// as a recording rule, with Grafana's variables substituted).
func TestMetricNames(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	var exprs []string

	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(readFile(t, "prometheus/alerts.yml"), &rules); err != nil {
		t.Fatal(err)
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			checkMetricNames(t, "alert "+r.Alert, r.Expr)
		}
	}
	for _, a := range []string{"SipwardenEslDown", "SipwardenNoRegistrations", "SipwardenBanRateSpike",
		"SipwardenBanSetNearlyFull", "SipwardenProtectedOfficeUnderFailures"} {
		if !alerts[a] {
			t.Errorf("alerts.yml: missing alert %s", a)
		}
	}

	for _, e := range dashboardExprs(t) {
		checkMetricNames(t, "dashboard", e)
		e = strings.ReplaceAll(e, "$__rate_interval", "5m")
		e = strings.ReplaceAll(e, "$instance", ".*")
		exprs = append(exprs, e)
	}
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rs []rule
	for i, e := range exprs {
		rs = append(rs, rule{Record: "dashboard:expr" + strconv.Itoa(i), Expr: e})
	}
	out, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rs}}})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "dashboard_rules.yml")
	if err := os.WriteFile(f, out, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, ".", promtool, "check", "rules", f)
}

var metricName = regexp.MustCompile(`\bsipwarden_[a-z0-9_]+`)

func checkMetricNames(t *testing.T, where, expr string) {
	t.Helper()
	for _, m := range metricName.FindAllString(expr, -1) {
		base := m
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(m, suf) && knownMetrics[strings.TrimSuffix(m, suf)] {
				base = strings.TrimSuffix(m, suf)
			}
		}
		if !knownMetrics[base] {
			t.Errorf("%s: unknown metric %s in %q (not in SPEC.md nor in knownMetrics)", where, m, expr)
		}
	}
}

// --- Grafana ----------------------------------------------------------------

type dashboard struct {
	UID    string `json:"uid"`
	Title  string `json:"title"`
	Panels []struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		GridPos struct {
			X, Y, W, H int
		} `json:"gridPos"`
		Targets []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
	} `json:"panels"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(readFile(t, "grafana/sipwarden.json")))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("grafana/sipwarden.json: %v", err)
	}
	return d
}

func dashboardExprs(t *testing.T) []string {
	var out []string
	for _, p := range loadDashboard(t).Panels {
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	return out
}

func TestGrafanaDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard without uid or title")
	}
	ids := map[int]bool{}
	used := map[string]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: bad gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" {
				t.Errorf("panel %q: empty expr or refId", p.Title)
			}
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				used[strings.TrimSuffix(m, "_bucket")] = true
			}
		}
	}
	// The panels the issue asks for.
	for _, m := range []string{"sipwarden_registrations", "sipwarden_whitelist_ips", "sipwarden_offenses_total",
		"sipwarden_bans_total", "sipwarden_ban_skipped_total", "sipwarden_bans_active", "sipwarden_ban_latency_seconds",
		"sipwarden_esl_connected", "sipwarden_log_lines_total", "sipwarden_sip_messages_total", "sipwarden_parse_errors_total"} {
		if !used[m] {
			t.Errorf("dashboard has no panel on %s", m)
		}
	}

	// Provisioning: the provider's path is where compose mounts the JSON.
	var prov struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal(readFile(t, "grafana/provisioning/dashboards/sipwarden.yml"), &prov); err != nil {
		t.Fatal(err)
	}
	if len(prov.Providers) != 1 {
		t.Fatalf("want one dashboard provider, got %d", len(prov.Providers))
	}
	compose := string(readFile(t, "../docker-compose.yml"))
	if !strings.Contains(compose, "sipwarden.json:"+prov.Providers[0].Options.Path+"/sipwarden.json") {
		t.Errorf("docker-compose.yml does not mount the dashboard into the provider path %s", prov.Providers[0].Options.Path)
	}
	var ds struct {
		Datasources []struct {
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(readFile(t, "grafana/provisioning/datasources/prometheus.yml"), &ds); err != nil {
		t.Fatal(err)
	}
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" {
		t.Errorf("datasource provisioning: want one prometheus datasource, got %+v", ds.Datasources)
	}
}

// --- docker-compose and Dockerfile -----------------------------------------

func TestDockerCompose(t *testing.T) {
	dc := tool(t, "docker-compose", "docker-compose")
	run(t, "..", dc, "-f", "docker-compose.yml", "config", "-q")

	var c struct {
		Services map[string]struct {
			NetworkMode string   `yaml:"network_mode"`
			CapAdd      []string `yaml:"cap_add"`
			Volumes     []string `yaml:"volumes"`
			Image       string   `yaml:"image"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(readFile(t, "../docker-compose.yml"), &c); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"freeswitch", "sipwarden", "prometheus", "grafana", "office", "stale-phone", "attacker"} {
		if _, ok := c.Services[s]; !ok {
			t.Errorf("docker-compose.yml: no service %q", s)
		}
	}
	sw := c.Services["sipwarden"]
	if sw.NetworkMode != "service:freeswitch" {
		t.Errorf("sipwarden network_mode = %q, want service:freeswitch", sw.NetworkMode)
	}
	if !slices.Contains(sw.CapAdd, "NET_ADMIN") || !slices.Contains(sw.CapAdd, "NET_RAW") {
		t.Errorf("sipwarden cap_add = %v, want NET_ADMIN and NET_RAW", sw.CapAdd)
	}
	if c.Services["stale-phone"].NetworkMode != "service:office" {
		t.Error("stale-phone must share the office's address (network_mode: service:office)")
	}
	// Every bind-mounted file exists.
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src := strings.SplitN(v, ":", 2)[0]
			if !strings.HasPrefix(src, "./") {
				continue // named volume
			}
			if _, err := os.Stat(filepath.Join("..", src)); err != nil {
				t.Errorf("service %s mounts %s: %v", name, src, err)
			}
		}
	}
}

func TestDockerfile(t *testing.T) {
	df := string(readFile(t, "../Dockerfile"))
	for _, want := range []string{"FROM golang:${GO_VERSION} AS build", "ARG GO_VERSION=1.26", "CGO_ENABLED=0",
		"gcr.io/distroless/static", "USER 65532:65532", "setcap cap_net_admin,cap_net_raw=ep", "./cmd/sipwarden"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile: missing %q", want)
		}
	}
	di := string(readFile(t, "../.dockerignore"))
	for _, must := range []string{"go.mod", "go.sum", "cmd", "examples/sipwarden.yaml"} {
		if strings.Contains(di, "\n"+must+"\n") {
			t.Errorf(".dockerignore excludes %s, which the build needs", must)
		}
	}
}

// --- systemd ----------------------------------------------------------------

func TestSystemdUnit(t *testing.T) {
	unit := string(readFile(t, "systemd/sipwarden.service"))
	keys := map[string][]string{}
	section := ""
	for _, l := range strings.Split(unit, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			section = l
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || section == "" {
				t.Fatalf("systemd unit: bad line %q", l)
			}
			keys[section+k] = append(keys[section+k], v)
		}
	}
	for k, want := range map[string]string{
		"[Service]User":                    "sipwarden",
		"[Service]AmbientCapabilities":     "CAP_NET_ADMIN CAP_NET_RAW",
		"[Service]CapabilityBoundingSet":   "CAP_NET_ADMIN CAP_NET_RAW",
		"[Service]NoNewPrivileges":         "yes",
		"[Service]ProtectSystem":           "strict",
		"[Service]ProtectHome":             "yes",
		"[Service]PrivateTmp":              "yes",
		"[Service]StateDirectory":          "sipwarden",
		"[Service]ReadOnlyPaths":           "-/var/log/freeswitch",
		"[Service]RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK AF_PACKET",
		"[Service]ExecReload":              "/bin/kill -HUP $MAINPID",
		"[Service]ExecStart":               "/usr/local/bin/sipwarden run -config /etc/sipwarden/sipwarden.yaml",
		"[Install]WantedBy":                "multi-user.target",
	} {
		if got := keys[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}

	// systemd-analyze verify checks that ExecStart is executable: point it
	// at a binary that exists here.
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		dir := t.TempDir()
		f := filepath.Join(dir, "sipwarden.service")
		if err := os.WriteFile(f, []byte(strings.ReplaceAll(unit, "/usr/local/bin/sipwarden", "/bin/true")), 0o644); err != nil {
			t.Fatal(err)
		}
		out := run(t, dir, sa, "verify", f)
		if strings.TrimSpace(out) != "" {
			t.Errorf("systemd-analyze verify printed warnings:\n%s", out)
		}
	} else {
		t.Log("systemd-analyze not installed: checked the unit's syntax and keys only")
	}
}

// --- fail2ban ---------------------------------------------------------------

var f2bLines = regexp.MustCompile(`Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed`)

func TestFail2banFilter(t *testing.T) {
	f2b := tool(t, "fail2ban-regex", "fail2ban")
	filter, err := filepath.Abs("fail2ban/filter.d/freeswitch-sipwarden.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, log string
		matched   int
		byIP      map[string]int
	}{
		// The fixture session: 4 "SIP auth failure" and 1 "Can't find user";
		// the 10 "SIP auth challenge" lines must not match.
		{"fixture full session", "testdata/freeswitch-1.11-full-session.log", 5, map[string]int{"127.0.0.1": 5}},
		// The lab night: phone 1003 (12), the brute forcer (30 failures + 15
		// unknown users), the ACL prober (30).
		{"lab night", "lab/freeswitch.log", 87, map[string]int{"203.0.113.10": 12, "198.51.100.23": 45, "198.51.100.44": 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := run(t, ".", f2b, tc.log, filter)
			m := f2bLines.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("fail2ban-regex: no summary line in\n%s", out)
			}
			if got, _ := strconv.Atoi(m[3]); got != tc.matched {
				t.Errorf("fail2ban-regex matched %d lines, want %d\n%s", got, tc.matched, out)
			}
			ips := run(t, ".", f2b, "-o", "<ip>", tc.log, filter)
			got := map[string]int{}
			for _, l := range strings.Fields(ips) {
				got[l]++
			}
			if !reflect.DeepEqual(got, tc.byIP) {
				t.Errorf("matches by address = %v, want %v", got, tc.byIP)
			}
		})
	}

	// The jail loads in a full fail2ban configuration.
	client := tool(t, "fail2ban-client", "fail2ban")
	conf := filepath.Join(t.TempDir(), "fail2ban")
	run(t, ".", "cp", "-r", "/etc/fail2ban", conf)
	// Debian's default sshd jail wants a log this machine may not have.
	_ = os.Remove(filepath.Join(conf, "jail.d", "defaults-debian.conf"))
	logf := filepath.Join(t.TempDir(), "freeswitch.log")
	if err := os.WriteFile(logf, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	jail := strings.Replace(string(readFile(t, "fail2ban/jail.local")), "/var/log/freeswitch/freeswitch.log", logf, 1)
	if !strings.Contains(jail, "ignorecommand = /usr/local/bin/sipwarden check <ip>") {
		t.Error("jail.local: no `ignorecommand = /usr/local/bin/sipwarden check <ip>`")
	}
	if err := os.WriteFile(filepath.Join(conf, "jail.d", "freeswitch-sipwarden.local"), []byte(jail), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, ".", "cp", filter, filepath.Join(conf, "filter.d"))
	out := run(t, ".", client, "-c", conf, "-t")
	if !strings.Contains(out, "OK") {
		t.Errorf("fail2ban-client -t: %s", out)
	}
	dump := run(t, ".", client, "-c", conf, "-d")
	if !strings.Contains(dump, "['set', 'freeswitch-sipwarden', 'ignorecommand', '/usr/local/bin/sipwarden check <ip>']") {
		t.Errorf("fail2ban-client -d: the jail has no ignorecommand:\n%s", dump)
	}
}

// --- firewall -----------------------------------------------------------------

// TestFirewallRules loads ipset.conf, iptables.rules, ip6tables.rules and
// sipwarden.nft in a throwaway network namespace (needs root, as CI has).
func TestFirewallRules(t *testing.T) {
	ip := tool(t, "ip", "iproute2")
	tool(t, "ipset", "ipset")
	tool(t, "iptables-restore", "iptables")
	tool(t, "nft", "nftables")
	testenv.Root(t)
	ns := fmt.Sprintf("swtest-examples-%d", os.Getpid())
	run(t, ".", ip, "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command(ip, "netns", "del", ns).Run() })
	sh := func(script string) string {
		t.Helper()
		return run(t, "firewall", ip, "netns", "exec", ns, "sh", "-ec", script)
	}
	// Twice: ipset.conf must be idempotent with -exist.
	sh("ipset restore -exist < ipset.conf; ipset restore -exist < ipset.conf")
	sh("iptables -P INPUT DROP; iptables-restore --noflush < iptables.rules; ip6tables-restore --noflush < ip6tables.rules")
	if p := sh("iptables -S INPUT | head -1"); !strings.Contains(p, "-P INPUT DROP") {
		t.Errorf("iptables.rules changed the INPUT policy: %s", p)
	}
	for _, c := range []string{
		"iptables -C INPUT -p udp -m multiport --dports 5060,5080 -m set --match-set sipwarden4 src -j DROP",
		"iptables -C INPUT -p tcp -m multiport --dports 5060,5061,5080,5081 -m set --match-set sipwarden4 src -j DROP",
		"ip6tables -C INPUT -p udp -m multiport --dports 5060,5080 -m set --match-set sipwarden6 src -j DROP",
		"ip6tables -C INPUT -p tcp -m multiport --dports 5060,5061,5080,5081 -m set --match-set sipwarden6 src -j DROP",
	} {
		sh(c)
	}
	sets := sh("ipset list -t sipwarden4; ipset list -t sipwarden6")
	for _, want := range []string{"Type: hash:ip", "family inet ", "Type: hash:net", "family inet6", "maxelem 65536", "timeout 0"} {
		if !strings.Contains(sets, want) {
			t.Errorf("ipset list: missing %q in\n%s", want, sets)
		}
	}
	// A ban with a timeout, as sipwarden writes them.
	sh("ipset add sipwarden4 198.51.100.23 timeout 3600; ipset add sipwarden6 2001:db8:bad::/64 timeout 3600")

	// nft: valid, loads twice, and leaves the iptables-nft tables alone.
	sh("nft -c -f sipwarden.nft; nft -f sipwarden.nft; nft -f sipwarden.nft")
	tables := sh("nft list tables")
	for _, want := range []string{"table inet pbx"} {
		if !strings.Contains(tables, want) {
			t.Errorf("nft list tables: missing %q in\n%s", want, tables)
		}
	}
	sh("iptables -C INPUT -p udp -m multiport --dports 5060,5080 -m set --match-set sipwarden4 src -j DROP")
}

// --- lab data ---------------------------------------------------------------

// TestLabGeneratorDeterministic regenerates the lab files and compares them
// byte for byte with the committed ones.
func TestLabGeneratorDeterministic(t *testing.T) {
	goBin := tool(t, "go", "golang")
	out := t.TempDir()
	run(t, "..", goBin, "run", "./examples/lab/gen", "-out", out)
	for _, f := range []string{"freeswitch.log", "night.pcap", "registrations.json"} {
		got := readFile(t, filepath.Join(out, f))
		want := readFile(t, filepath.Join("lab", f))
		if !bytes.Equal(got, want) {
			t.Errorf("lab/%s differs from what `go run ./examples/lab/gen -out examples/lab` writes: regenerate and commit", f)
		}
	}
	var total int64
	for _, f := range []string{"freeswitch.log", "night.pcap", "registrations.json"} {
		st, err := os.Stat(filepath.Join("lab", f))
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
	}
	if total > 2<<20 {
		t.Errorf("lab files are %d bytes, want < 2 MiB", total)
	}
}

var documentation = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("2001:db8::/32"),
}

func isDocumentation(a netip.Addr) bool {
	for _, p := range documentation {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

// TestLabPcap decodes every packet of the night and checks the scenarios.
func TestLabPcap(t *testing.T) {
	f, err := os.Open("lab/night.pcap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Fatalf("link type %v, want Ethernet", r.LinkType())
	}
	type key struct{ src, what string }
	count := map[key]int{}
	scanUsers := map[string]bool{}
	var floodFirst, floodLast time.Time
	var prev time.Time
	for n := 0; ; n++ {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ci.Timestamp.Before(prev) {
			t.Fatalf("packet %d: time goes backwards", n)
		}
		prev = ci.Timestamp
		pkt := gopacket.NewPacket(data, layers.LinkTypeEthernet, gopacket.Default)
		if el := pkt.ErrorLayer(); el != nil {
			t.Fatalf("packet %d: %v", n, el.Error())
		}
		nl, udpl := pkt.NetworkLayer(), pkt.Layer(layers.LayerTypeUDP)
		if nl == nil || udpl == nil {
			t.Fatalf("packet %d: not IP/UDP", n)
		}
		src, _ := netip.AddrFromSlice(nl.NetworkFlow().Src().Raw())
		dst, _ := netip.AddrFromSlice(nl.NetworkFlow().Dst().Raw())
		if !isDocumentation(src) || !isDocumentation(dst) {
			t.Fatalf("packet %d: %s -> %s is not a documentation address", n, src, dst)
		}
		payload := udpl.(*layers.UDP).Payload
		head, _, _ := bytes.Cut(payload, []byte("\r\n\r\n"))
		if bytes.Contains(bytes.ReplaceAll(head, []byte("\r\n"), nil), []byte("\n")) {
			t.Fatalf("packet %d: SIP header lines must end in CRLF", n)
		}
		m, err := sipmsg.ParseMessage(payload)
		if err != nil {
			t.Fatalf("packet %d (%s -> %s): sipgo cannot parse it: %v\n%s", n, src, dst, err, payload)
		}
		s := src.String()
		switch m := m.(type) {
		case *sipmsg.Request:
			what := string(m.Method)
			if ua := m.GetHeader("User-Agent"); ua != nil && ua.Value() == "friendly-scanner" {
				what += " friendly-scanner"
				scanUsers[m.To().Address.User] = true
			}
			if m.Method == sipmsg.INVITE && m.GetHeader("Authorization") == nil && m.GetHeader("Proxy-Authorization") == nil {
				what += " unauthenticated"
			}
			if m.Method == sipmsg.OPTIONS && s == "198.51.100.88" {
				if floodFirst.IsZero() {
					floodFirst = ci.Timestamp
				}
				floodLast = ci.Timestamp
			}
			count[key{s, what}]++
		case *sipmsg.Response:
			what := strconv.Itoa(m.StatusCode) + " " + string(m.CSeq().MethodName)
			if m.StatusCode == 200 && m.CSeq().MethodName == sipmsg.REGISTER {
				if c := m.Contact(); c == nil || !strings.Contains(c.Value(), "expires=3600") {
					t.Errorf("packet %d: 200 OK to REGISTER without Contact expires=3600", n)
				}
			}
			count[key{s + " -> " + dst.String(), what}]++
		}
	}
	for k, want := range map[key]int{
		{"192.0.2.2 -> 203.0.113.10", "200 REGISTER"}:   48, // phones 1000-1002, every 30 min for 8 h
		{"192.0.2.2 -> 203.0.113.10", "403 REGISTER"}:   12, // phone 1003
		{"192.0.2.2 -> 203.0.113.10", "401 REGISTER"}:   60,
		{"192.0.2.2 -> 2001:db8::20", "401 REGISTER"}:   0,
		{"2001:db8::2 -> 2001:db8::20", "200 REGISTER"}: 16, // the roaming phone
		{"198.51.100.66", "OPTIONS friendly-scanner"}:   2,  // svmap, both profiles
		{"198.51.100.66", "REGISTER friendly-scanner"}:  50, // svwar
		{"198.51.100.77", "INVITE unauthenticated"}:     8,  // toll fraud
		{"198.51.100.88", "OPTIONS"}:                    200,
	} {
		if got := count[k]; got != want {
			t.Errorf("%s %s: %d messages, want %d", k.src, k.what, got, want)
		}
	}
	if len(scanUsers) != 51 { // 50 extensions + svmap's "100"
		t.Errorf("scanner targeted %d distinct users, want 51", len(scanUsers))
	}
	if d := floodLast.Sub(floodFirst); d > 2*time.Second {
		t.Errorf("flood spans %v, want 200 requests within 2 s", d)
	}
}

// FreeSWITCH >= 1.10.7 log line: [uuid ]date time.usec NN.NN% [LEVEL] file.c:line text
var fsLine = regexp.MustCompile(`^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12} )?` +
	`(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}) \d{1,3}\.\d{2}% \[(DEBUG|INFO|NOTICE|WARNING|ERR|CRIT|ALERT|CONSOLE)\] [a-z_]+\.c:\d+ \S`)

var ipv4Re = regexp.MustCompile(`\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b`)

func TestLabLog(t *testing.T) {
	lines := strings.Split(strings.TrimSuffix(string(readFile(t, "lab/freeswitch.log")), "\n"), "\n")
	var prev string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		m := fsLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("line %d is not a FreeSWITCH 1.11 log line: %q", i+1, l)
		}
		if m[1] < prev {
			t.Fatalf("line %d: time goes backwards", i+1)
		}
		prev = m[1]
		if strings.Contains(l, "Can't find user [") {
			// Always followed by the two unprefixed continuation lines.
			if i+2 >= len(lines) || !strings.HasPrefix(lines[i+1], "You must define a domain called '") ||
				lines[i+2] != "and you must configure your device to use the proper domain in its authentication credentials." {
				t.Fatalf("line %d: Can't find user without its two continuation lines", i+1)
			}
			i += 2
		}
		for _, s := range ipv4Re.FindAllString(l, -1) {
			if a, err := netip.ParseAddr(s); err == nil && !isDocumentation(a) {
				t.Fatalf("line %d: %s is not a documentation address", i+1, s)
			}
		}
	}
}

// TestLabRegistrationsJSON checks the snapshot has the shape of FreeSWITCH's
// `show registrations as json` (the fixture): same keys in the same order,
// string values, no trailing newline.
func TestLabRegistrationsJSON(t *testing.T) {
	got := readFile(t, "lab/registrations.json")
	want := readFile(t, "testdata/show_registrations_as_json.fixture.json")
	if bytes.HasSuffix(got, []byte("\n")) {
		t.Error("registrations.json ends with a newline; FreeSWITCH's does not when it has rows")
	}
	if g, w := jsonShape(t, got), jsonShape(t, want); g != w {
		t.Errorf("shape differs from FreeSWITCH's:\n got %s\nwant %s", g, w)
	}
	var v struct {
		RowCount int                 `json:"row_count"`
		Rows     []map[string]string `json:"rows"`
	}
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatal(err)
	}
	users := map[string]string{}
	for _, r := range v.Rows {
		users[r["reg_user"]] = r["network_ip"]
	}
	wantUsers := map[string]string{"1000": "203.0.113.10", "1001": "203.0.113.10", "1002": "203.0.113.10", "1005": "2001:db8::20"}
	if v.RowCount != len(v.Rows) || !reflect.DeepEqual(users, wantUsers) {
		t.Errorf("registrations = %v (row_count %d), want %v", users, v.RowCount, wantUsers)
	}
}

// jsonShape renders the top-level keys and the keys of the first row, in
// order, each with the Go type of its value.
func jsonShape(t *testing.T, b []byte) string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	next := func() json.Token {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("registrations JSON: %v", err)
		}
		return tok
	}
	var shape []string
	if next() != json.Delim('{') {
		t.Fatal("registrations JSON: not an object")
	}
	for dec.More() {
		k := next()
		shape = append(shape, fmt.Sprint(k))
		if k != "rows" {
			shape = append(shape, fmt.Sprintf("%T", next()))
			continue
		}
		if next() != json.Delim('[') || next() != json.Delim('{') {
			t.Fatal("registrations JSON: rows is not a list of objects")
		}
		for dec.More() {
			key, val := next(), next()
			shape = append(shape, fmt.Sprintf("%v:%T", key, val))
		}
		return strings.Join(shape, ",")
	}
	return strings.Join(shape, ",")
}

// --- sipp scenarios ----------------------------------------------------------

// TestSippScenarios runs the lab's phone scenarios against a sipp registrar
// double on 127.0.0.1: the office registers (200), the stale phone is
// refused (403).
func TestSippScenarios(t *testing.T) {
	sipp := tool(t, "sipp", "sip-tester")
	dir := "lab/compose/sipp"
	for _, tc := range []struct {
		scenario, inf, uas string
		calls              int
	}{
		{"register.xml", "office.csv", "uas_register_200_test.xml", 3},
		{"register_stale.xml", "stale.csv", "uas_register_403_test.xml", 1},
	} {
		t.Run(tc.scenario, func(t *testing.T) {
			uasPort, uacPort := freeUDPPort(t), freeUDPPort(t)
			uas := exec.Command(sipp, "-sf", tc.uas, "-i", "127.0.0.1", "-p", strconv.Itoa(uasPort),
				"-m", strconv.Itoa(tc.calls), "-nostdin", "-timeout", "20s")
			uas.Dir = dir
			var uasOut bytes.Buffer
			uas.Stdout, uas.Stderr = &uasOut, &uasOut
			if err := uas.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = uas.Process.Kill(); _ = uas.Wait() }()
			time.Sleep(300 * time.Millisecond) // sipp has no readiness signal
			uac := exec.Command(sipp, "127.0.0.1:"+strconv.Itoa(uasPort), "-i", "127.0.0.1", "-p", strconv.Itoa(uacPort),
				"-sf", tc.scenario, "-inf", tc.inf, "-m", strconv.Itoa(tc.calls), "-nostdin", "-timeout", "15s")
			uac.Dir = dir
			if out, err := uac.CombinedOutput(); err != nil {
				t.Fatalf("sipp %s: %v\n%s\nregistrar double:\n%s", tc.scenario, err, out, uasOut.String())
			}
		})
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
