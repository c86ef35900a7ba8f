package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/fslab"
)

// officeRows are injection rows for vanilla user ext (password 1234, or
// password) repeated n times.
func officeRows(ext int, password string, n int) [][]string {
	var rows [][]string
	for range n {
		rows = append(rows, []string{strconv.Itoa(ext), fslab.Credentials(strconv.Itoa(ext), password), "120"})
	}
	return rows
}

// watchBans polls the kernel's ban and throttle sets for ip until stop is
// closed and counts the times ip was in one of them.
func watchBans(l *fslab.Lab, ip string, stop <-chan struct{}) (hits *atomic.Int64, done *sync.WaitGroup) {
	hits, done = &atomic.Int64{}, &sync.WaitGroup{}
	addr := mustAddr(ip)
	done.Add(1)
	go func() {
		defer done.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if l.Banned(addr) || l.Throttled(addr) {
				hits.Add(1)
			}
		}
	}()
	return hits, done
}

type offender struct {
	IP       string         `json:"ip"`
	State    string         `json:"state"`
	Why      string         `json:"why"`
	User     string         `json:"user"`
	Offenses map[string]int `json:"offenses"`
}

// staleUntilQuarantined runs office phone 1003 with a stale password from
// LAN port port until sipwarden quarantines that one mapping in the kernel
// (its REGISTERs then go unanswered), then stops it.
func staleUntilQuarantined(t *testing.T, l *fslab.Lab, port int) time.Duration {
	t.Helper()
	s := l.Sipp(fslab.SippRun{NS: l.OfficeNS, Scenario: "register_fail.xml", Rows: officeRows(1003, "stale-password", 40),
		Local: fslab.OfficeLANAddr, Port: port, Rate: 2})
	took := l.WaitFor(60*time.Second, fmt.Sprintf("the stale phone's mapping %s:%d quarantined", fslab.OfficeAddr, port),
		func() bool { return l.Quarantined(fslab.OfficeAddr, port) })
	s.Kill()
	return took
}

func offenders(t *testing.T, l *fslab.Lab) map[string]offender {
	t.Helper()
	code, body := l.Get("/v1/offenders")
	var r struct{ Offenders []offender }
	if err := json.Unmarshal([]byte(body), &r); code != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/offenders = %d %v %s", code, err, body)
	}
	m := map[string]offender{}
	for _, o := range r.Offenders {
		m[o.IP] = o
	}
	return m
}

// TestRealFreeSWITCHOfficeStalePassword: an office behind NAT (one public
// address, each phone its own source port) registers phones 1000-1002; its
// phone 1003 has a stale password and retries, failing with 401 then 403
// each time (log, Event Socket and HEP all see it), until sipwarden
// quarantines that phone's mapping (address and port) in the kernel. The
// office address is never in the ban or throttle set, the other phones'
// mappings are never quarantined, they keep registering (every REGISTER
// answered 200) and calling (an authenticated call to the echo test
// answered and hung up), and sipwarden reports the office as protected.
func TestRealFreeSWITCHOfficeStalePassword(t *testing.T) {
	l := fslab.New(t, fslab.Options{Office: true})
	office := fslab.OfficeAddr.String()
	stop := make(chan struct{})
	hits, watching := watchBans(l, office, stop)

	// Three phones register, each from its own port behind the NAT.
	for i, ext := range []int{1000, 1001, 1002} {
		l.Sipp(fslab.SippRun{NS: l.OfficeNS, Scenario: "register.xml", Rows: officeRows(ext, "1234", 1),
			Local: fslab.OfficeLANAddr, Port: 5061 + i}).Run(l, 30*time.Second)
	}
	l.WaitFor(5*time.Second, "the office whitelisted", func() bool { return l.Check(fslab.OfficeAddr) == 0 })
	code, body := l.Get("/v1/whitelist/" + office)
	if code != http.StatusOK || strings.Count(body, `"user"`) != 3 {
		t.Fatalf("GET /v1/whitelist/%s = %d %s, want 3 registrations", office, code, body)
	}
	for _, p := range []string{"5061", "5062", "5063"} {
		if !strings.Contains(body, ":"+p) {
			t.Errorf("no registration from source port %s (NAT kept the phones' ports?): %s", p, body)
		}
	}

	// 1003 retries its stale password until only its own mapping is
	// quarantined, while the others keep re-registering and 1000 places a
	// call (to 9196, the echo test) and talks for a second.
	call := l.Sipp(fslab.SippRun{NS: l.OfficeNS, Scenario: "call.xml", Local: fslab.OfficeLANAddr, Port: 5071,
		Rows: [][]string{{"1000", fslab.Credentials("1000", "1234"), "9196"}}})
	var phones []*fslab.Sipp
	for i, ext := range []int{1000, 1001, 1002} {
		phones = append(phones, l.Sipp(fslab.SippRun{NS: l.OfficeNS, Scenario: "register.xml", Rows: officeRows(ext, "1234", 6),
			Local: fslab.OfficeLANAddr, Port: 5061 + i, Rate: 1}))
	}
	took := staleUntilQuarantined(t, l, 5064)
	t.Logf("1003's mapping %s:5064 quarantined %v after its first attempt", office, took.Round(time.Millisecond))
	for _, p := range phones {
		p.Run(l, 60*time.Second) // every re-registration answered 200
	}
	call.Run(l, 30*time.Second) // answered, and hung up with 200
	for i := range 3 {
		if l.Quarantined(fslab.OfficeAddr, 5061+i) {
			t.Errorf("the working phone's mapping %s:%d is quarantined", office, 5061+i)
		}
	}
	const failures = 5
	l.WaitFor(10*time.Second, "the failures reaching the jail", func() bool {
		return offenders(t, l)[office].Offenses["auth_failure"] >= failures
	})
	close(stop)
	watching.Wait()

	if n := hits.Load(); n > 0 {
		t.Errorf("the office %s was in the kernel set %d times (50 ms polls)", office, n)
	}
	if l.Banned(fslab.OfficeAddr) {
		t.Errorf("the office %s is banned", office)
	}
	o := offenders(t, l)[office]
	if o.State != "protected" && o.State != "quarantined" {
		t.Errorf("office offender = %+v, want state protected or quarantined (its failing mapping)", o)
	}
	if got := l.Metric("sipwarden_ban_skipped_total", "reason=registered"); got < 1 {
		t.Errorf(`sipwarden_ban_skipped_total{reason="registered"} = %v, want >= 1`, got)
	}
	// Log, Event Socket and HEP all report each failure; the jail counts
	// it once.
	if got := l.Metric("sipwarden_offenses_total", "rule=auth_failure"); got < failures {
		t.Errorf(`sipwarden_offenses_total{rule="auth_failure"} = %v, want >= %d`, got, failures)
	}
	if got := l.Metric("sipwarden_jail_deduplicated_total"); got < 1 {
		t.Errorf("sipwarden_jail_deduplicated_total = %v: only one source saw the failures", got)
	}
	t.Logf("office %s: %+v", office, o)
	if l.Check(fslab.OfficeAddr) != 0 {
		t.Error("the office is no longer whitelisted")
	}
}
