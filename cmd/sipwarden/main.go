// Command sipwarden protects FreeSWITCH servers from SIP attacks without
// locking out the offices that use them. See README.md and SPEC.md.
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
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sipwarden/sipwarden/internal/api"
	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/daemon"
	"github.com/sipwarden/sipwarden/internal/replay"
)

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

const usage = `sipwarden protects FreeSWITCH from SIP attacks without banning registered offices.

Usage:
  sipwarden run     [-config FILE]                     the daemon
  sipwarden replay  [-config FILE] [-format table|json] [-registrations FILE] FILE...
  sipwarden check   [-api URL] IP                      exit 0 whitelisted, 1 not, 2 error
  sipwarden bans    list|add|del [-api URL] [...]      manage bans through the daemon
  sipwarden version

Run 'sipwarden COMMAND -h' for a command's flags.
`

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdin, stderr)
	case "replay":
		return cmdReplay(args[1:], stdout, stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "bans":
		return cmdBans(args[1:], stdout, stderr)
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

func versionString() string {
	commit := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				commit = s.Value
			}
		}
	}
	return fmt.Sprintf("sipwarden %s (%s, commit %s, %s/%s)", daemon.Version, runtime.Version(), commit, runtime.GOOS, runtime.GOARCH)
}

func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse returns (done, code): done when -h was asked or parsing failed.
func parse(fs *flag.FlagSet, args []string) (bool, int) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, 0
		}
		return true, 2
	}
	return false, 0
}

func cmdRun(args []string, stdin io.Reader, stderr io.Writer) int {
	fs := newFlags("run", "sipwarden run [-config FILE]", stderr)
	cfgPath := fs.String("config", os.Getenv("SIPWARDEN_CONFIG"), "YAML config file (default: built-in defaults; env SIPWARDEN_CONFIG)")
	if done, code := parse(fs, args); done {
		return code
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "sipwarden: invalid configuration:\n%s\n", indent(err.Error()))
		return 2
	}
	level := new(slog.LevelVar)
	logger := daemon.NewLogger(cfg.Log, stderr, level)
	d, err := daemon.New(cfg, daemon.Options{Logger: logger, LogLevel: level, Stdin: stdin})
	if err != nil {
		fmt.Fprintf(stderr, "sipwarden: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	for {
		select {
		case err := <-done:
			if err != nil {
				fmt.Fprintf(stderr, "sipwarden: %v\n", err)
				return 1
			}
			return 0
		case <-hup:
			next, err := config.Load(*cfgPath, os.Environ())
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

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

func cmdReplay(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("replay", "sipwarden replay [-config FILE] [-format table|json] [-registrations FILE] FILE...", stderr)
	cfgPath := fs.String("config", os.Getenv("SIPWARDEN_CONFIG"), "YAML config file for rules and jail settings")
	format := fs.String("format", "table", "output: table or json (one object per line)")
	regs := fs.String("registrations", "", "FreeSWITCH 'show registrations as json' output: IPs live there are protected")
	quiet := fs.Bool("q", false, "no progress on stderr")
	if done, code := parse(fs, args); done {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "sipwarden replay: no input files (FreeSWITCH logs, plain or .gz, and pcap/pcapng captures)")
		fs.Usage()
		return 2
	}
	if *format != "table" && *format != "json" {
		fmt.Fprintf(stderr, "sipwarden replay: -format must be table or json, got %q\n", *format)
		return 2
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "sipwarden: invalid configuration:\n%s\n", indent(err.Error()))
		return 2
	}
	opt := replay.Options{Config: cfg, Files: fs.Args(), Registrations: *regs}
	if !*quiet {
		opt.Progress = stderr
	}
	rep, err := replay.Run(context.Background(), opt)
	if err != nil {
		fmt.Fprintf(stderr, "sipwarden replay: %v\n", err)
		return 2
	}
	if *format == "json" {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sipwarden replay: %v\n", err)
		return 2
	}
	return 0
}

// apiFlags adds -api, -config and -token-file and returns a client maker.
func apiFlags(fs *flag.FlagSet) func() (*api.Client, error) {
	apiURL := fs.String("api", os.Getenv("SIPWARDEN_API"), "daemon API base URL (default: from the config's api.listen)")
	cfgPath := fs.String("config", os.Getenv("SIPWARDEN_CONFIG"), "YAML config file to read api.listen and the token from")
	tokenFile := fs.String("token-file", "", "file holding the API bearer token (default: the config's api.token/token_file)")
	return func() (*api.Client, error) {
		cfg, err := config.Load(*cfgPath, os.Environ())
		if err != nil {
			return nil, err
		}
		c := &api.Client{Base: *apiURL, Token: cfg.API.Token}
		if c.Base == "" {
			c.Base = baseURL(cfg.API.Listen)
		}
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				return nil, err
			}
			c.Token = strings.TrimSpace(string(b))
		}
		return c, nil
	}
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

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "sipwarden check [-api URL] [-q] IP   (exit 0 whitelisted, 1 not, 2 error)", stderr)
	client := apiFlags(fs)
	quiet := fs.Bool("q", false, "print nothing; answer with the exit code only")
	if done, code := parse(fs, args); done {
		if code == 0 {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "sipwarden check: exactly one IP address expected")
		return 2
	}
	c, err := client()
	if err != nil {
		fmt.Fprintf(stderr, "sipwarden check: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, entry, err := c.Check(ctx, fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "sipwarden check: %v\n", err)
		return 2
	}
	if !ok {
		if !*quiet {
			fmt.Fprintf(stdout, "%s not whitelisted\n", fs.Arg(0))
		}
		return 1
	}
	if !*quiet {
		why, _ := entry["reason"].(string)
		regs, _ := entry["registrations"].([]any)
		fmt.Fprintf(stdout, "%s whitelisted (%s, %d live registrations)\n", fs.Arg(0), why, len(regs))
	}
	return 0
}

