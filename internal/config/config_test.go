package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sipwarden.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsAreValidAndUseful(t *testing.T) {
	cfg, err := Load("", nil)
	if err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if cfg.ESL.Address != "127.0.0.1:8021" || cfg.ESL.Password != "ClueCon" {
		t.Errorf("esl defaults = %q/%q", cfg.ESL.Address, cfg.ESL.Password)
	}
	if cfg.API.Listen != "127.0.0.1:9091" || cfg.Ban.Backend != BackendIPSet {
		t.Errorf("api/ban defaults = %q/%q", cfg.API.Listen, cfg.Ban.Backend)
	}
	if cfg.Jail.Findtime != 10*time.Minute || cfg.Jail.MaxRetry != 5 || cfg.Jail.Bantime != time.Hour {
		t.Errorf("jail defaults = %+v", cfg.Jail)
	}
}

func TestFileAndEnvOverride(t *testing.T) {
	p := write(t, `
esl:
  address: 10.0.0.5:8021
  password: ${FS_PW}
jail:
  findtime: 2m
  maxretry: 3
rules:
  auth_challenge: {enabled: true, weight: 0.1}
never_ban: [192.0.2.0/24]
`)
	env := []string{
		"FS_PW=s3cret",
		"SIPWARDEN_API_LISTEN=127.0.0.1:19091",
		"SIPWARDEN_BAN_BACKEND=dry-run",
		"SIPWARDEN_LOGS_FILES=/a.log, /b.log",
		"SIPWARDEN_JAIL_BANTIME=90m",
		"SIPWARDEN_RULES_FLOOD_WEIGHT=2.5",
	}
	cfg, err := Load(p, env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ESL.Address != "10.0.0.5:8021" || cfg.ESL.Password != "s3cret" {
		t.Errorf("esl = %q/%q", cfg.ESL.Address, cfg.ESL.Password)
	}
	if cfg.API.Listen != "127.0.0.1:19091" || cfg.Ban.Backend != BackendDryRun {
		t.Errorf("env overrides not applied: %q %q", cfg.API.Listen, cfg.Ban.Backend)
	}
	if len(cfg.Logs.Files) != 2 || cfg.Logs.Files[1] != "/b.log" {
		t.Errorf("logs.files = %q", cfg.Logs.Files)
	}
	if cfg.Jail.Bantime != 90*time.Minute || cfg.Jail.Findtime != 2*time.Minute || cfg.Jail.MaxRetry != 3 {
		t.Errorf("jail = %+v", cfg.Jail)
	}
	w, off := cfg.RuleWeights()
	if w["flood"] != 2.5 || w["auth_challenge"] != 0.1 || off["auth_challenge"] {
		t.Errorf("weights = %v disabled = %v", w, off)
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	tok := filepath.Join(dir, "tok")
	os.WriteFile(pw, []byte("fromfile\n"), 0o600)
	os.WriteFile(tok, []byte("t0ken\n"), 0o600)
	p := write(t, "esl:\n  password_file: "+pw+"\napi:\n  token_file: "+tok+"\n")
	cfg, err := Load(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ESL.Password != "fromfile" || cfg.API.Token != "t0ken" {
		t.Errorf("secrets = %q %q", cfg.ESL.Password, cfg.API.Token)
	}
	_, err = Load(write(t, "api:\n  token_file: "+filepath.Join(dir, "missing")+"\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "api.token_file") {
		t.Errorf("missing token file: err = %v", err)
	}
}

func TestUnknownKeyRejected(t *testing.T) {
	_, err := Load(write(t, "jail:\n  maxretyr: 3\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "maxretyr") {
		t.Fatalf("typo accepted: %v", err)
	}
}

func TestUnsetVariableRejected(t *testing.T) {
	_, err := Load(write(t, "esl:\n  password: ${NOPE_NOT_SET}\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "NOPE_NOT_SET") {
		t.Fatalf("unset variable accepted: %v", err)
	}
}

func TestEveryValidationErrorReported(t *testing.T) {
	p := write(t, `
esl:
  address: "no-port"
  password: ""
logs:
  max_line_bytes: 10
sip:
  hep_listen: "x"
  capture_ports: [0]
  toll_patterns: ["("]
rules:
  not_a_rule: {weight: 1}
  flood: {weight: -1}
jail:
  findtime: 0s
  maxretry: 0
  factor: 0.5
whitelist:
  static: ["10.0.0.0/33"]
never_ban: ["nonsense"]
ban:
  backend: iptables
  set_v4: "bad name with spaces"
  v6_prefix: 200
api:
  listen: ""
log:
  level: loud
  format: xml
`)
	_, err := Load(p, []string{"SIPWARDEN_JAIL_BANTIME=forever"})
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, key := range []string{
		"esl.addresses[0]", "esl.password", "logs.max_line_bytes", "sip.hep_listen",
		"sip.capture_ports[0]", "sip.toll_patterns[0]", "rules.not_a_rule", "rules.flood.weight",
		"jail.findtime", "jail.maxretry", "jail.factor", "whitelist.static[0]", "never_ban[0]",
		"ban.backend", "ban.set_v4", "ban.v6_prefix", "api.listen", "log.level", "log.format",
		"jail.bantime (SIPWARDEN_JAIL_BANTIME)",
	} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not name %s", key)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7/32"},
		{"192.0.2.7/24", "192.0.2.0/24"},
		{"::ffff:192.0.2.7", "192.0.2.7/32"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"2001:db8::1/64", "2001:db8::/64"},
	} {
		got, err := ParsePrefix(tc.in)
		if err != nil || got.String() != tc.want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}
