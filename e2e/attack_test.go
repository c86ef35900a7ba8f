package e2e

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/fslab"
)

// probe sends one OPTIONS from attacker k and reports whether FreeSWITCH
// answered within wait.
func probe(t *testing.T, l *fslab.Lab, k int, wait time.Duration) bool {
	t.Helper()
	ua := l.UA(l.AttackNS[k], netip.AddrPortFrom(fslab.Attacker(k), 0), fslab.InternalPort)
	cid := fmt.Sprintf("probe-%d-%d@lab", k, time.Now().UnixNano())
	msg := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s;rport\nMax-Forwards: 70\n"+
		"From: <sip:probe@%s>;tag=p1\nTo: <sip:%s>\nCall-ID: %s\nCSeq: 1 OPTIONS\nUser-Agent: lab-probe/1.0\nContent-Length: 0\n\n",
		fslab.FSAddr, ua.Local(), cid[:20], fslab.Attacker(k), fslab.FSAddr, cid)
	_, err := ua.Final(msg, cid, wait)
	if err != nil && !errors.Is(err, fslab.ErrNoAnswer) {
		t.Fatalf("probe from %s: %v", fslab.Attacker(k), err)
	}
	return err == nil
}

// TestRealFreeSWITCHAttacksBannedInKernel: SIPVicious and toll fraud
// against the real FreeSWITCH, with the shipped defaults, each attacker
// from its own address:
//   - a SIPVicious campaign: svmap, then svwar, then svcrack. svmap's
//     OPTIONS and svwar's REGISTERs (it gives up after FreeSWITCH
//     challenges an unknown extension) are unverified evidence, scored but
//     not enough to ban on their own (a forged source could send them);
//     svcrack's digest failures are verified and ban it;
//   - svcrack alone;
//   - toll fraud: unauthenticated INVITEs to international numbers (sipp).
//
// Each banned attacker is in the kernel set, a probe from it gets no
// answer, the DROP rule's counter grows, and svcrack never finds user
// 1000's password (1234, inside the range it tries). The offense-to-kernel
// latency is read from sipwarden_ban_latency_seconds.
func TestRealFreeSWITCHAttacksBannedInKernel(t *testing.T) {
	l := fslab.New(t, fslab.Options{Attackers: 3})
	svcrack := func(k int) *fslab.Proc {
		return l.Start("svcrack", l.AttackNS[k], "svcrack", "-u1000", "-r1200-1240", "-x", fslab.Attacker(k).String(), fslab.FSAddr.String())
	}
	// Each attack runs until its source is banned; then the tool is
	// stopped (what it still sends is dropped, and it would only wait out
	// its timeouts).
	attacks := []struct {
		name  string
		start func(k int) *fslab.Proc
	}{
		{"svmap, svwar, then svcrack", func(k int) *fslab.Proc {
			ip := fslab.Attacker(k).String()
			out, err := l.Exec(l.AttackNS[k], 30*time.Second, "svmap", "-p5060", fslab.FSAddr.String())
			if err != nil || !strings.Contains(out, "FreeSWITCH") {
				t.Fatalf("svmap found no FreeSWITCH: %v\n%s", err, out)
			}
			if _, err := l.Exec(l.AttackNS[k], 30*time.Second, "svwar", "--force", "-e1000-1040", "-x", ip, fslab.FSAddr.String()); err != nil {
				t.Fatalf("svwar: %v", err)
			}
			l.WaitFor(10*time.Second, "svmap's and svwar's probes scored", func() bool { return offenders(t, l)[ip].Offenses["scanner_user_agent"] >= 2 })
			o := offenders(t, l)[ip]
			t.Logf("after svmap and svwar: %+v", o)
			if o.State != "watching" || l.Banned(fslab.Attacker(k)) || !probe(t, l, k, 3*time.Second) {
				t.Errorf("after svmap and svwar alone (unverified evidence): %+v, in the kernel set %v; want watched, not banned", o, l.Banned(fslab.Attacker(k)))
			}
			return svcrack(k)
		}},
		{"svcrack", svcrack},
		{"toll fraud (sipp)", func(k int) *fslab.Proc {
			return l.Sipp(fslab.SippRun{NS: l.AttackNS[k], Scenario: "invite_unauth.xml", Local: fslab.Attacker(k), Rate: 2,
				Rows: [][]string{{"00972599887769"}, {"00972599887770"}, {"0044906123456"}, {"011972599887771"}, {"0049900123456"}, {"00972599887772"}, {"00972599887773"}}}).Proc
		}},
	}
	for k := range attacks {
		if !probe(t, l, k, 3*time.Second) {
			t.Fatalf("probe from %s unanswered before any attack", fslab.Attacker(k))
		}
	}
	if l.DropPackets() != 0 {
		t.Fatalf("DROP counter %d before any attack", l.DropPackets())
	}
	for k, a := range attacks {
		ip := fslab.Attacker(k)
		tool := a.start(k)
		took := l.WaitFor(10*time.Second, a.name+" from "+ip.String()+" banned in the kernel", func() bool { return l.Banned(ip) })
		tool.Kill()
		t.Logf("%s from %s: banned %v after the tool started", a.name, ip, took.Round(time.Millisecond))
		if strings.Contains(tool.Output(), "1234") {
			t.Errorf("%s found the password:\n%s", a.name, tool.Output())
		}
		before := l.DropPackets()
		if probe(t, l, k, 2*time.Second) {
			t.Errorf("probe from banned %s answered", ip)
		}
		if after := l.DropPackets(); after <= before {
			t.Errorf("DROP counter %d -> %d: the probe from %s was not dropped by the rule", before, after, ip)
		}
	}
	exp := l.Metrics()
	p50, n := fslab.HistogramQuantile(t, exp, "sipwarden_ban_latency_seconds", 0.5)
	p99, _ := fslab.HistogramQuantile(t, exp, "sipwarden_ban_latency_seconds", 0.99)
	t.Logf("offense -> kernel set over %v bans: p50 %.1f ms, p99 %.1f ms (histogram estimate); DROP counter %d", n, p50*1e3, p99*1e3, l.DropPackets())
	fmt.Printf("BENCH attack_kernel_p50_ms=%.2f p99_ms=%.2f bans=%v\n", p50*1e3, p99*1e3, n)
	if n < float64(len(attacks)) {
		t.Errorf("sipwarden_ban_latency_seconds counts %v bans, want >= %d", n, len(attacks))
	}
	code, body := l.Get("/v1/bans")
	for k := range attacks {
		if !strings.Contains(body, fslab.Attacker(k).String()) {
			t.Errorf("GET /v1/bans (%d) does not list %s: %s", code, fslab.Attacker(k), body)
		}
	}
}
