package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// sw runs the built binary with env added to a minimal environment (no
// SIPWARDEN_* from the test's own) and returns exit code, stdout, stderr.
func sw(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "TZ=UTC", "SIPWARDEN_CONFIG="}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return exitCode(err), out.String(), errb.String()
}

// TestConfigErrorsFromTheBinary is issue 15 item 6 through the binary:
// `config check` and `run` print every problem by key path, in words, and
// exit 2; a typo in an environment override is one of them.
func TestConfigErrorsFromTheBinary(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(p, []byte("jail:\n  bantme: 1h\n  bantime: 1hour\n  findtime: 600\nwhitelist:\n  static: [10.0.0.0/33]\nban:\n  backend: nope\n"), 0o600)
	env := []string{"SIPWARDEN_JAIL_BANTME=2h"}
	for _, args := range [][]string{{"config", "check", "-config", p}, {"run", "-config", p}, {"config", "check", p}} {
		code, stdout, stderr := sw(t, env, args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s%s", args, code, stdout, stderr)
		}
		for _, want := range []string{
			"jail.bantme: unknown key, did you mean bantime?",
			`jail.bantime: "1hour" is not a duration (durations look like 90s, 10m, 1h)`,
			`jail.findtime: "600" is not a duration`,
			`whitelist.static[0]: "10.0.0.0/33" is not an address or CIDR`,
			`ban.backend: must be "ipset" or "dry-run"`,
			"SIPWARDEN_JAIL_BANTME: unknown environment variable, did you mean SIPWARDEN_JAIL_BANTIME?",
		} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%v: stderr lacks %q:\n%s", args, want, stderr)
			}
		}
		if strings.Contains(stderr, "time.Duration") || strings.Contains(stderr, "config.Jail") || strings.Contains(stderr, "sipwarden running") {
			t.Errorf("%v: Go types or a start in:\n%s", args, stderr)
		}
	}
	// An unknown variable fails even with no file at all.
	if code, _, stderr := sw(t, []string{"SIPWARDEN_BAN_BACKNED=dry-run"}, "config", "check"); code != 2 || !strings.Contains(stderr, "did you mean SIPWARDEN_BAN_BACKEND?") {
		t.Errorf("env typo without a file: %d %s", code, stderr)
	}
}

// TestConfigDefaults: `config defaults` prints the shipped annotated file
// byte for byte, and it validates.
func TestConfigDefaults(t *testing.T) {
	code, out, stderr := sw(t, nil, "config", "defaults")
	if code != 0 {
		t.Fatalf("config defaults: %d %s", code, stderr)
	}
	shipped, err := os.ReadFile("../../examples/sipwarden.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if out != string(shipped) {
		t.Error("config defaults differs from examples/sipwarden.yaml")
	}
	p := filepath.Join(t.TempDir(), "defaults.yaml")
	os.WriteFile(p, []byte(out), 0o600)
	if code, out, stderr := sw(t, nil, "config", "check", "-config", p); code != 0 || !strings.Contains(out, "valid") {
		t.Errorf("config check of the defaults: %d %s %s", code, out, stderr)
	}
}

// TestHelpOnStdout: every command's -h goes to stdout, exit 0.
func TestHelpOnStdout(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"run", "-h"}, {"replay", "-h"}, {"check", "-h"}, {"bans", "-h"}, {"bans", "list", "-h"},
		{"bans", "add", "-h"}, {"bans", "del", "-h"}, {"whitelist", "-h"}, {"offenders", "-h"}, {"status", "-h"},
		{"config", "-h"}, {"config", "check", "-h"}, {"config", "defaults", "-h"},
	} {
		code, out, stderr := sw(t, nil, args...)
		if code != 0 || !strings.Contains(strings.ToLower(out), "usage") || stderr != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, stderr)
		}
	}
}

// daemon starts `sipwarden run` with a dry-run backend on a free port; the
// token is generated next to the state file, as with the shipped config.
type testDaemon struct {
	cfg, dir, addr string
	metrics        string // api.metrics_listen
	cmd            *exec.Cmd
	stderr         *syncBuf
	exited         chan error
}

