package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/fslab"
)

type readiness struct {
	Ready   bool     `json:"ready"`
	Reason  string   `json:"reason"`
	Reasons []string `json:"reasons"`
}

func readyz(t *testing.T, l *fslab.Lab) (int, readiness) {
	t.Helper()
	code, body, err := l.GetTry("/readyz")
	if err != nil {
		return 0, readiness{}
	}
	var r readiness
	if code != http.StatusOK {
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("/readyz %d: %v: %s", code, err, body)
		}
	}
	return code, r
}

// TestRealFreeSWITCHEventSocketFaults, against the real mod_event_socket:
//   - a wrong password: /readyz stays 503 naming the Event Socket and the
//     refused authentication, the log says so, and the password is in
//     neither;
//   - the Event Socket unloaded, then loaded again 4 s later by
//     FreeSWITCH's scheduler (what `reload mod_event_socket` does, with a
//     gap to see): sipwarden goes unready, keeps the office whitelisted,
//     reconnects, resyncs and learns new registrations again; then
//     `reload mod_event_socket` itself;
//   - FreeSWITCH killed with SIGKILL and started again: the same.
func TestRealFreeSWITCHEventSocketFaults(t *testing.T) {
	l := fslab.New(t, fslab.Options{Office: true, NoSipwarden: true, Sipwarden: "whitelist:\n  grace: 1s\n"})
	office := fslab.OfficeAddr.String()
	phone := func(ext, port int) {
		t.Helper()
		l.Sipp(fslab.SippRun{NS: l.OfficeNS, Scenario: "register.xml", Rows: officeRows(ext, "1234", 1),
			Local: fslab.OfficeLANAddr, Port: port}).Run(l, 30*time.Second)
	}
	registrations := func() int {
		code, body := l.Get("/v1/whitelist/" + office)
		if code != http.StatusOK {
			return 0
		}
		return strings.Count(body, `"user"`)
	}

	// A wrong password.
	wrong := "not-the-" + l.ESLPassword
	l.SipwardenESLPassword = wrong
	l.StartSipwarden()
	var r readiness
	l.WaitFor(10*time.Second, "/readyz 503 naming the refused Event Socket authentication", func() bool {
		var code int
		code, r = readyz(t, l)
		return code == http.StatusServiceUnavailable && strings.Contains(strings.ToLower(r.Reason), "esl") &&
			strings.Contains(strings.ToLower(r.Reason), "auth")
	})
	t.Logf("wrong password: /readyz 503 %q", r.Reason)
	l.WaitFor(10*time.Second, "the refused authentication in sipwarden's log", func() bool {
		return strings.Contains(strings.ToLower(l.Sipwarden().Output()), "auth")
	})
	if l.Sipwarden().Exited() {
		t.Fatalf("sipwarden exited on a wrong Event Socket password: %v\n%s", l.Sipwarden().Err(), l.Sipwarden().Output())
	}
	for _, leak := range []string{wrong, l.ESLPassword} {
		if strings.Contains(l.Sipwarden().Output(), leak) || strings.Contains(r.Reason, leak) {
			t.Errorf("an Event Socket password is in sipwarden's log or /readyz")
		}
	}
	l.StopSipwarden()
	l.SipwardenESLPassword = ""
	l.StartSipwarden()
	l.WaitReady(10 * time.Second)
	phone(1000, 5061)
	l.WaitFor(5*time.Second, "the office whitelisted", func() bool { return registrations() == 1 })

	// The Event Socket goes away and comes back.
	outage := func(what string, cut func(), restore func()) {
		t.Helper()
		disc := l.Metric("sipwarden_esl_disconnects_total")
		resyncs := l.Metric("sipwarden_esl_resyncs_total", "result=ok")
		cut()
		l.WaitFor(10*time.Second, what+": /readyz 503", func() bool {
			code, _ := readyz(t, l)
			return code == http.StatusServiceUnavailable
		})
		if l.Check(fslab.OfficeAddr) != 0 {
			t.Errorf("%s: the office left the whitelist while the Event Socket was away", what)
		}
		restore()
		l.WaitReady(30 * time.Second)
		l.WaitFor(10*time.Second, what+": a resync after the reconnect", func() bool {
			return l.Metric("sipwarden_esl_resyncs_total", "result=ok") > resyncs
		})
		if got := l.Metric("sipwarden_esl_disconnects_total"); got <= disc {
			t.Errorf("%s: sipwarden_esl_disconnects_total %v -> %v", what, disc, got)
		}
	}
	outage("unload/load mod_event_socket", func() {
		l.FSCLI("sched_api +4 none load mod_event_socket")
		l.FSCLITry("bgapi unload mod_event_socket") // the connection it runs on goes too
	}, func() {
		l.WaitFor(20*time.Second, "mod_event_socket loaded again by the scheduler", func() bool {
			_, err := l.FSCLITry("status")
			return err == nil
		})
	})
	phone(1001, 5062)
	l.WaitFor(5*time.Second, "a registration after the reload learned by event", func() bool { return registrations() == 2 })

	// `reload mod_event_socket` itself: too short a gap to see /readyz
	// 503, but the connection drops and the resync follows.
	disc := l.Metric("sipwarden_esl_disconnects_total")
	resyncs := l.Metric("sipwarden_esl_resyncs_total", "result=ok")
	l.FSCLITry("bgapi reload mod_event_socket")
	l.WaitFor(20*time.Second, "reload mod_event_socket: disconnect, reconnect and resync", func() bool {
		return l.Metric("sipwarden_esl_disconnects_total") > disc && l.Metric("sipwarden_esl_resyncs_total", "result=ok") > resyncs
	})
	l.WaitReady(20 * time.Second)
	if n := registrations(); n != 2 {
		t.Errorf("office registrations after reload mod_event_socket = %d, want 2", n)
	}

	outage("FreeSWITCH SIGKILL", func() {
		l.FS().Signal(syscall.SIGKILL)
		<-l.FS().Done()
	}, func() {
		l.StartFreeSWITCH()
	})
	phone(1002, 5063)
	l.WaitFor(5*time.Second, "FreeSWITCH listing 1002", func() bool {
		return strings.Contains(l.FSCLI("show registrations as json"), `"reg_user":"1002"`)
	})
	l.WaitFor(5*time.Second, "1002 (registered after the SIGKILL) in sipwarden's whitelist", func() bool {
		_, body := l.Get("/v1/whitelist/" + office)
		return strings.Contains(body, `"user":"1002"`) || strings.Contains(body, `"user": "1002"`)
	})
	_, wl := l.Get("/v1/whitelist/" + office)
	t.Logf("after the SIGKILL and restart: sipwarden %s; FreeSWITCH %s", wl, l.FSCLI("show registrations as json"))
}
