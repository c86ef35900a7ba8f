package resilience_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
)

// listing is FreeSWITCH's `show registrations as json` with one row, shaped
// like eslwatch/testdata/A_vanilla_api_show_registrations_as_json.raw.txt.
func listing(ip, user string, expires time.Time) string {
	return fmt.Sprintf(`{"row_count":1,"rows":[{"reg_user":%q,"realm":"pbx.example.com","token":"restart-1@%s",`+
		`"url":"sofia/internal/sip:%s@%s:5060;transport=UDP","expires":"%d","network_ip":%q,"network_port":"5060",`+
		`"network_proto":"udp","hostname":"fs1","metadata":""}]}`+"\n", user, ip, user, ip, expires.Unix(), ip)
}

type wlEntry struct {
	IP            string `json:"ip"`
	Registrations []struct {
		User      string    `json:"user"`
		ExpiresAt time.Time `json:"expires_at"`
	} `json:"registrations"`
}

// TestFreeSWITCHRestartKeepsRegistrations: FreeSWITCH goes away (the
// connection drops, reconnects are refused) and the phone re-registers while
// nobody listens, so its event is lost; the registration the daemon learned
// by event lapses. FreeSWITCH comes back with the registration in its
// database and sends no event for it: the resync after the reconnect alone
// whitelists the phone's address again, a ban on it is refused with 409, and
// the office's auth failures from it do not ban it.
func TestFreeSWITCHRestartKeepsRegistrations(t *testing.T) {
	t.Parallel()
	const (
		pw    = "restart-Pw-4471"
		phone = "203.0.113.50" // an office NAT
	)
	srv := esltest.NewServer(t, pw)
	api := freeAddr(t)
	p := startReady(t, procOpts{api: api, config: fmt.Sprintf(`
esl:
  address: %s
  password: %s
  backoff_min: 100ms
  backoff_max: 200ms
  resync_interval: 1h
sip:
  hep_listen: ""
ban:
  backend: dry-run
whitelist:
  grace: 500ms
api:
  listen: %s
`, srv.Addr, pw, api)})
	srv.WaitSubscribed(1, 5*time.Second)
	waitFor(t, 5*time.Second, "/readyz 200 with FreeSWITCH up", func() bool { c, _ := p.get("/readyz"); return c == 200 })

	whitelisted := func() bool { c, _ := p.get("/v1/whitelist/" + phone); return c == http.StatusOK }
	banPhone := func() (int, string) {
		return p.do(http.MethodPost, "/v1/bans", nil, `{"ip":"`+phone+`","duration":"1h","reason":"restart test"}`)
	}

	// Before the restart: registered by an event that expires in 2 s.
	if err := srv.Push(esltest.RegisterEvent(t, phone, "1001", "reg-1@office", 2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "whitelisted by the register event", whitelisted)
	if code, body := banPhone(); code != http.StatusConflict {
		t.Fatalf("ban of a registered address = %d %s, want 409", code, body)
	}

	// FreeSWITCH restarts: the link drops and reconnects are refused. The
	// phone re-registers meanwhile: only FreeSWITCH's database knows.
	srv.SetAuthMode(esltest.AuthRude)
	srv.Drop()
	srv.SetRegistrations(listing(phone, "1001", time.Now().Add(time.Hour)))
	waitFor(t, 5*time.Second, "/readyz 503 while FreeSWITCH is away", func() bool { c, _ := p.get("/readyz"); return c == http.StatusServiceUnavailable })
	waitFor(t, 5*time.Second, "the event-learned registration lapsing", func() bool { return !whitelisted() })
	subscribed := srv.Subscribed()

	// FreeSWITCH is back; it sends no event for what its database holds.
	srv.SetAuthMode(esltest.AuthCheck)
	srv.WaitSubscribed(subscribed+1, 5*time.Second)
	took := waitFor(t, 5*time.Second, "whitelisted again by the resync", whitelisted)
	t.Logf("whitelisted again %v after FreeSWITCH accepted connections", took.Round(time.Millisecond))

	code, body := p.do(http.MethodGet, "/v1/whitelist/"+phone, nil, "")
	var e wlEntry
	if err := json.Unmarshal([]byte(body), &e); err != nil || code != 200 || len(e.Registrations) != 1 ||
		e.Registrations[0].User != "1001" || time.Until(e.Registrations[0].ExpiresAt) < 50*time.Minute {
		t.Errorf("GET /v1/whitelist/%s = %d %s, want user 1001 expiring in ~1h (from the listing)", phone, code, body)
	}
	if code, body := banPhone(); code != http.StatusConflict {
		t.Errorf("ban after the restart = %d %s, want 409", code, body)
	}
	if got := p.metric("sipwarden_esl_reconnects_total"); got < 1 {
		t.Errorf("sipwarden_esl_reconnects_total = %v", got)
	}

	// Phone 1003 in that office has a stale password: its failures are
	// counted, never turned into a ban of the office.
	for i := 0; i < 8; i++ {
		if err := srv.Push(esltest.RegisterFailureEvent(t, phone, "1003", "REGISTER")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "the auth failures counted", func() bool {
		return p.metric("sipwarden_offenses_total", "rule=auth_failure") >= 8
	})
	if _, banned := p.bans()[phone]; banned {
		t.Error("the registered office was banned")
	}
	if got := p.metric("sipwarden_ban_skipped_total", "reason=registered"); got < 1 {
		t.Errorf(`sipwarden_ban_skipped_total{reason="registered"} = %v`, got)
	}
	if strings.Contains(p.stderr.String(), pw) {
		t.Error("the Event Socket password is in the log")
	}
}