func startDaemon(t *testing.T) *testDaemon {
	t.Helper()
	d := &testDaemon{dir: t.TempDir(), addr: freePort(t), metrics: freePort(t), stderr: &syncBuf{}, exited: make(chan error, 1)}
	d.cfg = filepath.Join(d.dir, "sipwarden.yaml")
	os.WriteFile(d.cfg, []byte(fmt.Sprintf(`esl:
  disabled: true
sip:
  hep_listen: ""
jail:
  state_file: %s/state.json
ban:
  backend: dry-run
api:
  listen: %s
  metrics_listen: %s
`, d.dir, d.addr, d.metrics)), 0o600)
	d.cmd = exec.Command(binary, "run", "-config", d.cfg)
	d.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(d.stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + d.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return d
		}
		select {
		case err := <-d.exited:
			t.Fatalf("daemon exited: %v\n%s", err, d.stderr.String())
		case <-time.After(30 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not answering\n%s", d.stderr.String())
		}
	}
}

func (d *testDaemon) stop() {
	if d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
}

// TestCLIAgainstDaemon is issue 15 items 2, 7 and 9 and issue 12 item 8
// through the binary: flags after the address, a negative -for refused, an
// -api without scheme, the generated token found through -config, never-ban
// answers "do not ban", dry-run says "would ban" everywhere, times to the
// second, -json listings, status, and a stopped daemon named as such.
func TestCLIAgainstDaemon(t *testing.T) {
	d := startDaemon(t)
	cli := func(args ...string) (int, string, string) {
		return sw(t, []string{"SIPWARDEN_CONFIG=" + d.cfg}, args...)
	}
	tokFile := filepath.Join(d.dir, "api.token")
	fi, err := os.Stat(tokFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated token %s: %v %v, want mode 0600", tokFile, fi, err)
	}
	if strings.Contains(d.stderr.String(), readFile(t, tokFile)) {
		t.Error("the token is in the log")
	}

	// Without the token (the built-in defaults point elsewhere): refused.
	code, _, stderr := sw(t, nil, "bans", "add", "-api", d.addr, "198.51.100.20")
	if code != 2 || !strings.Contains(stderr, "401") || !strings.Contains(stderr, "token") {
		t.Errorf("bans add without token: %d %s", code, stderr)
	}
	// Flags after the address; the token found through the config.
	code, out, stderr := cli("bans", "add", "198.51.100.9", "-for", "10m", "-reason", "cli test")
	if code != 0 || !strings.Contains(out, "would ban 198.51.100.9 until ") || !strings.Contains(out, "dry-run") {
		t.Fatalf("bans add IP -for 10m: %d %q %s", code, out, stderr)
	}
	// The log and the metrics say dry-run too.
	if !strings.Contains(d.stderr.String(), "would ban (dry-run") || strings.Contains(d.stderr.String(), "msg=banned") {
		t.Errorf("the daemon's log does not say would ban:\n%s", d.stderr.String())
	}
	resp, err := http.Get("http://" + d.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var metrics bytes.Buffer
	metrics.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(metrics.String(), `sipwarden_ban_backend{backend="dry-run",fallback="false"} 1`) {
		t.Errorf("no sipwarden_ban_backend dry-run sample")
	}
	// api.metrics_listen serves the metrics and the probes, no /v1.
	for path, want := range map[string]int{"/metrics": 200, "/healthz": 200, "/v1/bans": 404, "/v1/whitelist": 404, "/": 404} {
		resp, err := http.Get("http://" + d.metrics + path)
		if err != nil {
			t.Fatalf("metrics listener: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("metrics listener %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	for _, dur := range []string{"-5m", "0s"} {
		if code, _, stderr := cli("bans", "add", "-for", dur, "198.51.100.10"); code != 2 || !strings.Contains(stderr, "positive duration") {
			t.Errorf("-for %s: %d %s", dur, code, stderr)
		}
	}
	if code, _, stderr := cli("bans", "add", "127.0.0.1"); code != 1 || !strings.Contains(stderr, "refused") {
		t.Errorf("bans add loopback: %d %s", code, stderr)
	}
	code, out, _ = cli("bans", "list")
	if code != 0 || !strings.Contains(out, "would ban") || !strings.Contains(out, "cli test") {
		t.Errorf("bans list: %d\n%s", code, out)
	}
	if !regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC`).MatchString(out) || regexp.MustCompile(`\d\d:\d\d:\d\d\.\d`).MatchString(out) {
		t.Errorf("bans list times are not local time to the second:\n%s", out)
	}
	code, out, _ = cli("bans", "list", "-json")
	var list struct {
		Bans []struct {
			IP     string `json:"ip"`
			DryRun *bool  `json:"dry_run"`
		} `json:"bans"`
		DryRun bool `json:"dry_run"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Bans) != 1 || list.Bans[0].DryRun == nil || !*list.Bans[0].DryRun || !list.DryRun {
		t.Errorf("bans list -json: %d %s", code, out)
	}

	// check: -api without a scheme; never-ban exits 0 (do not ban).
	for ip, want := range map[string]int{"127.0.0.1": 0, "::1": 0, "198.51.100.77": 1} {
		code, out, stderr := sw(t, nil, "check", ip, "-api", d.addr)
		if code != want {
			t.Errorf("check %s: exit %d, want %d: %s %s", ip, code, want, out, stderr)
		}
		if want == 0 && !strings.Contains(out, "never-ban") {
			t.Errorf("check %s: %q", ip, out)
		}
	}
	if code, out, _ := sw(t, nil, "check", "-json", "-api", "http://"+d.addr+"/", "127.0.0.1"); code != 0 || !strings.Contains(out, `"ban_allowed": false`) {
		t.Errorf("check -json: %d %s", code, out)
	}

	code, out, stderr = cli("status")
	if code != 0 || !strings.Contains(out, "bans: 1 active") || !strings.Contains(out, "dry-run") || !strings.Contains(out, "top offenders") {
		t.Errorf("status: %d\n%s%s", code, out, stderr)
	}
	if !strings.Contains(out, "198.51.100.9  would ban") {
		t.Errorf("status shows the dry-run ban as a real one:\n%s", out)
	}
	if code, out, _ := cli("offenders"); code != 0 || !strings.Contains(out, "would ban") || strings.Contains(out, " banned ") {
		t.Errorf("offenders in dry-run: %d\n%s", code, out)
	}
	if code, out, _ := cli("status", "-json"); code != 0 || !strings.Contains(out, `"dry_run": true`) {
		t.Errorf("status -json: %d %s", code, out)
	}
	for _, args := range [][]string{{"whitelist"}, {"whitelist", "-json"}, {"offenders"}, {"offenders", "-json"}} {
		if code, out, stderr := cli(args...); code != 0 || out == "" {
			t.Errorf("%v: %d %s %s", args, code, out, stderr)
		}
	}
	if code, out, _ := cli("bans", "del", "198.51.100.9"); code != 0 || !strings.Contains(out, "unbanned") {
		t.Errorf("bans del: %d %s", code, out)
	}

	// A stopped daemon is named as such.
	d.stop()
	code, _, stderr = cli("bans", "list")
	if want := "sipwarden is not running at http://" + d.addr + ": start it or pass -api"; code != 2 || !strings.Contains(stderr, want) {
		t.Errorf("stopped daemon: %d %q, want %q", code, stderr, want)
	}
	if code, _, _ := sw(t, nil, "check", "-api", d.addr, "198.51.100.1"); code != 2 {
		t.Errorf("check against a stopped daemon: exit %d, want 2", code)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestReplayRefusesUnknownKinds is issue 15 item 8: what replay cannot
// read is refused by name with exit 2, never "0 sources".
func TestReplayRefusesUnknownKinds(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "freeswitch.log")
	src, err := os.ReadFile("../../examples/lab/freeswitch.log")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(log, src, 0o600)
	random := make([]byte, 64<<10)
	rand.Read(random)
	os.WriteFile(filepath.Join(dir, "random.bin"), random, 0o600)
	for tool, ext := range map[string]string{"xz": ".xz", "zstd": ".zst", "bzip2": ".bz2"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s missing", tool)
			}
			t.Logf("skipping %s: needs %s", ext, tool)
			continue
		}
		out, err := exec.Command(tool, "-c", log).Output()
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "freeswitch.log"+ext), out, 0o600)
	}
	gzRandom := filepath.Join(dir, "random.gz")
	if out, err := exec.Command("gzip", "-c", filepath.Join(dir, "random.bin")).Output(); err == nil {
		os.WriteFile(gzRandom, out, 0o600)
	}
	for name, want := range map[string]string{
		"random.bin": "neither a FreeSWITCH log nor a pcap/pcapng capture", "random.gz": "inside the gzip",
		"freeswitch.log.xz": "xz-compressed", "freeswitch.log.zst": "zstd-compressed", "freeswitch.log.bz2": "bzip2-compressed",
		".": "is a directory",
	} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		code, out, stderr := sw(t, nil, "replay", "-q", log, p)
		if code != 2 || !strings.Contains(stderr, want) || strings.Contains(out, "sources") {
			t.Errorf("replay %s: exit %d, stderr %q, stdout %q; want 2 and %q", name, code, stderr, out, want)
		}
	}
	// What it reads still works, gzip included.
	gz := filepath.Join(dir, "freeswitch.log.gz")
	if out, err := exec.Command("gzip", "-c", log).Output(); err == nil {
		os.WriteFile(gz, out, 0o600)
	}
	if code, out, stderr := sw(t, nil, "replay", "-q", log, gz, "../../examples/lab/night.pcap"); code != 0 || !strings.Contains(out, "sources") {
		t.Errorf("replay of good inputs: %d %s %s", code, out, stderr)
	}
}

