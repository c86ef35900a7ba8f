package whitelist

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestRegisteredPrefix(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c, "203.0.113.0/24")
	for i, a := range []string{"2001:db8:1::10", "192.0.2.5", "10.1.2.3"} {
		r := reg1000(c, a)
		r.CallID = a
		r.User = string(rune('a' + i))
		w.Upsert(r)
	}
	dead := reg1000(c, "198.51.100.9")
	dead.CallID, dead.ExpiresAt = "dead", c.In(10*time.Second)
	w.Upsert(dead)
	c.Add(10*time.Second + DefaultGrace) // dead is expired, not yet swept
	for _, tc := range []struct {
		p    string
		want bool
	}{
		{"2001:db8:1::/64", true}, // issue 11 item 2: the offender ::99's /64 holds ::10
		{"2001:db8:1::99/128", false},
		{"2001:db8:1::10/128", true},
		{"2001:db8:1::/120", true},
		{"2001:db8:1::100/120", false},
		{"2001:db8:1:0:8000::/65", false},
		{"2001:db8:1::/48", true}, // wider than a bucket
		{"2001:db8::/32", true},
		{"2001:db8:2::/48", false},
		{"::/0", true},
		{"192.0.2.0/24", true},
		{"192.0.2.4/31", true},
		{"192.0.2.6/31", false},
		{"192.0.0.0/16", true},
		{"10.0.0.0/8", true},
		{"11.0.0.0/8", false},
		{"0.0.0.0/0", true},
		{"::ffff:192.0.2.0/120", true}, // mapped
		{"192.0.2.5/24", true},         // unmasked
		{"198.51.100.0/24", false},     // only an expired registration
		{"203.0.113.0/24", false},      // static is not a registration
	} {
		if got := w.Registered(pfx(tc.p)); got != tc.want {
			t.Errorf("Registered(%s) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if w.Registered(netip.Prefix{}) {
		t.Error("invalid prefix registered")
	}
	w.Remove("", netip.MustParseAddr("192.0.2.5"), "b", "", "")
	if w.Registered(pfx("192.0.2.0/24")) {
		t.Error("Registered after the only registration of the /24 left")
	}
}

// TestRegisteredMatchesScan checks the bucket index against a plain scan
// of Entries through random writes, removals, expiries and prefixes.
func TestRegisteredMatchesScan(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c)
	r := rand.New(rand.NewPCG(3, 4))
	addr := func() netip.Addr {
		if r.IntN(2) == 0 {
			return netip.AddrFrom4([4]byte{10, byte(r.IntN(3)), byte(r.IntN(3)), byte(r.IntN(8))})
		}
		var b [16]byte
		b[0], b[1], b[7], b[15] = 0x20, 0x01, byte(r.IntN(3)), byte(r.IntN(8))
		b[8] = byte(r.IntN(2)) << 7
		return netip.AddrFrom16(b)
	}
	for step := 0; step < 3000; step++ {
		a := addr()
		switch r.IntN(4) {
		case 0, 1:
			reg := reg1000(c, a.String())
			reg.CallID = a.String()
			reg.ExpiresAt = c.In(time.Duration(r.IntN(120)) * time.Second)
			w.Upsert(reg)
		case 2:
			w.Remove("", a, "1000", "", "")
		case 3:
			c.Add(time.Duration(r.IntN(30)) * time.Second)
			if r.IntN(4) == 0 {
				w.Sweep()
			}
		}
		p, _ := a.Prefix(r.IntN(a.BitLen() + 1))
		want := false
		for _, e := range w.Entries() {
			want = want || p.Contains(e.IP)
		}
		if got := w.Registered(p); got != want {
			t.Fatalf("step %d: Registered(%s) = %v, scan says %v", step, p, got, want)
		}
	}
}

