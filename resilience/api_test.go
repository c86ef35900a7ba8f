package resilience_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
)

// A distinctive Event Socket password and API token: neither may appear in
// any answer or log line.
const (
	eslSecret = "esl-Pw-5e1f0c2b7d9a-sipwarden"
	apiSecret = "api-Tok-93c4aa0e61f8-sipwarden"
)

// link creates two namespaces joined by a veth pair: the daemon side
// 10.99.0.1/24, the client side 10.99.0.2/24.
func link(t *testing.T) (daemonNS, clientNS string) {
	t.Helper()
	daemonNS, clientNS = newNS(t), newNS(t)
	run(t, "ip", "-n", daemonNS, "link", "add", "vres0", "type", "veth", "peer", "name", "vres1", "netns", clientNS)
	run(t, "ip", "-n", daemonNS, "addr", "add", "10.99.0.1/24", "dev", "vres0")
	run(t, "ip", "-n", daemonNS, "link", "set", "vres0", "up")
	run(t, "ip", "-n", clientNS, "addr", "add", "10.99.0.2/24", "dev", "vres1")
	run(t, "ip", "-n", clientNS, "link", "set", "vres1", "up")
	return daemonNS, clientNS
}

// eslIn starts an in-test Event Socket server listening inside ns.
func eslIn(t *testing.T, ns, password string) *esltest.Server {
	t.Helper()
	var s *esltest.Server
	if err := inNS(ns, func() error { s = esltest.NewServer(t, password); return nil }); err != nil {
		t.Fatal(err)
	}
	return s
}

type answer struct {
	code   int
	header http.Header
	body   string
}