var update = flag.Bool("update", false, "rewrite docs/commands.md from the flag definitions")

// TestDocsCommands: docs/commands.md is what the flag definitions say.
func TestDocsCommands(t *testing.T) {
	var b bytes.Buffer
	writeCommandsDoc(&b)
	const path = "../../docs/commands.md"
	if *update {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, b.Bytes()) {
		t.Fatalf("docs/commands.md is out of date (%v): go test ./cmd/sipwarden -run TestDocsCommands -update", err)
	}
	for _, c := range helpPages {
		if !strings.Contains(b.String(), "## sipwarden "+strings.Join(c, " ")) {
			t.Errorf("no section for %v", c)
		}
	}
}

// TestDocsContract: docs/ names every rule, every endpoint and the
// metrics and keys this area adds.
func TestDocsContract(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile("../../docs/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	rules := read("rules.md")
	for _, r := range offense.Rules {
		if !strings.Contains(rules, "`"+string(r)+"`") {
			t.Errorf("docs/rules.md does not name rule %s", r)
		}
	}
	apiDoc := read("api.md")
	for _, ep := range []string{"`GET /`", "`GET /metrics`", "`GET /healthz`", "`GET /readyz`", "`GET /v1/status`", "`GET /v1/whitelist`",
		"`GET /v1/whitelist/{ip}`", "`GET /v1/check/{ip}`", "`GET /v1/bans`", "`POST /v1/bans`", "`DELETE /v1/bans/{ip}`", "`GET /v1/offenders"} {
		if !strings.Contains(apiDoc, ep) {
			t.Errorf("docs/api.md does not document %s", ep)
		}
	}
	if m := read("metrics.md"); !strings.Contains(m, "`ban_backend{backend,fallback}`") {
		t.Error("docs/metrics.md lacks ban_backend")
	}
	if c := read("configuration.md"); !strings.Contains(c, "metrics_listen") || !strings.Contains(c, "token_file") {
		t.Error("docs/configuration.md lacks the api keys")
	}
}

// TestConfigCheckWarnsAboutTheHost is issue 15 item 5 as far as `config
// check` can see it: a missing state directory, a log path that is a
// directory or missing, no place for the API token, each one line, before
// the daemon ever starts.
func TestConfigCheckWarnsAboutTheHost(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	os.WriteFile(p, []byte(fmt.Sprintf("logs:\n  files: [%s, %s/missing.log]\njail:\n  state_file: %s/nope/state.json\n", dir, dir, dir)), 0o600)
	code, out, stderr := sw(t, nil, "config", "check", "-config", p)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, stderr)
	}
	for _, want := range []string{
		"warning: jail.state_file: the directory " + dir + "/nope does not exist",
		"warning: api.token_file: the directory " + dir + "/nope does not exist",
		"warning: logs.files[0]: " + dir + " is a directory",
		"warning: logs.files[1]: " + dir + "/missing.log does not exist",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	os.WriteFile(p, []byte(fmt.Sprintf("jail:\n  state_file: %s/state.json\n", dir)), 0o600)
	if code, out, _ := sw(t, nil, "config", "check", "-config", p); code != 0 || strings.Contains(out, "warning") {
		t.Errorf("a ready host warns: %d %s", code, out)
	}
}

// TestReplayWithoutRegistrationsSaysSo is issue 15 item 3: replaying logs
// alone names the missing registration source and how to get one, even
// with -q; with -registrations it is silent.
func TestReplayWithoutRegistrationsSaysSo(t *testing.T) {
	code, out, stderr := sw(t, nil, "replay", "-q", "../../examples/lab/freeswitch.log")
	if code != 0 || !strings.Contains(stderr, "no registration source") || !strings.Contains(stderr, "fs_cli -x 'show registrations as json' > regs.json") ||
		!strings.Contains(stderr, "-registrations regs.json") || !strings.Contains(out, "sources") {
		t.Errorf("logs alone: %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	code, _, stderr = sw(t, nil, "replay", "-q", "-registrations", "../../examples/lab/registrations.json", "../../examples/lab/freeswitch.log")
	if code != 0 || strings.Contains(stderr, "no registration source") {
		t.Errorf("with -registrations: %d %s", code, stderr)
	}
}
