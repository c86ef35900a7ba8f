package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/fslab"
)

// TestRealFreeSWITCHRestarts: the office registers 1000 and 1001 and its
// phone 1003 keeps failing. FreeSWITCH is shut down and started again (its
// registrations survive in its database, and it sends no event for them):
// sipwarden reconnects, resyncs, and its whitelist holds them again; a
// phone registering after the restart is learned by event. Then sipwarden
// itself is restarted while 1003 keeps failing: the office is whitelisted
// as soon as the API answers. 1003's failing mappings are quarantined, one
// after the other; the office is never in the ban or throttle set at any
// point of the test (polled every 50 ms).
func TestRealFreeSWITCHRestarts(t *testing.T) {
	l := fslab.New(t, fslab.Options{Office: true, Sipwarden: "whitelist:\n  grace: 1s\n"})
	office := fslab.OfficeAddr.String()
	stop := make(chan struct{})
	hits, watching := watchBans(l, office, stop)
	defer func() {
		close(stop)
		watching.Wait()
		if n := hits.Load(); n > 0 {
			t.Errorf("the office %s was in the kernel set %d times (50 ms polls)", office, n)
		}
	}()
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
	phone(1000, 5061)
	phone(1001, 5062)
	l.WaitFor(5*time.Second, "2 office registrations whitelisted", func() bool { return registrations() == 2 })
	staleUntilQuarantined(t, l, 5064)

	// FreeSWITCH restarts; the registrations stay in its database.
	resyncs := l.Metric("sipwarden_esl_resyncs_total", "result=ok")
	l.StopFreeSWITCH()
	l.WaitFor(10*time.Second, "/readyz 503 with FreeSWITCH down", func() bool {
		code, _, err := l.GetTry("/readyz")
		return err == nil && code == http.StatusServiceUnavailable
	})
	if l.Check(fslab.OfficeAddr) != 0 {
		t.Error("the office left the whitelist while FreeSWITCH was down")
	}
	l.StartFreeSWITCH()
	if out := l.FSCLI("show registrations as json"); !strings.Contains(out, `"reg_user":"1000"`) {
		t.Fatalf("FreeSWITCH lost the registrations in its restart (the test needs them kept): %s", out)
	}
	l.WaitReady(20 * time.Second)
	l.WaitFor(10*time.Second, "a resync after the reconnect", func() bool {
		return l.Metric("sipwarden_esl_resyncs_total", "result=ok") > resyncs
	})
	if got := l.Metric("sipwarden_esl_reconnects_total"); got < 1 {
		t.Errorf("sipwarden_esl_reconnects_total = %v", got)
	}
	if n := registrations(); n != 2 {
		t.Errorf("office registrations after the FreeSWITCH restart = %d, want 2 (from the resync)", n)
	}
	phone(1002, 5063)
	l.WaitFor(5*time.Second, "the phone registering after the restart learned by event", func() bool { return registrations() == 3 })
	staleUntilQuarantined(t, l, 5065) // 1003 retries from a new mapping

	// sipwarden restarts while 1003 keeps failing, from a third mapping.
	l.StopSipwarden()
	failing := l.Sipp(fslab.SippRun{NS: l.OfficeNS, Scenario: "register_fail.xml", Rows: officeRows(1003, "stale-password", 40),
		Local: fslab.OfficeLANAddr, Port: 5066, Rate: 2})
	l.StartSipwarden()
	took := l.WaitFor(5*time.Second, "the office whitelisted after sipwarden's restart", func() bool { return l.Check(fslab.OfficeAddr) == 0 })
	t.Logf("office whitelisted %v after sipwarden's API answered", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("the office was whitelisted only %v after sipwarden's API answered, want within its first second", took)
	}
	l.WaitFor(60*time.Second, "the third mapping quarantined after the restart", func() bool { return l.Quarantined(fslab.OfficeAddr, 5066) })
	failing.Kill()
	if o := offenders(t, l)[office]; o.State != "protected" && o.State != "quarantined" {
		t.Errorf("office offender after sipwarden's restart = %+v, want protected or quarantined", o)
	}
	if n := registrations(); n != 3 {
		t.Errorf("office registrations after sipwarden's restart = %d, want 3", n)
	}
}
