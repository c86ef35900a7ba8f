package config

import (
	"strings"
	"testing"
)

// A HEP listener off loopback must name who may send HEP: anyone who
// reaches it could otherwise forge SIP from any address (issue 12 finding 1).
func TestHEPAllowRequiredOffLoopback(t *testing.T) {
	for _, tc := range []struct {
		name, sip string
		bad       []string // key paths the error must name; none: valid
	}{
		{"loopback v4", "hep_listen: 127.0.0.1:9060", nil},
		{"loopback v6", "hep_listen: '[::1]:9060'", nil},
		{"localhost", "hep_listen: localhost:9060", nil},
		{"every address", "hep_listen: 0.0.0.0:9060", []string{"sip.hep_allow"}},
		{"empty host", "hep_listen: ':9060'", []string{"sip.hep_allow"}},
		{"public with allow", "hep_listen: 0.0.0.0:9060\n  hep_allow: [192.0.2.2, 10.0.0.0/8]\n  hep_capture_ids: [100]", nil},
		{"bad entries", "hep_listen: 127.0.0.1:9060\n  hep_allow: [nope]\n  hep_capture_ids: [-1]\n  servers: [300.1.1.1]",
			[]string{"sip.hep_allow[0]", "sip.hep_capture_ids[0]", "sip.servers[0]"}},
		{"servers", "servers: [192.0.2.2, '2001:db8::/64']", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(write(t, "esl:\n  disabled: true\nsip:\n  "+tc.sip+"\n"), nil)
			if len(tc.bad) == 0 {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, k := range tc.bad {
				if !strings.Contains(err.Error(), k) {
					t.Errorf("error does not name %s: %v", k, err)
				}
			}
		})
	}
}
