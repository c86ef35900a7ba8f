package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/ban"
	"github.com/sipwarden/sipwarden/internal/jail"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// testToken is the token every fixture requires.
const testToken = "test-token-5d1e8a7c"

type fixture struct {
	token string
	srv   *Server
	wl    *whitelist.Whitelist
	jail  *jail.Jail
	fw    *ban.DryRun
}

// newFixture builds a server whose mutations need token ("" means none is
// configured: every change is refused).
func newFixture(t testing.TB, token string, opts ...func(*Options)) *fixture {
	t.Helper()
	reg := prometheus.NewRegistry()
	wl := whitelist.New(whitelist.Options{
		Static:     []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
		Registerer: reg,
	})
	wl.Upsert(whitelist.Registration{
		IP: netip.MustParseAddr("203.0.113.10"), User: "1000", Realm: "pbx.example", Profile: "internal",
		Contact: "sip:1000@203.0.113.10:5060", CallID: "c1", UserAgent: "Yealink", Node: "fs1",
		ExpiresAt: time.Now().Add(time.Hour),
	})
	fw := ban.NewDryRun(ban.DryRunOptions{})
	jl, err := jail.New(jail.Options{
		Allowlist: wl, Firewall: fw, Registerer: reg,
		HostAddrs: func() ([]netip.Addr, error) { return nil, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- jl.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	o := Options{
		Token: token, Whitelist: wl, Jail: jl, Gatherer: reg,
		Checks: []Check{{Name: "esl", Ready: func() (string, bool) { return "not connected to 127.0.0.1:8021", false }}},
	}
	for _, f := range opts {
		f(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{token: token, srv: srv, wl: wl, jail: jl, fw: fw}
}

// call is one request. token "" sends the fixture's token, "-" none;
// host "" is 127.0.0.1:9091; ctype "" is application/json when there is a
// body, "-" none.
type call struct {
	method, path, body, token, remote string
	host, origin, ctype               string
	hdr                               map[string]string
}

func (f *fixture) do(t *testing.T, c call) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
	if c.remote != "" {
		req.RemoteAddr = c.remote
	} else {
		req.RemoteAddr = "127.0.0.1:40000"
	}
	switch c.token {
	case "-":
	case "":
		if f.token != "" {
			req.Header.Set("Authorization", "Bearer "+f.token)
		}
	default:
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Host = "127.0.0.1:9091"
	if c.host != "" {
		req.Host = c.host
	}
	if c.origin != "" {
		req.Header.Set("Origin", c.origin)
	}
	switch {
	case c.ctype == "-":
	case c.ctype != "":
		req.Header.Set("Content-Type", c.ctype)
	case c.body != "":
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range c.hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(rec, req)
	var out map[string]any
	if rec.Body.Len() > 0 && strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: body is not JSON: %v: %q", c.method, c.path, err, rec.Body.String())
		}
	}
	return rec.Code, out
}

func TestReadEndpoints(t *testing.T) {
	f := newFixture(t, testToken)
	for _, tc := range []struct {
		name, path string
		want       int
		check      func(t *testing.T, out map[string]any)
	}{
		{"healthz", "/healthz", 200, nil},
		{"readyz names the reason", "/readyz", 503, func(t *testing.T, out map[string]any) {
			if !strings.Contains(out["reason"].(string), "esl: not connected") {
				t.Errorf("reason = %v", out["reason"])
			}
		}},
		{"whitelist all", "/v1/whitelist", 200, func(t *testing.T, out map[string]any) {
			entries := out["entries"].([]any)
			if len(entries) != 2 {
				t.Fatalf("entries = %v", entries)
			}
			var e map[string]any
			for _, x := range entries {
				m := x.(map[string]any)
				if m["static"] == true {
					if m["prefix"] != "192.0.2.0/24" {
						t.Errorf("static entry = %v", m)
					}
					continue
				}
				e = m
			}
			regs := e["registrations"].([]any)
			r := regs[0].(map[string]any)
			if e["ip"] != "203.0.113.10" || e["static"] != false || r["user"] != "1000" || r["realm"] != "pbx.example" ||
				r["profile"] != "internal" || r["contact"] == nil || r["user_agent"] != "Yealink" || r["expires_at"] == nil {
				t.Errorf("entry = %v", e)
			}
		}},
		{"whitelisted by registration", "/v1/whitelist/203.0.113.10", 200, func(t *testing.T, out map[string]any) {
			if out["whitelisted"] != true || out["reason"] != "registered" {
				t.Errorf("out = %v", out)
			}
		}},
		{"whitelisted statically", "/v1/whitelist/192.0.2.55", 200, func(t *testing.T, out map[string]any) {
			if out["static"] != true || out["reason"] != "static" {
				t.Errorf("out = %v", out)
			}
		}},
		{"not whitelisted", "/v1/whitelist/198.51.100.1", 404, func(t *testing.T, out map[string]any) {
			if out["whitelisted"] != false || out["ip"] != "198.51.100.1" {
				t.Errorf("out = %v", out)
			}
		}},
		{"bad ip", "/v1/whitelist/300.1.1.1", 400, func(t *testing.T, out map[string]any) {
			if out["error"] == nil {
				t.Errorf("no error field: %v", out)
			}
		}},
		{"bans empty", "/v1/bans", 200, func(t *testing.T, out map[string]any) {
			if b, ok := out["bans"].([]any); !ok || len(b) != 0 {
				t.Errorf("bans = %v", out["bans"])
			}
		}},
		{"offenders empty", "/v1/offenders", 200, func(t *testing.T, out map[string]any) {
			if o, ok := out["offenders"].([]any); !ok || len(o) != 0 {
				t.Errorf("offenders = %v", out["offenders"])
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := f.do(t, call{method: "GET", path: tc.path})
			if code != tc.want {
				t.Fatalf("status %d, want %d (%v)", code, tc.want, out)
			}
			if tc.check != nil {
				tc.check(t, out)
			}
		})
	}
}

func TestBanLifecycle(t *testing.T) {
	f := newFixture(t, testToken)
	code, out := f.do(t, call{method: "POST", path: "/v1/bans", body: `{"ip":"198.51.100.7","duration":"90m","reason":"seen scanning"}`})
	if code != 201 || out["ip"] != "198.51.100.7" || out["reason"] != "seen scanning" {
		t.Fatalf("POST = %d %v", code, out)
	}
	code, out = f.do(t, call{method: "GET", path: "/v1/bans"})
	bans := out["bans"].([]any)
	if code != 200 || len(bans) != 1 {
		t.Fatalf("GET bans = %d %v", code, out)
	}
	b := bans[0].(map[string]any)
	for _, k := range []string{"ip", "rule", "reason", "created_at", "expires_at", "count"} {
		if _, ok := b[k]; !ok {
			t.Errorf("ban has no %q: %v", k, b)
		}
	}
	exp, _ := time.Parse(time.RFC3339Nano, b["expires_at"].(string))
	if d := time.Until(exp); d < 89*time.Minute || d > 91*time.Minute {
		t.Errorf("expires in %v, want ~90m", d)
	}
	waitFor(t, func() bool { return f.fw.Contains(netip.MustParsePrefix("198.51.100.7/32")) }, "ban reaches the backend")
	if code, _ := f.do(t, call{method: "DELETE", path: "/v1/bans/198.51.100.7"}); code != 204 {
		t.Fatalf("DELETE = %d", code)
	}
	waitFor(t, func() bool { return !f.fw.Contains(netip.MustParsePrefix("198.51.100.7/32")) }, "unban reaches the backend")
	if code, _ := f.do(t, call{method: "DELETE", path: "/v1/bans/198.51.100.7"}); code != 404 {
		t.Errorf("second DELETE = %d, want 404", code)
	}
	// Seconds as a number are accepted too.
	if code, out := f.do(t, call{method: "POST", path: "/v1/bans", body: `{"ip":"2001:db8::7","duration":60}`}); code != 201 {
		t.Errorf("POST v6 seconds = %d %v", code, out)
	}
}

func TestBanRefusalsAndBadInput(t *testing.T) {
	f := newFixture(t, testToken)
	big := `{"ip":"198.51.100.7","reason":"` + strings.Repeat("x", MaxBody) + `"}`
	for _, tc := range []struct {
		name string
		c    call
		want int
	}{
		{"registered office", call{method: "POST", path: "/v1/bans", body: `{"ip":"203.0.113.10"}`}, 409},
		{"static allowlist", call{method: "POST", path: "/v1/bans", body: `{"ip":"192.0.2.1"}`}, 409},
		{"loopback never-ban", call{method: "POST", path: "/v1/bans", body: `{"ip":"127.0.0.1"}`}, 409},
		{"link-local never-ban", call{method: "POST", path: "/v1/bans", body: `{"ip":"fe80::1"}`}, 409},
		{"bad ip", call{method: "POST", path: "/v1/bans", body: `{"ip":"999.1.1.1"}`}, 400},
		{"no ip", call{method: "POST", path: "/v1/bans", body: `{}`}, 400},
		{"bad json", call{method: "POST", path: "/v1/bans", body: `{"ip":`}, 400},
		{"unknown field", call{method: "POST", path: "/v1/bans", body: `{"ip":"198.51.100.7","forever":true}`}, 400},
		{"bad duration", call{method: "POST", path: "/v1/bans", body: `{"ip":"198.51.100.7","duration":"soon"}`}, 400},
		{"negative duration", call{method: "POST", path: "/v1/bans", body: `{"ip":"198.51.100.7","duration":-5}`}, 400},
		{"oversized body", call{method: "POST", path: "/v1/bans", body: big}, 413},
		{"delete bad ip", call{method: "DELETE", path: "/v1/bans/nope"}, 400},
		{"delete not banned", call{method: "DELETE", path: "/v1/bans/198.51.100.9"}, 404},
		{"wrong method", call{method: "PUT", path: "/v1/bans"}, 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := f.do(t, tc.c)
			if code != tc.want {
				t.Fatalf("status %d, want %d (%v)", code, tc.want, out)
			}
			if code >= 400 && code != 405 && out["error"] == nil {
				t.Errorf("no JSON error: %v", out)
			}
		})
	}
	if len(f.jail.Bans()) != 0 {
		t.Errorf("refused requests banned something: %v", f.jail.Bans())
	}
}

func TestMutationAuth(t *testing.T) {
	body := `{"ip":"198.51.100.7"}`
	t.Run("no token configured: every change refused, loopback too", func(t *testing.T) {
		f := newFixture(t, "", func(o *Options) { o.NoTokenWhy = "cannot create /nonexistent/api.token" })
		code, out := f.do(t, call{method: "POST", path: "/v1/bans", body: body, token: "-", remote: "[::1]:5555"})
		if code != 403 || !strings.Contains(fmt.Sprint(out["error"]), "/nonexistent/api.token") {
			t.Errorf("loopback POST = %d %v, want 403 saying why", code, out)
		}
		if code, _ := f.do(t, call{method: "DELETE", path: "/v1/bans/198.51.100.7", token: "anything"}); code != 403 {
			t.Errorf("DELETE = %d, want 403", code)
		}
		if code, _ := f.do(t, call{method: "GET", path: "/v1/bans", remote: "198.51.100.50:5555"}); code != 200 {
			t.Errorf("GET = %d, want 200", code)
		}
	})
	t.Run("token required, loopback too", func(t *testing.T) {
		f := newFixture(t, testToken)
		if code, _ := f.do(t, call{method: "POST", path: "/v1/bans", body: body, token: "-"}); code != 401 {
			t.Errorf("loopback without token = %d, want 401", code)
		}
		if code, _ := f.do(t, call{method: "POST", path: "/v1/bans", body: body, token: "wrong"}); code != 401 {
			t.Errorf("wrong token = %d, want 401", code)
		}
		if code, _ := f.do(t, call{method: "POST", path: "/v1/bans", body: body, remote: "198.51.100.50:5555"}); code != 201 {
			t.Errorf("remote with token = %d, want 201", code)
		}
	})
}

// TestBrowserAttacks is issue 12 item 8: a page in the operator's browser
// cannot reach the API through DNS rebinding (a foreign Host), cross-origin
// requests (Origin, Sec-Fetch-Site) or a form post (a body not declared
// JSON), even with the token (a browser would not have it, but the checks
// must not depend on that).
func TestBrowserAttacks(t *testing.T) {
	f := newFixture(t, testToken)
	ban := `{"ip":"198.51.100.8"}`
	for _, tc := range []struct {
		name string
		c    call
		want int
	}{
		{"rebound name, GET", call{method: "GET", path: "/v1/whitelist", host: "evil.example:9091"}, 403},
		{"rebound name, POST", call{method: "POST", path: "/v1/bans", body: ban, host: "evil.example"}, 403},
		{"rebound name, check", call{method: "GET", path: "/v1/check/203.0.113.10", host: "attacker.test:9091"}, 403},
		{"empty Host", call{method: "GET", path: "/v1/bans", host: " "}, 403},
		{"cross origin POST", call{method: "POST", path: "/v1/bans", body: ban, origin: "http://evil.example"}, 403},
		{"cross origin, other port", call{method: "POST", path: "/v1/bans", body: ban, origin: "http://127.0.0.1:8080"}, 403},
		{"null origin", call{method: "DELETE", path: "/v1/bans/198.51.100.8", origin: "null"}, 403},
		{"cross-site fetch", call{method: "GET", path: "/v1/whitelist", hdr: map[string]string{"Sec-Fetch-Site": "cross-site"}}, 403},
		{"text/plain body", call{method: "POST", path: "/v1/bans", body: ban, ctype: "text/plain"}, 415},
		{"form body", call{method: "POST", path: "/v1/bans", body: "ip=198.51.100.8", ctype: "application/x-www-form-urlencoded"}, 415},
		{"no content type", call{method: "POST", path: "/v1/bans", body: ban, ctype: "-"}, 415},
		{"json-ish type", call{method: "POST", path: "/v1/bans", body: ban, ctype: "application/jsonx"}, 415},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := f.do(t, tc.c)
			if code != tc.want || out["error"] == nil {
				t.Errorf("status %d %v, want %d with a JSON error", code, out, tc.want)
			}
		})
	}
	if len(f.jail.Bans()) != 0 {
		t.Fatalf("a refused request banned: %v", f.jail.Bans())
	}
	for _, tc := range []struct {
		name string
		c    call
	}{
		{"IPv6 literal Host", call{method: "GET", path: "/v1/bans", host: "[::1]:9091"}},
		{"localhost", call{method: "GET", path: "/v1/bans", host: "localhost:9091"}},
		{"same origin", call{method: "POST", path: "/v1/bans", body: ban, origin: "http://127.0.0.1:9091"}},
		{"JSON with charset", call{method: "POST", path: "/v1/bans", body: `{"ip":"198.51.100.9"}`, ctype: "application/json; charset=utf-8"}},
		{"metrics by any name", call{method: "GET", path: "/metrics", host: "sipwarden:9091"}},
		{"readyz by any name", call{method: "GET", path: "/healthz", host: "sipwarden:9091"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, out := f.do(t, tc.c); code >= 400 {
				t.Errorf("status %d %v", code, out)
			}
		})
	}
}

// TestRegistrationDetails: off loopback, who is registered from where
// needs the token; the count and expiry stay visible (check uses them).
func TestRegistrationDetails(t *testing.T) {
	for _, tc := range []struct {
		name, listen, token string
		details             bool
	}{
		{"loopback listener", "127.0.0.1:0", "-", true},
		{"public listener, no token", "0.0.0.0:0", "-", false},
		{"public listener, wrong token", "0.0.0.0:0", "wrong", false},
		{"public listener, token", "0.0.0.0:0", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, testToken, func(o *Options) { o.Listen = tc.listen })
			defer f.srv.ln.Close()
			for _, path := range []string{"/v1/whitelist", "/v1/whitelist/203.0.113.10"} {
				req := call{method: "GET", path: path, token: tc.token}
				code, out := f.do(t, req)
				raw, _ := json.Marshal(out)
				if code != 200 || !strings.Contains(string(raw), "expires_at") {
					t.Fatalf("%s = %d %s", path, code, raw)
				}
				for _, secret := range []string{"Yealink", "sip:1000@", `"c1"`, "pbx.example"} {
					if got := strings.Contains(string(raw), secret); got != tc.details {
						t.Errorf("%s: shows %s = %v, want %v: %s", path, secret, got, tc.details, raw)
					}
				}
			}
			code, out := f.do(t, call{method: "GET", path: "/v1/check/203.0.113.10", token: tc.token})
			if code != 200 || out["registrations"] != float64(1) || out["ban_allowed"] != false || out["reason"] != "registered" {
				t.Errorf("check = %d %v", code, out)
			}
		})
	}
}

