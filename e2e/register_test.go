package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/fslab"
)

// regRows are injection rows user;credentials;expires for roaming phones
// first..first+n-1 (user FirstUser+i registers from Roam(i)).
func regRows(first, n, expires int) [][]string {
	var rows [][]string
	for i := first; i < first+n; i++ {
		ext := fslab.FirstUser + i
		rows = append(rows, []string{strconv.Itoa(ext), fslab.Credentials(strconv.Itoa(ext), fslab.Password(ext)), strconv.Itoa(expires)})
	}
	return rows
}

// register starts roaming phone i's sipp: one REGISTER with Expires
// expires from Roam(i).
func register(l *fslab.Lab, i, expires int) *fslab.Sipp {
	return l.Sipp(fslab.SippRun{NS: l.RoamNS, Scenario: "register.xml", Rows: regRows(i, 1, expires), Local: fslab.Roam(i)})
}

// okTimes maps each user to the time its phone received the 200 OK to its
// REGISTER (from sipp's message log; the user is in To).
func okTimes(t *testing.T, s *fslab.Sipp) map[string]time.Time {
	t.Helper()
	msgs, err := s.Messages()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]time.Time{}
	for _, msg := range msgs {
		if !msg.Received || !strings.HasPrefix(msg.FirstLine(), "SIP/2.0 200") {
			continue
		}
		if !strings.HasSuffix(msg.Header("CSeq"), "REGISTER") {
			continue
		}
		_, rest, ok := strings.Cut(msg.Header("To"), "<sip:")
		if !ok {
			continue
		}
		user, _, _ := strings.Cut(rest, "@")
		m[user] = msg.At
	}
	return m
}

type wlEntry struct {
	IP            string `json:"ip"`
	Whitelisted   bool   `json:"whitelisted"`
	Reason        string `json:"reason"`
	Registrations []struct {
		User      string    `json:"user"`
		Contact   string    `json:"contact"`
		UserAgent string    `json:"user_agent"`
		ExpiresAt time.Time `json:"expires_at"`
	} `json:"registrations"`
}

func whitelistEntry(t *testing.T, l *fslab.Lab, ip netip.Addr) (int, wlEntry) {
	t.Helper()
	code, body := l.Get("/v1/whitelist/" + ip.String())
	var e wlEntry
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatalf("GET /v1/whitelist/%s: %v: %s", ip, err, body)
		}
	}
	return code, e
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// TestRealFreeSWITCHRegisterWhitelists: 200 (-short: 20) roaming phones, each from its
// own address, register with the real FreeSWITCH (digest, 401 then 200).
// From the 200 OK at the phone to `sipwarden check` exiting 0 takes at
// most 1 s at p99; the whitelist entry names the user. An unregister
// (Expires: 0) removes the address after the grace; a short registration
// left to expire is removed too.
func TestRealFreeSWITCHRegisterWhitelists(t *testing.T) {
	phones := 200
	if testing.Short() {
		phones = 20 // the -race pass of CI
	}
	expiryI := phones // the phone whose registration is left to expire
	const regExp = 10 // its Expires
	l := fslab.New(t, fslab.Options{Users: phones + 1, Roaming: phones + 1, Sipwarden: "whitelist:\n  grace: 1s\n"})

	for _, i := range []int{0, phones - 1, expiryI} {
		if code := l.Check(fslab.Roam(i)); code != 1 {
			t.Fatalf("sipwarden check %s before any registration = %d, want 1", fslab.Roam(i), code)
		}
	}

	// One phone at a time, each its own sipp from its own address: poll
	// `sipwarden check` from before the REGISTER until it exits 0.
	var lat []time.Duration
	for i := 0; i < phones; i++ {
		ip := fslab.Roam(i)
		s := register(l, i, 3600)
		l.WaitFor(30*time.Second, "sipwarden check "+ip.String()+" exit 0", func() bool {
			if s.Exited() && s.Err() != nil {
				t.Fatalf("sipp: %v\n%s", s.Err(), s.Output())
			}
			return l.Check(ip) == 0
		})
		at := time.Now()
		s.Run(l, 30*time.Second)
		user := strconv.Itoa(fslab.FirstUser + i)
		ok, found := okTimes(t, s)[user]
		if !found {
			t.Fatalf("no 200 OK for %s in sipp's message log", user)
		}
		lat = append(lat, at.Sub(ok))
	}
	p50, p99, worst := percentile(lat, 0.50), percentile(lat, 0.99), percentile(lat, 1)
	t.Logf("200 OK -> sipwarden check exit 0 over %d registrations: p50 %v, p99 %v, max %v",
		phones, p50.Round(time.Millisecond), p99.Round(time.Millisecond), worst.Round(time.Millisecond))
	fmt.Printf("BENCH register_whitelist_p50_ms=%d p99_ms=%d max_ms=%d n=%d\n", p50.Milliseconds(), p99.Milliseconds(), worst.Milliseconds(), phones)
	if p99 > time.Second {
		t.Errorf("p99 200 OK -> whitelisted = %v, want <= 1s", p99)
	}

	// The API says who registered from where.
	for _, i := range []int{0, phones / 2, phones - 1} {
		code, e := whitelistEntry(t, l, fslab.Roam(i))
		if code != http.StatusOK || !e.Whitelisted || e.Reason != "registered" || len(e.Registrations) != 1 ||
			e.Registrations[0].User != strconv.Itoa(fslab.FirstUser+i) || e.Registrations[0].UserAgent != "lab-phone/1.0" {
			t.Errorf("GET /v1/whitelist/%s = %d %+v, want registered by user %d", fslab.Roam(i), code, e, fslab.FirstUser+i)
		}
	}
	if got := l.Metric("sipwarden_registrations"); got < float64(phones) {
		t.Errorf("sipwarden_registrations = %v, want >= %d", got, phones)
	}

	// Unregister (Expires: 0) ten of them: they leave after the grace.
	const unreg = 10
	for i := 0; i < unreg; i++ {
		register(l, i, 0).Run(l, 30*time.Second)
	}
	for i := 0; i < unreg; i++ {
		ip := fslab.Roam(i)
		l.WaitFor(10*time.Second, "sipwarden check "+ip.String()+" exit 1 after the unregister", func() bool { return l.Check(ip) == 1 })
	}
	if code := l.Check(fslab.Roam(unreg)); code != 0 {
		t.Errorf("sipwarden check %s (still registered) = %d, want 0", fslab.Roam(unreg), code)
	}

	// A short registration left to expire leaves after Expires + grace.
	ip := fslab.Roam(expiryI)
	short := register(l, expiryI, regExp)
	short.Run(l, 30*time.Second)
	shortOK := okTimes(t, short)[strconv.Itoa(fslab.FirstUser+expiryI)]
	l.WaitFor(5*time.Second, "the short registration whitelisted", func() bool { return l.Check(ip) == 0 })
	l.WaitFor(90*time.Second, "the "+strconv.Itoa(regExp)+" s registration expiring", func() bool { return l.Check(ip) == 1 })
	gone := time.Since(shortOK)
	t.Logf("%s left the whitelist %v after its 200 OK (Expires: %d, grace 1s)", ip, gone.Round(100*time.Millisecond), regExp)
	if gone < regExp*time.Second {
		t.Errorf("the %d s registration left the whitelist after %v, before it expired", regExp, gone)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