func TestStaticOverlap(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c, "192.0.2.0/24", "2001:db8::/48", "198.51.100.7/32")
	for _, tc := range []struct {
		p, want string // want "" = no overlap
	}{
		{"192.0.2.77/32", "192.0.2.0/24"},
		{"192.0.0.0/16", "192.0.2.0/24"}, // the ban would contain the static prefix
		{"192.0.3.0/24", ""},
		{"198.51.100.0/24", "198.51.100.7/32"},
		{"198.51.100.8/29", ""},
		{"2001:db8:0:1::/64", "2001:db8::/48"},
		{"2001:db8:1::/64", ""},
		{"::ffff:192.0.2.0/120", "192.0.2.0/24"},
		{"0.0.0.0/0", "192.0.2.0/24"},
	} {
		got, ok := w.StaticOverlap(pfx(tc.p))
		if ok != (tc.want != "") || ok && got != pfx(tc.want) {
			t.Errorf("StaticOverlap(%s) = %v,%v want %q", tc.p, got, ok, tc.want)
		}
	}
	if _, ok := w.StaticOverlap(netip.Prefix{}); ok {
		t.Error("invalid prefix overlaps")
	}
	w.SetStatic(nil)
	if _, ok := w.StaticOverlap(pfx("0.0.0.0/0")); ok {
		t.Error("overlap after SetStatic(nil)")
	}
}

func TestSetGrace(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c)
	r := reg1000(c, "192.0.2.30")
	r.ExpiresAt = c.In(10 * time.Second)
	w.Upsert(r)
	c.Add(40 * time.Second) // 30 s past the SIP expiry
	if !view(t, w, c, r.IP) {
		t.Fatal("not protected inside the default grace")
	}
	w.SetGrace(5 * time.Second)
	if w.Grace() != 5*time.Second {
		t.Fatalf("Grace = %v", w.Grace())
	}
	if view(t, w, c, r.IP) {
		t.Fatal("still protected after the grace was shortened")
	}
	w.SetGrace(0) // back to the default, before any sweep
	if w.Grace() != DefaultGrace || !view(t, w, c, r.IP) {
		t.Fatalf("grace %v: not protected again", w.Grace())
	}
	w.SetGrace(-1)
	if w.Grace() != 0 {
		t.Fatalf("negative grace gives %v", w.Grace())
	}
	if n := w.Sweep(); n != 1 {
		t.Fatalf("sweep with no grace removed %d", n)
	}
}

func TestStateRoundTrip(t *testing.T) {
	c := newClock()
	w, _ := newWL(t, c, "203.0.113.0/24")
	nat := reg1000(c, "198.51.100.10")
	nat2 := nat
	nat2.User, nat2.CallID, nat2.Contact, nat2.UserAgent = "1001", "two", "sip:1001@198.51.100.10:5062", "Yealink"
	v6 := reg1000(c, "2001:db8::7")
	v6.CallID, v6.Node = "v6", "fs2:8021"
	short := reg1000(c, "192.0.2.40")
	short.CallID, short.ExpiresAt = "short", c.In(time.Minute)
	for _, r := range []Registration{nat, nat2, v6, short} {
		w.Upsert(r)
	}
	blob, err := w.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := w.MarshalState()
	if !bytes.Equal(blob, again) {
		t.Fatal("MarshalState is not deterministic")
	}
	if strings.Contains(string(blob), "203.0.113") {
		t.Fatal("static prefixes in the state")
	}

	// A restart two minutes later: short is past expiry+grace.
	c.Add(2*time.Minute + time.Second)
	w2, _ := newWL(t, c)
	if err := w2.UnmarshalState(blob); err != nil {
		t.Fatal(err)
	}
	if ips, regs := w2.Len(); ips != 2 || regs != 3 {
		t.Fatalf("restored Len = %d,%d, want 2,3 (expired one dropped)", ips, regs)
	}
	for _, r := range []Registration{nat, v6} {
		if !view(t, w2, c, r.IP) {
			t.Fatalf("%s not protected right after the restore", r.IP)
		}
	}
	e, _ := w2.Lookup(nat.IP)
	want, _ := w.Lookup(nat.IP)
	gj, _ := json.Marshal(e)
	wj, _ := json.Marshal(want)
	if !bytes.Equal(gj, wj) {
		t.Fatalf("restored entry\n got %s\nwant %s", gj, wj)
	}
	// The node's first resync replaces what was restored of it, and only that.
	w2.ReplaceNodeAfter(nat.Node, nil, w2.Mark())
	if _, ok := w2.Allowed(nat.IP); ok {
		t.Fatal("restored registration survived its node's resync")
	}
	if _, ok := w2.Allowed(v6.IP); !ok {
		t.Fatal("another node's restored registration lost")
	}
	// The roaming index came back too: the call-id finds its address.
	if n := w2.RemoveRegistration(Registration{Node: v6.Node, CallID: "v6"}); n != 1 {
		t.Fatalf("removed %d by call-id after restore", n)
	}
}

