package examples_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/daemon"
	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
)

// TestPrometheusScrapesDashboardAndAlerts starts a sipwarden (dry-run, fed
// by an in-test Event Socket speaking like the fixtures) that sees an
// attacker and a protected office, has a real Prometheus scrape it, and
// evaluates every expression of the Grafana dashboard and the alert rules
// through Prometheus' HTTP API. The core series must return data; every
// expression must be valid.
func TestPrometheusScrapesDashboardAndAlerts(t *testing.T) {
	prom := tool(t, "prometheus", "prometheus")
	promtool := tool(t, "promtool", "prometheus")

	srv := esltest.NewServer(t, "ClueCon")
	exp := time.Now().Add(time.Hour).Unix()
	srv.SetRegistrations(fmt.Sprintf(`{"row_count":1,"rows":[{"reg_user":"1000","realm":"pbx.example","token":"a1@203.0.113.10","url":"sofia/internal/sip:1000@203.0.113.10:5060","expires":"%d","network_ip":"203.0.113.10","network_port":"5060","network_proto":"udp","hostname":"vm","metadata":""}]}`, exp))

	cfg := config.Default()
	cfg.ESL.Address = srv.Addr
	cfg.Ban.Backend = config.BackendDryRun
	cfg.API.Listen = "127.0.0.1:0"
	cfg.SIP.HEPListen = "127.0.0.1:0"
	d, err := daemon.New(cfg, daemon.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	srv.WaitSubscribed(1, 5*time.Second)

	// The fixture's register_failure, from an attacker and from the office.
	frames, err := esltest.EventFrames(esltest.Fixture(t, "B_logauthfail_true_esl_custom_sofia_events.raw.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var failure string
	for _, f := range frames {
		if strings.Contains(f, "sofia%3A%3Aregister_failure\n") {
			_, failure, _ = strings.Cut(f, "\n\n")
			break
		}
	}
	if failure == "" {
		t.Fatal("no register_failure in the fixture")
	}
	for i := range 8 {
		for _, ip := range []string{"198.51.100.23", "203.0.113.10"} {
			body := strings.NewReplacer("network-ip: 127.0.0.1", "network-ip: "+ip, "to-user: 1001", fmt.Sprintf("to-user: 10%02d", i)).Replace(failure)
			if err := srv.Push(esltest.EventPlain(body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	api := "http://" + d.APIAddr().String()
	waitUntil(t, 5*time.Second, "the attacker banned", func() bool {
		b, _ := get(api + "/v1/bans")
		return strings.Contains(b, "198.51.100.23")
	})

	// promtool lints what we expose.
	metrics, err := get(api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	lint := exec.Command(promtool, "check", "metrics")
	lint.Stdin = strings.NewReader(metrics)
	if out, err := lint.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	// A real Prometheus scraping every second, with our alert rules.
	dir := t.TempDir()
	rules, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "alerts.yml"), rules, 0o644)
	promAddr := freeAddr(t)
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: sipwarden
    static_configs:
      - targets: [%q]
`, d.APIAddr().String())), 0o644)
	cmd := exec.Command(prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr)
	logf, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	base := "http://" + promAddr
	waitUntil(t, 30*time.Second, "prometheus ready and 4 scrapes in", func() bool {
		res, err := query(base, `count_over_time(up{job="sipwarden"}[1m])`)
		return err == nil && len(res) == 1 && res[0].Value[1].(string) >= "4"
	})

	var exprs []string
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	raw, err := os.ReadFile("grafana/sipwarden.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^\s+expr: (.+)$`).FindAllStringSubmatch(string(rules), -1) {
		if m[1] != "|" {
			exprs = append(exprs, m[1])
		}
	}
	grafana := strings.NewReplacer(`$__rate_interval`, `1m`, `"$instance"`, `".*"`)
	withData := 0
	for _, e := range exprs {
		q := grafana.Replace(e)
		res, err := query(base, q)
		if err != nil {
			t.Errorf("%s: %v", q, err)
			continue
		}
		if len(res) > 0 {
			withData++
		}
	}
	// Series that must carry data after what the daemon saw.
	for _, q := range []string{
		`sipwarden_esl_connected == 1`,
		`sipwarden_registrations == 1`,
		`sipwarden_whitelist_ips{kind="dynamic"} == 1`,
		`sipwarden_offenses_total{rule="auth_failure",source="esl"} >= 16`,
		`sipwarden_bans_total{rule="auth_failure"} >= 1`,
		`sipwarden_bans_active >= 1`,
		`sipwarden_ban_skipped_total{reason="registered"} >= 1`,
		`sipwarden_ban_latency_seconds_count >= 1`,
		`sipwarden_esl_events_total`,
	} {
		res, err := query(base, q)
		if err != nil || len(res) == 0 {
			t.Errorf("%s: no data (%v)", q, err)
		}
	}
	// Alert rules load and evaluate without error.
	var rr struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	waitUntil(t, 10*time.Second, "rules evaluated", func() bool {
		b, err := get(base + "/api/v1/rules")
		if err != nil || json.Unmarshal([]byte(b), &rr) != nil || len(rr.Data.Groups) == 0 {
			return false
		}
		for _, g := range rr.Data.Groups {
			for _, r := range g.Rules {
				if r.Health != "ok" {
					return false
				}
			}
		}
		return true
	})
	t.Logf("%d expressions evaluated, %d returned data", len(exprs), withData)
}

type sample struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
}

func query(base, q string) ([]sample, error) {
	b, err := get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string   `json:"resultType"`
			Result     []sample `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(b), &r); err != nil {
		return nil, fmt.Errorf("%w: %s", err, b)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("status %s: %s", r.Status, r.Error)
	}
	return r.Data.Result, nil
}

func get(u string) (string, error) {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for: %s", what)
}
