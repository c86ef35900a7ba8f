package config

import (
	"strings"
	"testing"
	"time"
)

// TestErrorsSpeakKeyPaths is issue 15 item 6: every message names the key
// path and says what was expected in the operator's words, never a Go type,
// and one bad value (even a type error) hides no other problem.
func TestErrorsSpeakKeyPaths(t *testing.T) {
	p := write(t, `
jail:
  bantme: 1h
  bantime: 1hour
  maxretry: lots
  findtime: 600
esl:
  addresses: 127.0.0.1:8021
  disabled: maybe
sip:
  flood_requests: 2.5
rules:
  flood: {weight: heavy, enabeld: true}
whitelist:
  static: ["10.0.0.0/33"]
logs:
  max_line_bytes: 10
`)
	_, err := Load(p, []string{"SIPWARDEN_JAIL_BANTME=2h", "SIPWARDEN_BAN_MAXELEMS=5", "SIPWARDEN_NONSENSE=1", "SIPWARDEN_JAIL_FINDTIME=soon", "SIPWARDEN_FREESWITCH=/x"})
	if err == nil {
		t.Fatal("bad config accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		"jail.bantme: unknown key, did you mean bantime?",
		`jail.bantime: "1hour" is not a duration (durations look like 90s, 10m, 1h)`,
		`jail.maxretry: must be a number, got "lots"`,
		`jail.findtime: "600" is not a duration (durations look like 90s, 10m, 1h; a bare number has no unit)`,
		"esl.addresses: must be a list",
		`esl.disabled: must be true or false, got "maybe"`,
		`sip.flood_requests: must be a whole number, got "2.5"`,
		`rules.flood.weight: must be a number, got "heavy"`,
		"rules.flood.enabeld: unknown key, did you mean enabled?",
		`whitelist.static[0]: "10.0.0.0/33" is not an address or CIDR`,
		"logs.max_line_bytes: must be at least 256", // Validate still runs after decode errors
		"SIPWARDEN_JAIL_BANTME: unknown environment variable, did you mean SIPWARDEN_JAIL_BANTIME?",
		"SIPWARDEN_BAN_MAXELEMS: unknown environment variable, did you mean SIPWARDEN_BAN_MAXELEM?",
		"SIPWARDEN_NONSENSE: unknown environment variable",
		`jail.findtime (SIPWARDEN_JAIL_FINDTIME): "soon" is not a duration`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	for _, goSpeak := range []string{"time.Duration", "config.", "!!str", "netip.", "strconv.", "unmarshal", "SIPWARDEN_FREESWITCH"} {
		if strings.Contains(msg, goSpeak) {
			t.Errorf("message speaks Go (%q):\n%s", goSpeak, msg)
		}
	}
	// Every decode line names the file and its line.
	for _, l := range strings.Split(msg, "\n") {
		if strings.Contains(l, "jail.") && !strings.HasPrefix(l, "SIPWARDEN") && !strings.Contains(l, "(SIPWARDEN_") && !strings.Contains(l, "line ") && !strings.Contains(l, "must be >=") {
			t.Errorf("decode error without line: %q", l)
		}
	}
}

// TestBadValueKeepsDefault: a key that fails to decode keeps its default
// and the rest of the file still applies.
func TestBadValueKeepsDefault(t *testing.T) {
	var cfg Config = Default()
	err := decodeYAML([]byte("jail:\n  bantime: forever\n  findtime: 3m\nban: {maxelem: 10}\n"), &cfg)
	if err == nil {
		t.Fatal("no error")
	}
	if cfg.Jail.Bantime != time.Hour || cfg.Jail.Findtime != 3*time.Minute || cfg.Ban.MaxElem != 10 {
		t.Errorf("jail = %+v ban.maxelem = %d", cfg.Jail, cfg.Ban.MaxElem)
	}
}

func TestDecodeShapes(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"not YAML", "jail: [\n", "not valid YAML"},
		{"top level list", "- a\n", "(top level): must be a mapping of keys"},
		{"section scalar", "jail: 5\n", "jail: must be a mapping of keys"},
		{"two documents", "jail: {}\n---\nesl: {}\n", "a second YAML document"},
		{"duplicate key", "jail:\n  bantime: 1h\n  bantime: 2h\n", "jail.bantime: key given twice"},
		{"far-off key", "zzzzzzzz: 1\n", "zzzzzzzz: unknown key (known here: esl, logs"},
		{"merge key", "base: &b {bantime: 1h}\n", "base: unknown key"},
		{"list of mappings", "never_ban: [{a: 1}]\n", "never_ban[0]: must be a single value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			err := decodeYAML([]byte(tc.yaml), &cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	cfg := Default()
	if err := decodeYAML([]byte("# only a comment\n"), &cfg); err != nil {
		t.Errorf("empty file: %v", err)
	}
	if err := decodeYAML([]byte("esl:\njail:\n  maxretry: 3\nrules:\n  flood: {weight: 2}\n"), &cfg); err != nil || cfg.Jail.MaxRetry != 3 || *cfg.Rules["flood"].Weight != 2 || cfg.ESL.Address != "127.0.0.1:8021" {
		t.Errorf("err = %v cfg.jail = %+v", err, cfg.Jail)
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"findtime", "maxretry", "bantime", "factor", "maxbantime", "max_offenders", "state_file"}
	for got, want := range map[string]string{
		"bantme": "bantime", "maxretyr": "maxretry", "BANTIME": "bantime", "max_offender": "max_offenders",
		"statefile": "state_file", "colour": "", "x": "",
	} {
		if s := suggest(got, known); s != want {
			t.Errorf("suggest(%q) = %q, want %q", got, s, want)
		}
	}
}

func TestTokenPath(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{API: API{TokenFile: "/etc/sipwarden/token"}, Jail: Jail{StateFile: "/var/lib/x/state.json"}}, "/etc/sipwarden/token"},
		{Config{Jail: Jail{StateFile: "/srv/sw/state.json"}}, "/srv/sw/api.token"},
		{Config{}, ""},
	} {
		if got := tc.cfg.TokenPath(); got != tc.want {
			t.Errorf("TokenPath(%+v) = %q, want %q", tc.cfg.API, got, tc.want)
		}
	}
}
