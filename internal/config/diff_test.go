package config

import (
	"slices"
	"testing"
)

func TestDiff(t *testing.T) {
	f := false
	one := 1.0
	tests := []struct {
		name   string
		change func(*Config)
		want   []string
	}{
		{"nothing", func(*Config) {}, nil},
		{"leaf", func(c *Config) { c.Jail.MaxRetry = 3 }, []string{"jail.maxretry"}},
		{"nested leaves", func(c *Config) { c.ESL.Address = "127.0.0.1:1"; c.ESL.MaxFrameBytes = 4096 },
			[]string{"esl.address", "esl.max_frame_bytes"}},
		{"list", func(c *Config) { c.NeverBan = []string{"192.0.2.1"} }, []string{"never_ban"}},
		{"empty list equals nil", func(c *Config) { c.ESL.Addresses = []string{} }, nil},
		{"rule enabled", func(c *Config) { c.Rules["auth_challenge"] = Rule{Weight: c.Rules["auth_challenge"].Weight} },
			[]string{"rules.auth_challenge.enabled"}},
		{"new rule", func(c *Config) { c.Rules["flood"] = Rule{Enabled: &f, Weight: &one} },
			[]string{"rules.flood.enabled", "rules.flood.weight"}},
		{"secret named, never shown", func(c *Config) { c.API.Token = "s3cret" }, []string{"api.token"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := Default(), Default()
			tc.change(&b)
			if got := Diff(a, b); !slices.Equal(got, tc.want) {
				t.Errorf("Diff = %v, want %v", got, tc.want)
			}
			if got := Diff(b, a); !slices.Equal(got, tc.want) {
				t.Errorf("reverse Diff = %v, want %v", got, tc.want)
			}
		})
	}
}