func cmdBans(args []string, stdout, stderr io.Writer) int {
	const syn = "sipwarden bans list [-api URL] | add [-api URL] [-for DUR] [-reason TEXT] IP | del [-api URL] IP"
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		fmt.Fprintf(stderr, "Usage: %s\n", syn)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub := args[0]
	fs := newFlags("bans "+sub, syn, stderr)
	client := apiFlags(fs)
	var dur *time.Duration
	var reason *string
	if sub == "add" {
		dur = fs.Duration("for", 0, "ban duration (default: the daemon's jail.bantime)")
		reason = fs.String("reason", "manual", "why, shown in the ban list")
	}
	if done, code := parse(fs, args[1:]); done {
		return code
	}
	c, err := client()
	if err != nil {
		fmt.Fprintf(stderr, "sipwarden bans: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch sub {
	case "list":
		bans, err := c.Bans(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "sipwarden bans list: %v\n", err)
			return 2
		}
		printBans(stdout, bans)
		return 0
	case "add", "del":
		if fs.NArg() != 1 {
			fmt.Fprintf(stderr, "sipwarden bans %s: exactly one IP address expected\n", sub)
			return 2
		}
		if sub == "add" {
			_, err = c.AddBan(ctx, fs.Arg(0), *dur, *reason)
		} else {
			err = c.DelBan(ctx, fs.Arg(0))
		}
		if errors.Is(err, api.ErrRefused) {
			fmt.Fprintf(stderr, "sipwarden bans %s: refused: %v\n", sub, err)
			return 1
		}
		if err != nil {
			fmt.Fprintf(stderr, "sipwarden bans %s: %v\n", sub, err)
			return 2
		}
		if sub == "add" {
			fmt.Fprintf(stdout, "banned %s\n", fs.Arg(0))
		} else {
			fmt.Fprintf(stdout, "unbanned %s\n", fs.Arg(0))
		}
		return 0
	}
	fmt.Fprintf(stderr, "sipwarden bans: unknown subcommand %q\nUsage: %s\n", sub, syn)
	return 2
}

func printBans(w io.Writer, bans []map[string]any) {
	sort.Slice(bans, func(i, j int) bool { return fmt.Sprint(bans[i]["ip"]) < fmt.Sprint(bans[j]["ip"]) })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IP\tRULE\tCOUNT\tEXPIRES\tREASON")
	for _, b := range bans {
		expires, ok := b["expires_at"].(string)
		if !ok || expires == "" {
			expires = "never"
		}
		fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%v\n", b["ip"], b["rule"], b["count"], expires, b["reason"])
	}
	tw.Flush()
	if len(bans) == 0 {
		fmt.Fprintln(w, "(no active bans)")
	}
}
