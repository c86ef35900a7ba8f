package api

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzBanRequest: whatever body a client sends to POST /v1/bans, the answer
// is a JSON status from the documented set, never a panic.
func FuzzBanRequest(f *testing.F) {
	for _, s := range []string{
		`{"ip":"198.51.100.7","duration":"90m","reason":"x"}`,
		`{"ip":"2001:db8::1","duration":60}`,
		`{"ip":"127.0.0.1"}`, `{"ip":"203.0.113.10"}`, `{"ip":"fe80::1%eth0"}`,
		`{"ip":`, `[]`, `{"duration":-1,"ip":"1.2.3.4"}`, `{"duration":1e300,"ip":"1.2.3.4"}`,
	} {
		f.Add(s)
	}
	fx := newFixture(f, testToken)
	allowed := map[int]bool{201: true, 400: true, 409: true, 413: true}
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/v1/bans", strings.NewReader(body))
		req.RemoteAddr = "127.0.0.1:1"
		req.Host = "127.0.0.1:9091"
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		fx.srv.Handler().ServeHTTP(rec, req)
		if !allowed[rec.Code] {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.String())
		}
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("answer is not JSON: %q", rec.Body.String())
		}
	})
}
