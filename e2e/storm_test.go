package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/fslab"
)

// procKB reads a kB field (VmRSS, VmHWM) of /proc/PID/status.
func procKB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatalf("%s: %q", field, line)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// whitelistCounts is the number of dynamic entries and registrations in
// GET /v1/whitelist.
func whitelistCounts(t *testing.T, l *fslab.Lab) (ips, regs int) {
	t.Helper()
	code, body := l.Get("/v1/whitelist")
	var r struct {
		Entries []struct {
			IP            string            `json:"ip"`
			Registrations []json.RawMessage `json:"registrations"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(body), &r); code != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/whitelist = %d %v", code, err)
	}
	for _, e := range r.Entries {
		if len(e.Registrations) > 0 {
			ips++
			regs += len(e.Registrations)
		}
	}
	return ips, regs
}

// TestRealFreeSWITCHRegistrationStorm: 5,000 phones (-short: 500; generated
// directory users) register from 25 office addresses, 200 phones behind each, with
// digest authentication against the real FreeSWITCH. Each office already
// holds one registration (its first phone), as after a network outage
// when every phone re-registers at once; then the other 4,975 register
// together. All of them are whitelisted and no office is banned; then
// sipwarden is restarted and learns all 5,000 again from one
// `show registrations as json` listing. The storm's time and sipwarden's
// memory are reported.
//
// (A cold storm, from addresses with no registration yet, is another
// matter: see the report of issue 14.)
func TestRealFreeSWITCHRegistrationStorm(t *testing.T) {
	sources, each := 25, 200
	if testing.Short() {
		sources, each = 5, 100 // the -race pass of CI
	}
	phones := sources * each
	l := fslab.New(t, fslab.Options{Users: phones, Roaming: sources})
	for i := 0; i < sources; i++ {
		ext := fslab.FirstUser + i*each
		l.Sipp(fslab.SippRun{NS: l.RoamNS, Scenario: "register.xml", Local: fslab.Roam(i),
			Rows: [][]string{{strconv.Itoa(ext), fslab.Credentials(strconv.Itoa(ext), fslab.Password(ext)), "3600"}}}).Run(l, 30*time.Second)
	}
	l.WaitFor(10*time.Second, "every office's first phone whitelisted", func() bool { return l.Metric("sipwarden_registrations") >= float64(sources) })
	start := time.Now()
	var sipps []*fslab.Sipp
	for i := 0; i < sources; i++ {
		var rows [][]string
		for j := 1; j < each; j++ {
			ext := fslab.FirstUser + i*each + j
			rows = append(rows, []string{strconv.Itoa(ext), fslab.Credentials(strconv.Itoa(ext), fslab.Password(ext)), "3600"})
		}
		sipps = append(sipps, l.Sipp(fslab.SippRun{NS: l.RoamNS, Scenario: "register.xml", Rows: rows, Local: fslab.Roam(i), Rate: 10}))
	}
	for _, s := range sipps {
		s.Run(l, 3*time.Minute) // every phone answered 200
	}
	answered := time.Since(start)
	l.WaitFor(30*time.Second, "every registration in sipwarden", func() bool { return l.Metric("sipwarden_registrations") >= float64(phones) })
	whitelisted := time.Since(start)
	for _, ip := range l.SetEntries() {
		t.Errorf("office %s banned during the storm", ip)
	}
	ips, regs := whitelistCounts(t, l)
	if ips != sources || regs != phones {
		t.Errorf("GET /v1/whitelist: %d addresses with %d registrations, want %d with %d", ips, regs, sources, phones)
	}
	rss, hwm := procKB(t, l.Sipwarden().Pid(), "VmRSS"), procKB(t, l.Sipwarden().Pid(), "VmHWM")

	// The same 5,000 from the listing alone: the state file (which keeps
	// registrations across restarts) goes.
	l.StopSipwarden()
	if err := os.Remove(l.StateFile()); err != nil {
		t.Fatal(err)
	}
	l.StartSipwarden()
	up := time.Now()
	l.WaitFor(30*time.Second, "every registration from the resync listing", func() bool {
		return l.Metric("sipwarden_esl_resyncs_total", "result=ok") >= 1 && l.Metric("sipwarden_registrations") >= float64(phones)
	})
	resync := time.Since(up)
	if ips, regs := whitelistCounts(t, l); ips != sources || regs != phones {
		t.Errorf("after the resync: %d addresses with %d registrations, want %d with %d", ips, regs, sources, phones)
	}
	for _, i := range []int{0, sources / 2, sources - 1} {
		if l.Check(fslab.Roam(i)) != 0 {
			t.Errorf("sipwarden check %s after the resync: not whitelisted", fslab.Roam(i))
		}
	}
	rss2 := procKB(t, l.Sipwarden().Pid(), "VmRSS")
	t.Logf("%d phones (%d offices): all answered 200 in %v, all whitelisted %v after the storm's first REGISTER; sipwarden RSS %d kB (peak %d kB); "+
		"after a restart, the resync listing whitelisted all %d in %v (RSS %d kB)",
		phones, sources, answered.Round(time.Millisecond), whitelisted.Round(time.Millisecond), rss, hwm, phones, resync.Round(time.Millisecond), rss2)
	fmt.Printf("BENCH storm_phones=%d storm_answered_ms=%d storm_whitelisted_ms=%d storm_rss_kb=%d storm_hwm_kb=%d resync_ms=%d resync_rss_kb=%d\n",
		phones, answered.Milliseconds(), whitelisted.Milliseconds(), rss, hwm, resync.Milliseconds(), rss2)
}