func TestCheckEndpoint(t *testing.T) {
	f := newFixture(t, testToken)
	for ip, want := range map[string]string{
		"127.0.0.1": "never_ban", "fe80::1": "never_ban", "192.0.2.9": "static", "203.0.113.10": "registered", "198.51.100.1": "",
	} {
		code, out := f.do(t, call{method: "GET", path: "/v1/check/" + ip})
		reason, _ := out["reason"].(string)
		if code != 200 || reason != want || out["ban_allowed"] != (want == "") {
			t.Errorf("%s: %d %v, want reason %q", ip, code, out, want)
		}
	}
	if code, _ := f.do(t, call{method: "GET", path: "/v1/check/nope"}); code != 400 {
		t.Errorf("bad ip = %d", code)
	}
}

// TestMetricsListener: api.metrics_listen serves /metrics and the probes,
// nothing of /v1.
func TestMetricsListener(t *testing.T) {
	f := newFixture(t, testToken, func(o *Options) { o.Listen = "127.0.0.1:0"; o.MetricsListen = "127.0.0.1:0" })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	base := "http://" + f.srv.MetricsAddr().String()
	for path, want := range map[string]int{"/metrics": 200, "/healthz": 200, "/readyz": 503, "/v1/bans": 404, "/v1/whitelist": 404} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("metrics listener %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	resp, err := http.Get("http://" + f.srv.Addr().String() + "/v1/bans")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("main listener: %v %v", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
}

func TestMetricsServed(t *testing.T) {
	f := newFixture(t, testToken)
	f.jail.Offend(offense.Offense{IP: netip.MustParseAddr("198.51.100.3"), Rule: offense.AuthFailure, Source: offense.SourceLog, Time: time.Now()})
	req := httptest.NewRequest("GET", "/metrics", nil)
	rec := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 || !bytes.Contains(rec.Body.Bytes(), []byte(`sipwarden_offenses_total{rule="auth_failure",source="log"} 1`)) {
		t.Errorf("/metrics = %d:\n%s", rec.Code, rec.Body.String())
	}
}

func TestClientAgainstRealServer(t *testing.T) {
	f := newFixture(t, testToken)
	hs := httptest.NewServer(f.srv.Handler())
	defer hs.Close()
	ctx := context.Background()
	c := &Client{Base: hs.URL, Token: testToken}
	if ok, _, err := c.Check(ctx, "203.0.113.10"); !ok || err != nil {
		t.Errorf("Check office = %v, %v", ok, err)
	}
	if ok, _, err := c.Check(ctx, "198.51.100.1"); ok || err != nil {
		t.Errorf("Check stranger = %v, %v", ok, err)
	}
	if _, err := c.AddBan(ctx, "203.0.113.10", time.Minute, "x"); err == nil || !isRefused(err) {
		t.Errorf("AddBan office: %v, want refused", err)
	}
	if _, err := c.AddBan(ctx, "198.51.100.2", time.Minute, "x"); err != nil {
		t.Errorf("AddBan: %v", err)
	}
	if bans, err := c.Bans(ctx); err != nil || len(bans) != 1 {
		t.Errorf("Bans = %v, %v", bans, err)
	}
	if err := c.DelBan(ctx, "198.51.100.2"); err != nil {
		t.Errorf("DelBan: %v", err)
	}
	if err := c.DelBan(ctx, "198.51.100.2"); !isRefused(err) {
		t.Errorf("DelBan again: %v, want refused", err)
	}
	bad := &Client{Base: hs.URL, Token: "nope"}
	if _, err := bad.AddBan(ctx, "198.51.100.2", 0, ""); err == nil || isRefused(err) {
		t.Errorf("bad token: %v, want a non-refusal error", err)
	}
}

func isRefused(err error) bool {
	var se *StatusError
	return err != nil && errors.As(err, &se) && se.Unwrap() == ErrRefused
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for: %s", what)
}

func TestOffendersPaged(t *testing.T) {
	f := newFixture(t, "")
	for i := range 25 {
		f.jail.Offend(offense.Offense{IP: netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}), Rule: offense.AuthFailure, Source: offense.SourceLog, Time: time.Now()})
	}
	var got []string
	after := ""
	for range 10 {
		path := "/v1/offenders?limit=10"
		if after != "" {
			path += "&after=" + after
		}
		code, out := f.do(t, call{method: "GET", path: path})
		if code != 200 {
			t.Fatalf("GET %s = %d %v", path, code, out)
		}
		for _, o := range out["offenders"].([]any) {
			got = append(got, o.(map[string]any)["ip"].(string))
		}
		next, ok := out["next"].(string)
		if !ok {
			break
		}
		after = next
	}
	if len(got) != 25 || got[0] != "198.51.100.10" || got[24] != "198.51.100.34" {
		t.Fatalf("paged through %d: %v", len(got), got)
	}
	for _, bad := range []string{"limit=0", "limit=10001", "limit=x", "after=nope"} {
		if code, _ := f.do(t, call{method: "GET", path: "/v1/offenders?" + bad}); code != 400 {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
}
