package logwatch

import (
	"bufio"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// hostile lists the addresses of testdata/hostile: the only real senders,
// and the victims the attackers named in every field they could write.
var (
	hostileAttackers = map[netip.Addr]bool{netip.MustParseAddr("198.51.100.2"): true, netip.MustParseAddr("198.51.100.10"): true}
	hostileVictims   = []netip.Addr{netip.MustParseAddr("203.0.113.99"), netip.MustParseAddr("192.0.2.77"), netip.MustParseAddr("2001:db8::66")}
)

// TestHostileCorpus reads what the real FreeSWITCH wrote while attackers put
// brackets, spaces, "from ip <victim>", quotes and %0A-escaped fake log lines
// into every client-written field (testdata/hostile/README.md): every
// offense names a real sender, none a victim, and the attackers' digest
// failures are still found.
func TestHostileCorpus(t *testing.T) {
	f, err := os.Open("testdata/hostile/freeswitch.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := NewParser(func() time.Time { return time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC) })
	p.SetPublicContexts("public")
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	found := map[offense.Rule]int{}
	for sc.Scan() {
		o, ok := p.Parse(sc.Bytes())
		if !ok {
			continue
		}
		if !hostileAttackers[o.IP] {
			t.Errorf("%s charged to %s by:\n%s", o.Rule, o.IP, sc.Text())
		}
		found[o.Rule]++
	}
	if found[offense.AuthFailure] == 0 {
		t.Errorf("no auth_failure found (%v): the rules must still see the attackers", found)
	}
}

// The no_route session rule takes the address from the session's receiving
// line, between a channel name and a Call-ID the client writes: hostile
// shapes of it, as sofia writes them (a caller's %0A becomes a line end
// after the session UUID), charge no victim.
func TestNoRouteHostileSessions(t *testing.T) {
	const uuid = "e712698b-815c-4fe3-a709-01ae7a21cf00"
	head := uuid + " 2026-12-01 21:41:02.360494 80.00% [INFO] sofia.c:10472 "
	proc := uuid + " 2026-12-01 21:41:02.360494 80.00% [INFO] mod_dialplan_xml.c:639 Processing x <x>->00972599887769 in context public"
	noRoute := uuid + " 2026-12-01 21:41:02.360494 80.00% [INFO] switch_core_state_machine.c:311 No Route, Aborting"
	for _, tc := range []struct {
		name  string
		lines []string
		want  string // the address charged, "" for none
	}{
		{"plain", []string{head + "sofia/external/carrier@192.0.2.10 receiving invite from 198.51.100.2:41876 version: 1.11.1-release  64bit call-id: c1", proc, noRoute}, "198.51.100.2"},
		{"caller with the phrase and a victim", []string{head + "sofia/external/x receiving invite from 203.0.113.99:5060 version: 1@192.0.2.10 receiving invite from 198.51.100.2:41876 version: 1.11.1-release  64bit call-id: c1", proc, noRoute}, ""},
		{"call-id with the phrase and a victim", []string{head + "sofia/external/x@192.0.2.10 receiving invite from 198.51.100.2:41876 version: 1.11.1-release  64bit call-id: a receiving invite from 203.0.113.99:5060 b", proc, noRoute}, ""},
		{"caller split by a line end, fake line after", []string{head + "sofia/external/1000",
			uuid + " 2026-12-01 21:00:00.000000 95.00% [INFO] sofia.c:10472 sofia/external/x@y receiving invite from 203.0.113.99:5060 version: 1.11.1-release  64bit call-id: z",
			uuid + " @192.0.2.10 receiving invite from 198.51.100.2:41876 version: 1.11.1-release  64bit call-id: c1", proc, noRoute}, ""},
		{"a second receiving line for the session", []string{head + "sofia/external/a@192.0.2.10 receiving invite from 198.51.100.2:41876 version: 1.11.1-release  64bit call-id: c1",
			head + "sofia/external/a@192.0.2.10 receiving invite from 203.0.113.99:5060 version: 1.11.1-release  64bit call-id: c1", proc, noRoute}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewParser(func() time.Time { return time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC) })
			p.SetPublicContexts("public")
			var got []string
			for _, l := range tc.lines {
				if o, ok := p.Parse([]byte(l)); ok {
					got = append(got, o.IP.String())
				}
			}
			if strings.Join(got, ",") != tc.want {
				t.Errorf("charged %v, want %q", got, tc.want)
			}
		})
	}
}
