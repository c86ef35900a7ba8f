package decision

import (
	"net/netip"
	"testing"
)

// fakeAllow is a whitelist with static prefixes and registered addresses,
// answering about whole prefixes as the contract says.
type fakeAllow struct {
	static     []netip.Prefix
	registered []netip.Addr
}

func (f fakeAllow) Registered(p netip.Prefix) bool {
	for _, a := range f.registered {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (f fakeAllow) StaticOverlap(p netip.Prefix) (netip.Prefix, bool) {
	for _, s := range f.static {
		if s.Overlaps(p) {
			return s, true
		}
	}
	return netip.Prefix{}, false
}

func TestDecide(t *testing.T) {
	allow := fakeAllow{
		static:     []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8:5::/48")},
		registered: []netip.Addr{netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8:1::10"), netip.MustParseAddr("10.9.0.5")},
	}
	d := New([]netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")},
		[]netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8:ffff::1")}, allow)
	tests := []struct {
		name     string
		ip       string // "" = unknown offender
		prefix   string // "" = the address itself
		reason   Reason
		why      string
		want     string // banned prefix
		narrowed bool
	}{
		{"loopback", "127.0.0.2", "", NeverBan, "loopback", "", false},
		{"v6 loopback", "::1", "", NeverBan, "loopback", "", false},
		{"link-local", "fe80::1", "", NeverBan, "link-local", "", false},
		{"multicast", "239.1.1.1", "", NeverBan, "multicast", "", false},
		{"unspecified", "0.0.0.0", "", NeverBan, "unspecified", "", false},
		{"own", "198.51.100.1", "", NeverBan, "own address", "", false},
		{"never_ban wins over registered", "10.9.0.5", "", NeverBan, "never_ban 10.9.0.0/16", "", false},
		{"static", "192.0.2.7", "", Static, "static 192.0.2.0/24", "", false},
		{"registered", "203.0.113.10", "", Registered, "registered", "", false},
		{"plain", "203.0.113.12", "", Ban, "", "203.0.113.12/32", false},
		{"prefix clean", "2001:db8:2::99", "2001:db8:2::/64", Ban, "", "2001:db8:2::/64", false},
		// the regression: a neighbour of a registered phone bans itself only
		{"prefix narrowed for registered", "2001:db8:1::99", "2001:db8:1::/64", Ban, "narrowed: registered (registered address in 2001:db8:1::/64)", "2001:db8:1::99/128", true},
		{"prefix narrowed for static", "2001:db8:4::9", "2001:db8:4::/46", Ban, "narrowed: static (static 2001:db8:5::/48)", "2001:db8:4::9/128", true},
		{"prefix narrowed for own", "2001:db8:ffff::99", "2001:db8:ffff::/64", Ban, "narrowed: never_ban (own address 2001:db8:ffff::1)", "2001:db8:ffff::99/128", true},
		{"offender itself registered", "2001:db8:1::10", "2001:db8:1::/64", Registered, "registered", "", false},
		// a prefix found in the kernel: no offender to narrow to, refused
		{"unknown offender, registered inside", "", "2001:db8:1::/64", Registered, "registered address in 2001:db8:1::/64", "", false},
		{"unknown offender, clean", "", "2001:db8:2::/64", Ban, "", "2001:db8:2::/64", false},
		{"unknown offender, single", "", "203.0.113.10/32", Registered, "registered", "", false},
		{"offender outside the prefix: judged alone", "203.0.113.12", "2001:db8:2::/64", Ban, "", "203.0.113.12/32", false},
		{"mapped address unmapped", "::ffff:203.0.113.10", "", Registered, "registered", "", false},
		{"nothing valid", "", "", NeverBan, "invalid address", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ip netip.Addr
			var p netip.Prefix
			if tc.ip != "" {
				ip = netip.MustParseAddr(tc.ip)
			}
			if tc.prefix != "" {
				p = netip.MustParsePrefix(tc.prefix)
			}
			v := d.Decide(ip, p)
			if v.Reason != tc.reason || v.Why != tc.why || v.Narrowed != tc.narrowed {
				t.Fatalf("got %v %q narrowed=%v, want %v %q narrowed=%v", v.Reason, v.Why, v.Narrowed, tc.reason, tc.why, tc.narrowed)
			}
			if tc.want != "" && v.Prefix != netip.MustParsePrefix(tc.want) {
				t.Fatalf("prefix %v, want %s", v.Prefix, tc.want)
			}
			if tc.want == "" && v.Prefix.IsValid() {
				t.Fatalf("refused verdict carries prefix %v", v.Prefix)
			}
		})
	}
}

func TestAddrOnlyNarrowsEveryPrefix(t *testing.T) {
	a := AddrOnly(func(ip netip.Addr) (static, registered bool) {
		return ip == netip.MustParseAddr("2001:db8::2"), ip == netip.MustParseAddr("2001:db8::1")
	})
	d := New(nil, nil, a)
	if v := d.Decide(netip.MustParseAddr("2001:db8:9::9"), netip.MustParsePrefix("2001:db8:9::/64")); !v.Narrowed || !v.Prefix.IsSingleIP() {
		t.Fatalf("a prefix it cannot judge must be narrowed: %+v", v)
	}
	if v := d.Decide(netip.MustParseAddr("2001:db8::1"), netip.Prefix{}); v.Reason != Registered {
		t.Fatalf("registered: %+v", v)
	}
	if v := d.Decide(netip.MustParseAddr("2001:db8::2"), netip.Prefix{}); v.Reason != Static {
		t.Fatalf("static: %+v", v)
	}
	if v := d.Decide(netip.Addr{}, netip.MustParsePrefix("2001:db8:9::/64")); v.Reason == Ban {
		t.Fatalf("an unknown prefix it cannot judge must not stay banned: %+v", v)
	}
}

func TestReasonString(t *testing.T) {
	for r, want := range map[Reason]string{Ban: "ban", NeverBan: "never_ban", Static: "static", Registered: "registered", 9: "reason(9)"} {
		if r.String() != want {
			t.Errorf("%d: %q", r, r.String())
		}
	}
}
