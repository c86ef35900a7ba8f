package api

import (
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/jail"
	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/protect"
)

// GET /v1/protected names who is failing at a protected address;
// /v1/offenders and /v1/check say quarantined instead of protected.
func TestProtectedEndpoints(t *testing.T) {
	g, err := protect.New(protect.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, testToken, func(o *Options) { o.Protect = g })
	office := netip.MustParseAddr("203.0.113.10")
	now := time.Now()
	for i := range 6 {
		o := offense.Offense{IP: office, Port: 40004, Rule: offense.AuthFailure, Source: offense.SourceESL, User: "1004",
			Detail: "Yealink SIP-T46S", Verified: true, Time: now.Add(time.Duration(i-6) * time.Second)}
		f.jail.Offend(o)
		g.Offend(o, protect.Ladder{Bantime: time.Hour})
	}
	code, body := f.do(t, call{method: "GET", path: "/v1/protected"})
	if code != 200 {
		t.Fatalf("GET /v1/protected: %d %v", code, body)
	}
	offs, _ := body["protected"].([]any)
	if len(offs) != 1 {
		t.Fatalf("protected %v", body)
	}
	o := offs[0].(map[string]any)
	failing, _ := o["failing"].([]any)
	if o["ip"] != "203.0.113.10" || o["state"] != "quarantined" || len(failing) != 1 {
		t.Fatalf("office %v", o)
	}
	u := failing[0].(map[string]any)
	if u["user"] != "1004" || u["port"] != float64(40004) || u["user_agent"] != "Yealink SIP-T46S" || u["count"] != float64(6) {
		t.Fatalf("failing %v", u)
	}
	_, body = f.do(t, call{method: "GET", path: "/v1/offenders"})
	list, _ := body["offenders"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["state"] != "quarantined" {
		t.Fatalf("offenders %v (want state quarantined; jail said %s)", body, jail.StateProtected)
	}
	_, body = f.do(t, call{method: "GET", path: "/v1/check/203.0.113.10"})
	if body["protection"] != "quarantined" || body["reason"] != "registered" {
		t.Fatalf("check %v", body)
	}
}

// GET /v1/protected lists the extensions under distributed guessing
// ("targets"); without the token off loopback the extension and the sample
// addresses are withheld.
func TestProtectedTargets(t *testing.T) {
	g, err := protect.New(protect.Options{Registerer: prometheus.NewRegistry(), DistributedAddresses: 3})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, testToken, func(o *Options) { o.Protect = g })
	for i := range 3 {
		g.Failure(offense.Offense{IP: netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i)}), Rule: offense.AuthFailure, User: "1009", Time: time.Now()})
	}
	code, body := f.do(t, call{method: "GET", path: "/v1/protected"})
	targets, _ := body["targets"].([]any)
	if code != 200 || len(targets) != 1 {
		t.Fatalf("GET /v1/protected: %d %v", code, body)
	}
	tg := targets[0].(map[string]any)
	if tg["user"] != "1009" || tg["addresses"] != float64(3) || tg["targeted"] != true || len(tg["sample"].([]any)) != 3 {
		t.Fatalf("target %v", tg)
	}
	_, body = f.do(t, call{method: "GET", path: "/v1/protected", token: "-", remote: "198.51.100.50:5555"})
	targets, _ = body["targets"].([]any)
	if body["redacted"] != true || len(targets) != 1 {
		t.Fatalf("unauthenticated: %v", body)
	}
	if tg := targets[0].(map[string]any); tg["user"] != "" || tg["sample"] != nil || tg["targeted"] != true {
		t.Fatalf("unauthenticated target %v: the extension must be withheld", tg)
	}
}
