// Command sipwarden protects FreeSWITCH servers from SIP attacks without
// locking out the offices that use them. See README.md and docs/.
//
// main only parses flags, loads config and hands over to the daemon,
// replay and api packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sipwarden/sipwarden/internal/api"
	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/daemon"
	"github.com/sipwarden/sipwarden/internal/replay"
)

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

// DefaultConfigPath is read by every command when neither -config nor
// SIPWARDEN_CONFIG is given and the file exists.
const DefaultConfigPath = "/etc/sipwarden/sipwarden.yaml"

// Commit is stamped at build time (-ldflags "-X main.Commit=..."); else the
// VCS revision Go records, else "unknown".
var Commit = ""

const usage = `sipwarden protects FreeSWITCH from SIP attacks without banning registered offices.

Usage:
  sipwarden run       [-config FILE]                          the daemon
  sipwarden replay    [-config FILE] [-format table|json] [-registrations FILE] [-q] FILE...
  sipwarden check     [-api URL] [-q] [-json] IP              exit 0 do not ban (whitelisted or never-ban), 1 bannable, 2 error
  sipwarden bans      list [-json] | add [-for DUR] [-reason TEXT] IP | del IP
  sipwarden whitelist [-json]                                 static entries and live registrations
  sipwarden offenders [-json]                                 addresses the jail is watching
  sipwarden status    [-json]                                 Event Socket, registrations, bans, top offenders
  sipwarden config    check [-config FILE] | defaults
  sipwarden version
  sipwarden manpage | completion bash                          sipwarden(8) and bash completion, from the flags

Every command reads -config FILE, else $SIPWARDEN_CONFIG, else ` + DefaultConfigPath + `
when it exists, else the built-in defaults. The commands that talk to the daemon
take -api URL (default: from api.listen) and -token-file FILE (default: the
config's api.token, api.token_file, or the token the daemon generated).

Run 'sipwarden COMMAND -h' for a command's flags.
`

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	io := cmdIO{stdout: stdout, stderr: stderr}
	switch args[0] {
	case "run":
		return io.run(args[1:], stdin)
	case "replay":
		return io.replay(args[1:])
	case "check":
		return io.check(args[1:])
	case "bans":
		return io.bans(args[1:])
	case "whitelist":
		return io.whitelist(args[1:])
	case "offenders":
		return io.offenders(args[1:])
	case "status":
		return io.status(args[1:])
	case "config":
		return io.config(args[1:])
	case "manpage":
		date := time.Now()
		if sec, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
			date = time.Unix(sec, 0).UTC()
		}
		writeManPage(stdout, daemon.Version, date)
		return 0
	case "completion":
		if len(args) != 2 || args[1] != "bash" {
			fmt.Fprintln(stderr, "Usage: sipwarden completion bash")
			return 2
		}
		writeBashCompletion(stdout)
		return 0
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sipwarden: unknown command %q\n\n%s", args[0], usage)
	return 2
}

type cmdIO struct{ stdout, stderr io.Writer }

func commit() string {
	if Commit != "" {
		return Commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

func versionString() string {
	return fmt.Sprintf("sipwarden %s (%s, commit %s, %s/%s)", daemon.Version, runtime.Version(), commit(), runtime.GOOS, runtime.GOARCH)
}

// command is one subcommand's flag set with its synopsis.
type command struct {
	fs       *flag.FlagSet
	synopsis string
	about    string
	cfg      *string
	io       cmdIO
}

func (c cmdIO) newCommand(name, synopsis, about string) *command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cmd := &command{fs: fs, synopsis: synopsis, about: about, io: c}
	cmd.cfg = fs.String("config", "", "YAML config file (default: $SIPWARDEN_CONFIG, else "+DefaultConfigPath+" if it exists, else built-in defaults)")
	return cmd
}

func (c *command) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n\n", c.synopsis)
	if c.about != "" {
		fmt.Fprintf(w, "%s\n\n", c.about)
	}
	fmt.Fprintln(w, "Flags:")
	c.fs.SetOutput(w)
	c.fs.PrintDefaults()
	c.fs.SetOutput(io.Discard)
}

