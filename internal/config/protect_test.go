package config

import (
	"strings"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/ipset"
	"github.com/sipwarden/sipwarden/internal/protect"
)

func TestProtectSection(t *testing.T) {
	cfg, err := Load(write(t, "protect:\n  max_ports: 5\n  window: 30m\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Protect.MaxPorts != 5 || cfg.Protect.Window != 30*time.Minute || cfg.Protect.MaxUsers != protect.DefaultMaxUsers ||
		cfg.Protect.QuarantineV4 != ipset.DefaultQuarantineV4 || cfg.Protect.ThrottleRate != ipset.DefaultThrottleRate {
		t.Fatalf("protect %+v", cfg.Protect)
	}
	_, err = Load(write(t, "protect:\n  max_users: 0\n  window: 10ms\n  quarantine_v4: sipwarden4\n  throttle_v6: \"\"\n"), nil)
	for _, key := range []string{"protect.max_users", "protect.window", "protect.quarantine_v4", "protect.throttle_v6"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("no error for %s: %v", key, err)
		}
	}
	if _, err := Load(write(t, "protect:\n  max_port: 5\n"), nil); err == nil {
		t.Error("a typo under protect was accepted")
	}
}
