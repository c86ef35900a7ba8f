package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// TestStatusPageInChromium is issue 15 item 11: the page at / is plain
// server-rendered HTML that a real browser (Debian's headless chromium,
// no script in the page, and the CSP forbids any) shows with the facts of
// GET /v1/status.
func TestStatusPageInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs chromium")
		}
		t.Skip("needs chromium")
	}
	f := newFixture(t, testToken, func(o *Options) { o.DryRun = true; o.Nodes = []string{"127.0.0.1:8021"}; o.Listen = "127.0.0.1:0" })
	now := time.Now()
	for i := range 8 { // the office's stale phone: protected, never banned
		f.jail.Offend(offense.Offense{IP: netip.MustParseAddr("203.0.113.10"), Rule: offense.AuthFailure, Source: offense.SourceLog,
			Time: now.Add(time.Duration(i) * time.Second), User: "1003", Verified: true})
	}
	f.jail.Offend(offense.Offense{IP: netip.MustParseAddr("198.51.100.66"), Rule: offense.ScannerUserAgent, Source: offense.SourceHEP, Time: now, Detail: "friendly-scanner", Verified: true})
	if code, out := f.do(t, call{method: "POST", path: "/v1/bans", body: `{"ip":"198.51.100.7","duration":"1h","reason":"<script>alert(1)</script>"}`}); code != 201 {
		t.Fatalf("ban: %d %v", code, out)
	}
	waitFor(t, func() bool { return len(f.jail.Bans()) >= 1 }, "the ban")
	hs := httptest.NewServer(f.srv.Handler())
	defer hs.Close()

	resp, err := http.Get(hs.URL + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	resp, err = http.Get(hs.URL + "/")
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("GET / = %v %v", resp, err)
	}
	resp.Body.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--user-data-dir="+t.TempDir(), "--window-size=390,844", "--dump-dom", hs.URL+"/")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	dom, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if testing.Verbose() {
		t.Logf("DOM:\n%s", dom)
	}
	text := string(dom)
	has := func(id, want string) {
		t.Helper()
		i := strings.Index(text, `id="`+id+`"`)
		if i < 0 {
			t.Errorf("no #%s in the page", id)
			return
		}
		end := strings.Index(text[i:], "</")
		if end < 0 || !strings.Contains(text[i:i+end+len(want)+200], want) {
			t.Errorf("#%s does not show %q", id, want)
		}
	}
	has("registrations", fmt.Sprint(st.Registrations))
	has("bans", fmt.Sprint(st.Bans))
	has("static-entries", fmt.Sprint(st.StaticEntries))
	if st.Ready {
		t.Fatal("the fixture's Event Socket check fails: the status should not be ready")
	}
	has("ready", "Not ready: "+st.Reasons[0])
	if !strings.Contains(text, `id="dry-run"`) || !strings.Contains(text, "would") {
		t.Error("no dry-run banner")
	}
	for _, o := range st.TopOffenders {
		if !strings.Contains(text, "<td>"+o.IP+"</td>") {
			t.Errorf("top offender %s not shown", o.IP)
		}
	}
	if len(st.Protected) != 1 || st.Protected[0].IP != "203.0.113.10" || !strings.Contains(text, "<td>1003</td>") {
		t.Errorf("protected office and its failing user not shown (status: %+v)", st.Protected)
	}
	if !strings.Contains(text, "<td>198.51.100.7</td>") || strings.Contains(text, "<script>alert(1)") || !strings.Contains(text, "&lt;script&gt;") {
		t.Error("the ban is missing or its reason is not escaped")
	}
	if !strings.Contains(text, "<td>would ban</td>") || !strings.Contains(text, "Would-be bans (dry-run)") {
		t.Error("dry-run bans look real on the page")
	}
	if strings.Contains(text, "<script") {
		t.Error("the page carries a script")
	}
	if !strings.Contains(text, `name="viewport"`) {
		t.Error("no viewport: unreadable on a phone")
	}
}