// parse parses flags anywhere among the arguments (`bans add 198.51.100.9
// -for 10m` as well as `bans add -for 10m 198.51.100.9`); "--" ends the
// flags. -h prints the usage on stdout. done: stop with code.
func (c *command) parse(args []string) (pos []string, done bool, code int) {
	for {
		err := c.fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			c.printUsage(c.io.stdout)
			return nil, true, 0
		}
		if err != nil {
			fmt.Fprintf(c.io.stderr, "sipwarden %s: %v\n", c.fs.Name(), err)
			c.printUsage(c.io.stderr)
			return nil, true, 2
		}
		rest := c.fs.Args()
		if len(rest) == 0 {
			return pos, false, 0
		}
		if i := len(args) - len(rest) - 1; i >= 0 && args[i] == "--" {
			return append(pos, rest...), false, 0
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// fail prints one error line for the command and returns 2.
func (c *command) fail(format string, args ...any) int {
	fmt.Fprintf(c.io.stderr, "sipwarden %s: %s\n", c.fs.Name(), fmt.Sprintf(format, args...))
	return 2
}

func (c *command) set(name string) bool {
	set := false
	c.fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// configPath: -config, else $SIPWARDEN_CONFIG, else DefaultConfigPath when
// it exists (or exists but cannot be read: that must fail, not fall back),
// else "" (the built-in defaults). An explicitly empty value means the
// defaults.
func (c *command) configPath() string {
	if c.set("config") {
		return *c.cfg
	}
	if v, ok := os.LookupEnv("SIPWARDEN_CONFIG"); ok {
		return v
	}
	if _, err := os.Stat(DefaultConfigPath); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return DefaultConfigPath
	}
	return ""
}

// load loads the configuration; a failure is printed with every problem,
// one per line, and code 2.
func (c *command) load() (config.Config, bool) {
	path := c.configPath()
	cfg, err := config.Load(path, os.Environ())
	if err != nil {
		where := path
		if where == "" {
			where = "built-in defaults and environment"
		}
		fmt.Fprintf(c.io.stderr, "sipwarden: invalid configuration (%s):\n%s\n", where, indent(err.Error()))
		return cfg, false
	}
	return cfg, true
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

func (c cmdIO) run(args []string, stdin io.Reader) int {
	cmd := c.newCommand("run", "sipwarden run [-config FILE]", "Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads the configuration.")
	pos, done, code := cmd.parse(args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return cmd.fail("unexpected arguments %q", pos)
	}
	cfg, ok := cmd.load()
	if !ok {
		return 2
	}
	cfgPath := cmd.configPath()
	level := new(slog.LevelVar)
	logger := daemon.NewLogger(cfg.Log, c.stderr, level)
	// Signals first: a SIGTERM while New installs the firewall rules
	// cancels ctx, and Run's close removes them again.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d, err := daemon.New(cfg, daemon.Options{Logger: logger, LogLevel: level, Stdin: stdin})
	if err != nil {
		fmt.Fprintf(c.stderr, "sipwarden: %v\n", err)
		return 1
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	done2 := make(chan error, 1)
	go func() { done2 <- d.Run(ctx) }()
	for {
		select {
		case err := <-done2:
			if err != nil {
				fmt.Fprintf(c.stderr, "sipwarden: %v\n", err)
				return 1
			}
			return 0
		case <-hup:
			next, err := config.Load(cfgPath, os.Environ())
			if err != nil {
				logger.Error("reload rejected; keeping the running configuration", "errors", err.Error())
				continue
			}
			r, err := d.Reload(next)
			if err != nil {
				logger.Error("reload rejected; keeping the running configuration", "errors", err.Error())
				continue
			}
			logger.Info("configuration reloaded", "applied", strings.Join(r.Applied, ","), "needs_restart", strings.Join(r.NeedsRestart, ","))
		}
	}
}

func (c cmdIO) replay(args []string) int {
	cmd := c.newCommand("replay", "sipwarden replay [-config FILE] [-format table|json] [-registrations FILE] [-q] FILE...",
		"Judges FreeSWITCH logs (plain or .gz) and pcap/pcapng captures offline with the daemon's rules and jail. Bans nothing.")
	format := cmd.fs.String("format", "table", "output: table or json (one object per line)")
	regs := cmd.fs.String("registrations", "", "FreeSWITCH 'show registrations as json' output: IPs live there are protected")
	quiet := cmd.fs.Bool("q", false, "no progress on stderr")
	files, done, code := cmd.parse(args)
	if done {
		return code
	}
	if len(files) == 0 {
		cmd.fail("no input files (FreeSWITCH logs, plain or .gz, and pcap/pcapng captures)")
		cmd.printUsage(c.stderr)
		return 2
	}
	if *format != "table" && *format != "json" {
		return cmd.fail("-format must be table or json, got %q", *format)
	}
	for _, f := range files {
		if err := checkInputKind(f); err != nil {
			return cmd.fail("%v", err)
		}
	}
	cfg, ok := cmd.load()
	if !ok {
		return 2
	}
	opt := replay.Options{Config: cfg, Files: files, Registrations: *regs}
	if !*quiet {
		opt.Progress = c.stderr
	}
	rep, err := replay.Run(context.Background(), opt)
	if err != nil {
		return cmd.fail("%v", err)
	}
	if *regs == "" && rep.Learned == "" {
		// Printed even with -q: without it "ban" may name an office.
		fmt.Fprint(c.stderr, noRegistrationSource)
	}
	if *format == "json" {
		err = rep.WriteJSON(c.stdout)
	} else {
		err = rep.WriteTable(c.stdout)
	}
	if err != nil {
		return cmd.fail("%v", err)
	}
	return 0
}

const noRegistrationSource = `sipwarden replay: NOTICE: no registration source. There is no -registrations file and the
  captures hold no REGISTER that FreeSWITCH answered, so a registered office behind NAT cannot be
  told from an attacker: a "ban" below may be an office the daemon would protect. Get the
  registrations from FreeSWITCH and replay again:
    fs_cli -x 'show registrations as json' > regs.json
    sipwarden replay -registrations regs.json FILE...
`

// apiCommand is a command that talks to the running daemon.
type apiCommand struct {
	*command
	api       *string
	tokenFile *string
	jsonOut   *bool
	tokenHint string // where the token is, for a 401
}

func (c cmdIO) newAPICommand(name, synopsis, about string) *apiCommand {
	cmd := &apiCommand{command: c.newCommand(name, synopsis, about)}
	cmd.api = cmd.fs.String("api", "", "daemon API: URL or host:port (default: $SIPWARDEN_API, else from the config's api.listen)")
	cmd.tokenFile = cmd.fs.String("token-file", "", "file holding the API token (default: the config's api.token, else its api.token_file or the token generated next to jail.state_file)")
	return cmd
}

func (c *apiCommand) addJSON() {
	c.jsonOut = c.fs.Bool("json", false, "print the daemon's JSON answer")
}

// client builds the API client from the flags and the config.
func (c *apiCommand) client() (*api.Client, int) {
	cfg, ok := c.load()
	if !ok {
		return nil, 2
	}
	base := *c.api
	if base == "" {
		base = os.Getenv("SIPWARDEN_API")
	}
	if base == "" {
		base = baseURL(cfg.API.Listen)
	}
	u, err := normalizeURL(base)
	if err != nil {
		return nil, c.fail("-api %q: %v", base, err)
	}
	cl := &api.Client{Base: u, Token: cfg.API.Token}
	switch {
	case *c.tokenFile != "":
		b, err := os.ReadFile(*c.tokenFile)
		if err != nil {
			return nil, c.fail("-token-file: %v", err)
		}
		cl.Token = strings.TrimSpace(string(b))
	case cl.Token == "":
		// The token the daemon generated; unreadable is fine until a change
		// is asked for (the 401 then says where it is).
		if b, err := os.ReadFile(cfg.TokenPath()); cfg.TokenPath() != "" && err == nil {
			cl.Token = strings.TrimSpace(string(b))
		}
	}
	c.tokenHint = cfg.TokenPath()
	if c.tokenHint == "" {
		c.tokenHint = "no file (set api.token_file or jail.state_file)"
	}
	return cl, 0
}

// normalizeURL accepts a URL or a bare host:port (http is assumed).
func normalizeURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("scheme must be http or https")
	}
	if u.Host == "" {
		return "", fmt.Errorf("no host")
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// baseURL turns a listen address into a URL a local client can reach.
func baseURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// apiError prints err, with a hint for a missing token, and returns 2.
func (c *apiCommand) apiError(err error) int {
	var se *api.StatusError
	if errors.As(err, &se) && se.Status == 401 {
		return c.fail("%v\n  the token is in %s: run as a user who can read it (sudo), or pass -token-file", err, c.tokenHint)
	}
	return c.fail("%v", err)
}

func timeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}
