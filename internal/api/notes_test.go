package api

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A note is a detail that does not fail readiness: /readyz stays 200 and
// names it, /v1/status and the page show it; with a failing check both
// come back.
func TestReadyzNotes(t *testing.T) {
	note := "no firewall rule references sipwarden4,sipwarden6: bans drop nothing"
	f := newFixture(t, "tok", func(o *Options) {
		o.Checks = []Check{
			{Name: "ban", Ready: func() (string, bool) { return "", true }, Note: func() string { return note }},
			{Name: "logs", Note: func() string { return "" }}, // no Ready: notes only
		}
	})
	code, out := f.do(t, call{method: "GET", path: "/readyz"})
	notes, _ := out["notes"].([]any)
	if code != http.StatusOK || out["ready"] != true || len(notes) != 1 || notes[0] != "ban: "+note {
		t.Fatalf("/readyz = %d %v", code, out)
	}
	code, out = f.do(t, call{method: "GET", path: "/v1/status"})
	if notes, _ := out["notes"].([]any); code != 200 || len(notes) != 1 {
		t.Fatalf("/v1/status = %d %v", code, out)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "http://127.0.0.1:9091/", nil)
	f.srv.mux.ServeHTTP(rec, req)
	page, _ := io.ReadAll(rec.Body)
	if !strings.Contains(string(page), "bans drop nothing") {
		t.Fatalf("page lacks the note: %d\n%s", rec.Code, page)
	}

	f = newFixture(t, "tok", func(o *Options) {
		o.Checks = append(o.Checks, Check{Name: "ban", Ready: func() (string, bool) { return "", true }, Note: func() string { return note }})
	})
	code, out = f.do(t, call{method: "GET", path: "/readyz"})
	if notes, _ := out["notes"].([]any); code != http.StatusServiceUnavailable || len(notes) != 1 || out["reason"] == nil {
		t.Fatalf("/readyz failing = %d %v", code, out)
	}
}