// call makes one request from the client namespace.
func call(t *testing.T, c *http.Client, method, url string, hdr map[string]string, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// noSecrets fails if an answer carries a secret.
func noSecrets(t *testing.T, what string, a answer) {
	t.Helper()
	for _, s := range []string{eslSecret, apiSecret} {
		if strings.Contains(a.body, s) || strings.Contains(fmt.Sprint(a.header), s) {
			t.Errorf("%s leaks a secret (%.12s...)", what, s)
		}
	}
}

// jsonError checks an error answer: its status, and a JSON {"error": ...}.
func jsonError(t *testing.T, what string, a answer, want int) {
	t.Helper()
	var e struct{ Error string }
	if a.code != want || json.Unmarshal([]byte(a.body), &e) != nil || e.Error == "" ||
		!strings.HasPrefix(a.header.Get("Content-Type"), "application/json") {
		t.Errorf("%s = %d %q (%s), want %d with a JSON error", what, a.code, a.body, a.header.Get("Content-Type"), want)
	}
	noSecrets(t, what, a)
}

// TestAPIAcrossTheNetwork: the API listens on a veth address and is called
// from another namespace. With no token configured (the shipped default)
// the daemon generates one (mode 0600) and mutations without it are 401
// whatever headers claim; with a configured token, 401 without or with a
// wrong token, 201 and 204 with it; a foreign Host or Origin and non-JSON
// bodies are refused; registration details need the token off loopback;
// oversized bodies 413, oversized headers 431, bad JSON and bad addresses
// 400. No endpoint and no log line (level debug, with a FreeSWITCH node
// refusing the password) shows the Event Socket password or the token.
func TestAPIAcrossTheNetwork(t *testing.T) {
	t.Parallel()
	dns, cns := link(t)
	fs := eslIn(t, dns, eslSecret)
	wrongPw := eslIn(t, dns, "not-the-daemons-password") // a second node refusing our password
	fs.SetRegistrations(listing("203.0.113.50", "1001", time.Now().Add(time.Hour)))
	secrets := t.TempDir()
	pwFile, tokFile := filepath.Join(secrets, "esl.pw"), filepath.Join(secrets, "api.token")
	os.WriteFile(pwFile, []byte(eslSecret+"\n"), 0o600)
	os.WriteFile(tokFile, []byte(apiSecret+"\n"), 0o600)

	// The default daemon has the password inline and no token (it generates
	// one); the other reads both from files.
	cfg := func(listen string, withToken bool) string {
		pw, token := "password: "+eslSecret, ""
		if withToken {
			pw, token = "password_file: "+pwFile, "token_file: "+tokFile
		}
		return fmt.Sprintf(`
esl:
  address: %s
  addresses: [%s]
  %s
  backoff_min: 100ms
  backoff_max: 200ms
sip:
  hep_listen: ""
ban:
  backend: dry-run
api:
  listen: %s
  %s
log:
  level: debug
`, fs.Addr, wrongPw.Addr, pw, listen, token)
	}
	c := client(cns)

	// Both daemons run side by side against the same FreeSWITCH nodes.
	open := startReady(t, procOpts{ns: dns, api: "10.99.0.1:9091", config: cfg("10.99.0.1:9091", false)})
	tok := startReady(t, procOpts{ns: dns, api: "10.99.0.1:9092", config: cfg("10.99.0.1:9092", true)})
	open.http, tok.http = c, c // every request below crosses the veth link
	fs.WaitSubscribed(2, 5*time.Second)
	for _, p := range []*daemonProc{open, tok} {
		waitFor(t, 5*time.Second, "the registration resynced", func() bool { code, _ := p.get("/v1/whitelist/203.0.113.50"); return code == 200 })
		waitFor(t, 5*time.Second, "the refusing node tried", func() bool {
			return strings.Contains(p.stderr.String(), wrongPw.Addr) && strings.Contains(p.stderr.String(), "invalid")
		})
	}
	// Give the daemons something to show: an offender.
	if err := fs.Push(esltest.RegisterFailureEvent(t, "198.51.100.44", "1009", "REGISTER")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the offender counted", func() bool {
		return open.metric("sipwarden_offenses_total") > 0 && tok.metric("sipwarden_offenses_total") > 0
	})

	t.Run("default: a generated token, mutations refused without it", func(t *testing.T) {
		fi, err := os.Stat(open.tokenFile)
		if err != nil || fi.Mode().Perm() != 0o600 || len(open.token) < 32 {
			t.Fatalf("generated token file: %v %v (token %d chars), want mode 0600", fi, err, len(open.token))
		}
		u := "http://10.99.0.1:9091"
		ban := `{"ip":"198.51.100.5","duration":"1h"}`
		jsonHdr := map[string]string{"Content-Type": "application/json"}
		jsonError(t, "POST /v1/bans", call(t, c, "POST", u+"/v1/bans", jsonHdr, ban), http.StatusUnauthorized)
		jsonError(t, "POST /v1/bans claiming loopback", call(t, c, "POST", u+"/v1/bans",
			map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1", "Forwarded": "for=127.0.0.1", "Content-Type": "application/json"}, ban), http.StatusUnauthorized)
		jsonError(t, "POST /v1/bans with some token", call(t, c, "POST", u+"/v1/bans",
			map[string]string{"Authorization": "Bearer anything", "Content-Type": "application/json"}, ban), http.StatusUnauthorized)
		jsonError(t, "DELETE /v1/bans/198.51.100.5", call(t, c, "DELETE", u+"/v1/bans/198.51.100.5", nil, ""), http.StatusUnauthorized)
		// From the daemon's own loopback too: no exemption any more.
		if code, _ := (&daemonProc{t: t, base: "http://10.99.0.1:9091", http: client(dns)}).do("POST", "/v1/bans", nil, ban); code != http.StatusUnauthorized {
			t.Errorf("POST from the daemon's namespace without the token = %d, want 401", code)
		}
		if len(open.bans()) != 0 {
			t.Errorf("bans after refused mutations: %v", open.bans())
		}
		if code, body := open.do("POST", "/v1/bans", nil, ban); code != http.StatusCreated {
			t.Errorf("POST with the generated token = %d %s", code, body)
		}
		if code, _ := open.do("DELETE", "/v1/bans/198.51.100.5", nil, ""); code != http.StatusNoContent {
			t.Errorf("DELETE with the generated token = %d", code)
		}
	})

	t.Run("browsers: foreign Host, cross-origin, non-JSON", func(t *testing.T) {
		u := "http://10.99.0.1:9091"
		good := map[string]string{"Authorization": "Bearer " + open.token, "Content-Type": "application/json"}
		with := func(k, v string) map[string]string {
			m := map[string]string{k: v}
			for a, b := range good {
				if a != k {
					m[a] = b
				}
			}
			return m
		}
		ban := `{"ip":"198.51.100.15","duration":"1h"}`
		// DNS rebinding: a name the attacker controls now resolves here.
		req, _ := http.NewRequest("GET", u+"/v1/whitelist", nil)
		req.Host = "rebind.attacker.example:9091"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET with a foreign Host = %d, want 403", resp.StatusCode)
		}
		req, _ = http.NewRequest("POST", u+"/v1/bans", strings.NewReader(ban))
		for k, v := range good {
			req.Header.Set(k, v)
		}
		req.Host = "rebind.attacker.example"
		if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST with a foreign Host = %v %v, want 403", resp.StatusCode, err)
		}
		jsonError(t, "cross-origin POST", call(t, c, "POST", u+"/v1/bans", with("Origin", "http://evil.example"), ban), http.StatusForbidden)
		jsonError(t, "text/plain POST", call(t, c, "POST", u+"/v1/bans", with("Content-Type", "text/plain"), ban), http.StatusUnsupportedMediaType)
		jsonError(t, "form POST", call(t, c, "POST", u+"/v1/bans", with("Content-Type", "application/x-www-form-urlencoded"), "ip=198.51.100.15"), http.StatusUnsupportedMediaType)
		if _, ok := open.bans()["198.51.100.15"]; ok {
			t.Error("a browser-shaped request banned")
		}
		// Registration details: the API listens off loopback, so who is
		// registered needs the token.
		plain := call(t, c, "GET", u+"/v1/whitelist/203.0.113.50", nil, "")
		authed := call(t, c, "GET", u+"/v1/whitelist/203.0.113.50", map[string]string{"Authorization": "Bearer " + open.token}, "")
		if plain.code != 200 || strings.Contains(plain.body, `"1001"`) || !strings.Contains(plain.body, "expires_at") {
			t.Errorf("whitelist entry without the token = %d %s, want the user hidden", plain.code, plain.body)
		}
		if authed.code != 200 || !strings.Contains(authed.body, `"1001"`) {
			t.Errorf("whitelist entry with the token = %d %s, want the user", authed.code, authed.body)
		}
	})

	t.Run("token", func(t *testing.T) {
		u := "http://10.99.0.1:9092"
		good := map[string]string{"Authorization": "Bearer " + apiSecret}
		ban := `{"ip":"198.51.100.6","duration":"1h","reason":"api test"}`
		for name, hdr := range map[string]map[string]string{
			"no token":        nil,
			"wrong token":     {"Authorization": "Bearer " + apiSecret[:len(apiSecret)-1] + "x"},
			"token prefix":    {"Authorization": "Bearer " + apiSecret[:8]},
			"token plus junk": {"Authorization": "Bearer " + apiSecret + "x"},
			"basic auth":      {"Authorization": "Basic YWRtaW46" + apiSecret},
			"bare token":      {"Authorization": apiSecret},
		} {
			a := call(t, c, "POST", u+"/v1/bans", hdr, ban)
			jsonError(t, "POST /v1/bans, "+name, a, http.StatusUnauthorized)
			if a.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: 401 without WWW-Authenticate", name)
			}
			jsonError(t, "DELETE, "+name, call(t, c, "DELETE", u+"/v1/bans/198.51.100.6", hdr, ""), http.StatusUnauthorized)
		}
		if a := call(t, c, "POST", u+"/v1/bans?token="+apiSecret, nil, ban); a.code != http.StatusUnauthorized {
			t.Errorf("token in the query string: %d", a.code)
		}

		good = map[string]string{"Authorization": "Bearer " + apiSecret, "Content-Type": "application/json"}
		if a := call(t, c, "POST", u+"/v1/bans", good, ban); a.code != http.StatusCreated {
			t.Fatalf("POST with the token = %d %s", a.code, a.body)
		}
		if _, ok := tok.bans()["198.51.100.6"]; !ok {
			t.Error("the ban is not listed")
		}

		huge := `{"ip":"198.51.100.7","reason":"` + strings.Repeat("A", 70<<10) + `"}`
		jsonError(t, "oversized body", call(t, c, "POST", u+"/v1/bans", good, huge), http.StatusRequestEntityTooLarge)
		if a := call(t, c, "GET", u+"/v1/bans", map[string]string{"X-Pad": strings.Repeat("p", 32<<10)}, ""); a.code != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("oversized header = %d, want 431", a.code)
		}
		for name, body := range map[string]string{
			"truncated JSON":  `{"ip":"198.51.100.8"`,
			"not JSON":        `ip=198.51.100.8`,
			"empty body":      ``,
			"wrong type":      `{"ip":198518}`,
			"unknown field":   `{"ip":"198.51.100.8","admin":true}`,
			"bad IP":          `{"ip":"999.51.100.8"}`,
			"not an IP":       `{"ip":"pbx.example.com"}`,
			"CIDR":            `{"ip":"198.51.100.0/24"}`,
			"zone":            `{"ip":"fe80::1%vres0"}`,
			"empty IP":        `{"ip":""}`,
			"bad duration":    `{"ip":"198.51.100.8","duration":"-5m"}`,
			"reason too long": `{"ip":"198.51.100.8","reason":"` + strings.Repeat("r", 201) + `"}`,
		} {
			jsonError(t, "POST "+name, call(t, c, "POST", u+"/v1/bans", good, body), http.StatusBadRequest)
		}
		jsonError(t, "DELETE bad IP", call(t, c, "DELETE", u+"/v1/bans/not-an-ip", good, ""), http.StatusBadRequest)
		jsonError(t, "GET whitelist bad IP", call(t, c, "GET", u+"/v1/whitelist/999.0.0.1", nil, ""), http.StatusBadRequest)
		// Never-ban: the daemon's own address and loopback; registered: the office.
		for _, ip := range []string{"10.99.0.1", "127.0.0.1", "203.0.113.50"} {
			jsonError(t, "POST ban of "+ip, call(t, c, "POST", u+"/v1/bans", good, `{"ip":"`+ip+`"}`), http.StatusConflict)
		}
		if _, ok := tok.bans()["198.51.100.8"]; ok {
			t.Error("a refused request banned")
		}
		if a := call(t, c, "DELETE", u+"/v1/bans/198.51.100.6", good, ""); a.code != http.StatusNoContent {
			t.Errorf("DELETE with the token = %d %s", a.code, a.body)
		}
		jsonError(t, "DELETE again", call(t, c, "DELETE", u+"/v1/bans/198.51.100.6", good, ""), http.StatusNotFound)
	})

	t.Run("no secret in any answer or log", func(t *testing.T) {
		for _, p := range []*daemonProc{open, tok} {
			for _, path := range []string{"/metrics", "/healthz", "/readyz", "/v1/whitelist", "/v1/whitelist/203.0.113.50",
				"/v1/whitelist/198.51.100.44", "/v1/bans", "/v1/offenders", "/nope", "/v1/bans/x"} {
				a := call(t, c, "GET", p.base+path, nil, "")
				if a.code == 0 || (a.code >= 500 && path != "/readyz") {
					t.Errorf("GET %s = %d", path, a.code)
				}
				noSecrets(t, "GET "+p.base+path, a)
			}
		}
		// /readyz names the refusing node; it must not say why with the password.
		if a := call(t, c, "GET", open.base+"/readyz", nil, ""); a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, "esl") {
			t.Errorf("/readyz = %d %s, want 503 naming esl (one node refuses the password)", a.code, a.body)
		}
		for _, p := range []*daemonProc{open, tok} {
			p.stop()
			logs := p.stderr.String()
			for _, s := range []string{eslSecret, apiSecret} {
				if strings.Contains(logs, s) {
					t.Errorf("%s: the log has a secret (%.12s...):\n%s", p.base, s, logs)
				}
			}
			if !strings.Contains(logs, "level=DEBUG") {
				t.Errorf("%s: no debug lines: the leak check saw less than it could", p.base)
			}
		}
	})
}