func TestUnmarshalStateRefuses(t *testing.T) {
	good := `{"version":1,"registrations":[{"ip":"192.0.2.1","user":"1","realm":"r","profile":"p","contact":"c","user_agent":"","expires_at":"2026-11-25T20:46:14Z"}]}`
	if err := New(Options{Now: newClock().Now}).UnmarshalState([]byte(good)); err != nil {
		t.Fatalf("the good blob is refused: %v", err)
	}
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"null", "null"},
		{"array", "[]"},
		{"not JSON", "\x00\xff garbage"},
		{"no version", `{"registrations":[]}`},
		{"future version", `{"version":2,"registrations":[]}`},
		{"bad address", strings.Replace(good, "192.0.2.1", "nope", 1)},
		{"no address", strings.Replace(good, `"ip":"192.0.2.1",`, "", 1)},
		{"no expiry", strings.Replace(good, `,"expires_at":"2026-11-25T20:46:14Z"`, "", 1)},
		{"bad expiry", strings.Replace(good, "2026-11-25T20:46:14Z", "tomorrow", 1)},
		{"number for a string", strings.Replace(good, `"user":"1"`, `"user":1`, 1)},
		{"unknown field", strings.Replace(good, `"user":"1"`, `"user":"1","admin":true`, 1)},
		{"trailing data", good + "{}"},
		{"huge field", strings.Replace(good, `"user":"1"`, `"user":"`+strings.Repeat("x", maxStateField+1)+`"`, 1)},
		{"truncated", good[:len(good)/2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			w, _ := newWL(t, c)
			keep := reg1000(c, "192.0.2.99")
			w.Upsert(keep)
			err := w.UnmarshalState([]byte(tc.in))
			if !errors.Is(err, ErrState) {
				t.Fatalf("err = %v, want ErrState", err)
			}
			if ips, regs := w.Len(); ips != 1 || regs != 1 {
				t.Fatalf("a refused blob changed the whitelist: %d,%d", ips, regs)
			}
		})
	}
	t.Run("over the size limit", func(t *testing.T) {
		big := make([]byte, MaxStateBytes+1) // untouched pages: nearly free
		if err := New(Options{}).UnmarshalState(big); !errors.Is(err, ErrState) {
			t.Fatalf("err = %v", err)
		}
	})
}

func FuzzUnmarshalState(f *testing.F) {
	c := newClock()
	w, _ := newWL(f, c)
	w.Upsert(reg1000(c, "192.0.2.1"))
	w.Upsert(reg1000(c, "2001:db8::1"))
	blob, _ := w.MarshalState()
	f.Add(blob)
	f.Add([]byte(`{"version":1,"registrations":null}`))
	f.Add([]byte(`{"version":1,"registrations":[{"ip":"::ffff:1.2.3.4%eth0","expires_at":"9999-12-31T23:59:59Z"}]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		w := New(Options{Now: c.Now})
		if err := w.UnmarshalState(in); err != nil {
			if !errors.Is(err, ErrState) {
				t.Fatalf("error %v does not wrap ErrState", err)
			}
			return
		}
		for _, e := range w.Entries() {
			if !e.IP.IsValid() || e.IP.Is4In6() || e.IP.Zone() != "" {
				t.Fatalf("bad address %v", e.IP)
			}
			for _, r := range e.Registrations {
				if !r.ExpiresAt.Add(DefaultGrace).After(c.Now()) {
					t.Fatalf("expired registration loaded: %+v", r)
				}
			}
		}
		if _, err := w.MarshalState(); err != nil {
			t.Fatal(err)
		}
	})
}
