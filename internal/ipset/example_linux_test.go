package ipset

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/sipwarden/sipwarden/internal/testenv"
)

// The README's order: start sipwarden (it creates every set), then load
// examples/firewall/ipset.conf with -exist. ipset restore -exist fails when
// a set exists with another type, family, maxelem or timeout, so this
// proves what the daemon creates is what the example describes.
func TestIpsetExampleConfAfterDaemon(t *testing.T) {
	ns := testenv.NewNS(t, "ex")
	s, err := New(Options{NetNS: int(ns.H)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	m, err := NewMappings(MappingOptions{NetNS: int(ns.H)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })

	conf := testenv.Sh(t, "cat", "../../examples/firewall/ipset.conf")
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "ipset", "restore", "-exist")
	cmd.Stdin = strings.NewReader(conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ipset restore -exist < ipset.conf after the daemon made the sets: %v: %s", err, out)
	}
	// every set the daemon makes is described by the file, with the same header
	names := []string{DefaultSetV4, DefaultSetV6, DefaultQuarantineV4, DefaultQuarantineV6, DefaultThrottleV4, DefaultThrottleV6}
	create := regexp.MustCompile(`(?m)^create (\S+) (\S+) family (\S+) timeout 0 maxelem (\d+)$`)
	described := map[string][]string{}
	for _, c := range create.FindAllStringSubmatch(conf, -1) {
		described[c[1]] = c[2:]
	}
	for _, n := range names {
		d, ok := described[n]
		if !ok {
			t.Errorf("ipset.conf does not create %s", n)
			continue
		}
		hdr := ns.Exec(t, "ipset", "list", "-t", n)
		for _, want := range []string{"Type: " + d[0] + "\n", "family " + d[1] + " ", "maxelem " + d[2], "timeout 0"} {
			if !strings.Contains(hdr, want) {
				t.Errorf("%s: ipset.conf says %q, the kernel holds\n%s", n, want, hdr)
			}
		}
	}
	if len(described) != len(names) {
		t.Errorf("ipset.conf creates %d sets, sipwarden %d: %v", len(described), len(names), described)
	}
	// and the other order (boot: the file first) is accepted by the daemon
	ns2 := testenv.NewNS(t, "ex")
	cmd = exec.Command("ip", "netns", "exec", ns2.Name, "ipset", "restore")
	cmd.Stdin = strings.NewReader(conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ipset restore < ipset.conf: %v: %s", err, out)
	}
	s2, err := New(Options{NetNS: int(ns2.H)})
	if err != nil {
		t.Fatalf("sipwarden on the sets from ipset.conf: %v", err)
	}
	s2.Close()
	m2, err := NewMappings(MappingOptions{NetNS: int(ns2.H)})
	if err != nil {
		t.Fatalf("sipwarden on the mapping sets from ipset.conf: %v", err)
	}
	m2.Close()
}

// References counts the rules that use each ban set, and InstallRules'
// rules drop the banned source on every SIP and TLS port of the profiles.
func TestIpsetReferencesAndInstallRules(t *testing.T) {
	ns := testenv.NewNS(t, "rf")
	s := newTestIPSet(t, ns, Options{})
	ctx := t.Context()
	refs, err := s.References(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if refs["swt4"] != 0 || refs["swt6"] != 0 || len(refs) != 2 {
		t.Fatalf("no rule yet: %v", refs)
	}
	var remove func() error
	if err := testenv.InNS(ns.H, func() (err error) {
		remove, err = InstallRules(RuleOptions{SetV4: "swt4", SetV6: "swt6"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	refs, err = s.References(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// one rule per protocol (UDP, TCP) and family
	if refs["swt4"] != 2 || refs["swt6"] != 2 {
		t.Fatalf("after InstallRules: %v\n%s", refs, ns.Exec(t, "ipset", "list", "-t"))
	}
	if hdr := ns.Exec(t, "ipset", "list", "-t", "swt4"); !strings.Contains(hdr, "References: 2") {
		t.Fatalf("the ipset tool disagrees: %s", hdr)
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		rules := ns.Exec(t, tool, "-S", "INPUT")
		for _, proto := range []string{"udp", "tcp"} {
			if !strings.Contains(rules, "-p "+proto+" -m multiport --dports 5060,5061,5080,5081 -m set --match-set swt") {
				t.Errorf("%s: no %s rule on 5060,5061,5080,5081:\n%s", tool, proto, rules)
			}
		}
	}
	if err := testenv.InNS(ns.H, remove); err != nil {
		t.Fatal(err)
	}
	if refs, err = s.References(ctx); err != nil || refs["swt4"] != 0 || refs["swt6"] != 0 {
		t.Fatalf("after remove: %v %v", refs, err)
	}
}
