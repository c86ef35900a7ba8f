package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sipwarden/sipwarden/examples"
	"github.com/sipwarden/sipwarden/internal/api"
	"github.com/sipwarden/sipwarden/internal/config"
)

func (c cmdIO) check(args []string) int {
	cmd := c.newAPICommand("check", "sipwarden check [-api URL] [-q] [-json] IP",
		"Asks the daemon whether IP may be banned: fail2ban's ignorecommand.\n"+
			"Exit 0: do not ban it (whitelisted: static or a live registration; or never-ban: loopback,\n"+
			"this host, an Event Socket node, never_ban). 1: it may be banned. 2: error.")
	quiet := cmd.fs.Bool("q", false, "print nothing; answer with the exit code only")
	cmd.addJSON()
	pos, done, code := cmd.parse(args)
	if done {
		return code
	}
	if len(pos) != 1 {
		return cmd.fail("exactly one IP address expected")
	}
	if _, err := api.ParseIP(pos[0]); err != nil {
		return cmd.fail("%v", err)
	}
	cl, code := cmd.client()
	if cl == nil {
		return code
	}
	ctx, cancel := timeout()
	defer cancel()
	a, err := cl.CheckIP(ctx, pos[0])
	if err != nil {
		return cmd.apiError(err)
	}
	if *cmd.jsonOut {
		writeJSON(c.stdout, a)
	} else if !*quiet {
		switch a.Reason {
		case "":
			fmt.Fprintf(c.stdout, "%s not whitelisted\n", pos[0])
		case "never_ban":
			fmt.Fprintf(c.stdout, "%s never-ban (%s): do not ban\n", pos[0], a.Why)
		default:
			fmt.Fprintf(c.stdout, "%s whitelisted (%s, %d live registrations)\n", pos[0], a.Reason, a.Registrations)
		}
		if a.Protection != "" {
			fmt.Fprintf(c.stdout, "%s %s: see GET /v1/protected\n", pos[0], a.Protection)
		}
	}
	if a.BanAllowed {
		return 1
	}
	return 0
}

func (c cmdIO) bans(args []string) int {
	const syn = "sipwarden bans list [-json] | add [-for DUR] [-reason TEXT] IP | del IP   (each with [-api URL] [-config FILE] [-token-file FILE])"
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		w := c.stdout
		if len(args) == 0 {
			w = c.stderr
		}
		fmt.Fprintf(w, "Usage: %s\n\nManages bans through the daemon; add goes through the never-ban and whitelist checks.\nExit 0 ok, 1 refused (whitelisted, never-ban, not banned), 2 error.\nRun 'sipwarden bans list|add|del -h' for the flags.\n", syn)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub := args[0]
	switch sub {
	case "list", "add", "del":
	default:
		fmt.Fprintf(c.stderr, "sipwarden bans: unknown subcommand %q\nUsage: %s\n", sub, syn)
		return 2
	}
	synopsis := map[string]string{
		"list": "sipwarden bans list [-json] [-api URL]",
		"add":  "sipwarden bans add [-for DUR] [-reason TEXT] [-api URL] IP",
		"del":  "sipwarden bans del [-api URL] IP",
	}[sub]
	about := map[string]string{
		"list": "Lists the active bans: address, rule, count, expiry (local time, to the second), reason; \"would ban\" with the dry-run backend.",
		"add":  "Bans IP through the daemon after the never-ban and whitelist checks (refused: exit 1). -for must be positive.",
		"del":  "Lifts the ban on IP (not banned: exit 1).",
	}[sub]
	cmd := c.newAPICommand("bans "+sub, synopsis, about)
	var dur *time.Duration
	var reason *string
	if sub == "add" {
		dur = cmd.fs.Duration("for", 0, "ban duration, like 90s, 10m, 1h (default: the daemon's escalated jail.bantime)")
		reason = cmd.fs.String("reason", "manual", "why, shown in the ban list")
	}
	if sub == "list" {
		cmd.addJSON()
	}
	pos, done, code := cmd.parse(args[1:])
	if done {
		return code
	}
	if sub == "add" && cmd.set("for") && *dur <= 0 {
		return cmd.fail("-for must be a positive duration like 90s, 10m, 1h; got %s", *dur)
	}
	if sub == "list" && len(pos) > 0 {
		return cmd.fail("unexpected arguments %q", pos)
	}
	if sub != "list" {
		if len(pos) != 1 {
			return cmd.fail("exactly one IP address expected")
		}
		if _, err := api.ParseIP(pos[0]); err != nil {
			return cmd.fail("%v", err)
		}
	}
	cl, code := cmd.client()
	if cl == nil {
		return code
	}
	ctx, cancel := timeout()
	defer cancel()
	switch sub {
	case "list":
		var out struct {
			Bans   []map[string]any `json:"bans"`
			DryRun bool             `json:"dry_run"`
		}
		if err := cl.Get(ctx, "/v1/bans", &out); err != nil {
			return cmd.apiError(err)
		}
		if *cmd.jsonOut {
			writeJSON(c.stdout, out)
			return 0
		}
		printBans(c.stdout, out.Bans, out.DryRun)
		return 0
	case "add":
		b, err := cl.AddBan(ctx, pos[0], *dur, *reason)
		if err != nil {
			return cmd.refusal(err)
		}
		until := ""
		if e, ok := b["expires_at"].(string); ok {
			until = " until " + localTime(e)
		}
		if dry, _ := b["dry_run"].(bool); dry {
			fmt.Fprintf(c.stdout, "would ban %s%s (dry-run: nothing is written to the firewall)\n", pos[0], until)
		} else {
			fmt.Fprintf(c.stdout, "banned %s%s\n", pos[0], until)
		}
	case "del":
		if err := cl.DelBan(ctx, pos[0]); err != nil {
			return cmd.refusal(err)
		}
		fmt.Fprintf(c.stdout, "unbanned %s\n", pos[0])
	}
	return 0
}

// refusal: exit 1 for a refusal (whitelisted, never-ban, not banned).
func (c *apiCommand) refusal(err error) int {
	if errors.Is(err, api.ErrRefused) {
		fmt.Fprintf(c.io.stderr, "sipwarden %s: refused: %v\n", c.fs.Name(), err)
		return 1
	}
	return c.apiError(err)
}

// localTime renders an RFC 3339 time from the API in local time, to the
// second.
func localTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.IsZero() {
		return s
	}
	return t.Local().Format("2006-01-02 15:04:05 MST")
}

func printBans(w io.Writer, bans []map[string]any, dryRun bool) {
	sort.Slice(bans, func(i, j int) bool { return fmt.Sprint(bans[i]["ip"]) < fmt.Sprint(bans[j]["ip"]) })
	if dryRun {
		fmt.Fprintln(w, "dry-run: these are bans sipwarden WOULD have made; nothing is in the firewall")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	state := "BANNED"
	if dryRun {
		state = "STATE"
	}
	fmt.Fprintf(tw, "IP\t%s\tRULE\tCOUNT\tEXPIRES\tREASON\n", state)
	for _, b := range bans {
		expires, ok := b["expires_at"].(string)
		if !ok || expires == "" {
			expires = "never"
		} else {
			expires = localTime(expires)
		}
		st := "yes"
		if dry, _ := b["dry_run"].(bool); dry || dryRun {
			st = "would ban"
		}
		ip := fmt.Sprint(b["ip"])
		if p, ok := b["prefix"].(string); ok && p != "" {
			ip = p
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\t%v\n", ip, st, b["rule"], b["count"], expires, b["reason"])
	}
	tw.Flush()
	if len(bans) == 0 {
		fmt.Fprintln(w, "(no active bans)")
	}
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (c cmdIO) whitelist(args []string) int {
	cmd := c.newAPICommand("whitelist", "sipwarden whitelist [-json] [-api URL]",
		"Lists the static whitelist and every address with live registrations (users and contacts need the token when the API listens off loopback).")
	cmd.addJSON()
	pos, done, code := cmd.parse(args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return cmd.fail("unexpected arguments %q", pos)
	}
	cl, code := cmd.client()
	if cl == nil {
		return code
	}
	ctx, cancel := timeout()
	defer cancel()
	var out struct {
		Entries []struct {
			IP            string `json:"ip"`
			Prefix        string `json:"prefix"`
			Static        bool   `json:"static"`
			Registrations []struct {
				User      string `json:"user"`
				Realm     string `json:"realm"`
				Node      string `json:"node"`
				UserAgent string `json:"user_agent"`
				ExpiresAt string `json:"expires_at"`
			} `json:"registrations"`
		} `json:"entries"`
		Redacted bool `json:"redacted"`
	}
	var raw json.RawMessage
	if err := cl.Get(ctx, "/v1/whitelist", &raw); err != nil {
		return cmd.apiError(err)
	}
	if *cmd.jsonOut {
		c.stdout.Write(append(raw, '\n'))
		return 0
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return cmd.fail("undecodable answer: %v", err)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tKIND\tREGISTRATIONS\tUSERS\tLAST EXPIRY")
	for _, e := range out.Entries {
		addr, kind := e.IP, "registered"
		if e.Static {
			kind = "static"
			if e.Prefix != "" {
				addr = e.Prefix
			}
		}
		var users []string
		last := ""
		for _, r := range e.Registrations {
			if r.User != "" {
				users = append(users, r.User)
			}
			if r.ExpiresAt > last {
				last = r.ExpiresAt
			}
		}
		u := strings.Join(users, ",")
		if out.Redacted && len(e.Registrations) > 0 {
			u = "(token needed)"
		}
		if last != "" {
			last = localTime(last)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", addr, kind, len(e.Registrations), u, last)
	}
	tw.Flush()
	if len(out.Entries) == 0 {
		fmt.Fprintln(c.stdout, "(nothing whitelisted)")
	}
	return 0
}

type offender struct {
	IP        string         `json:"ip"`
	Score     float64        `json:"score"`
	Offenses  map[string]int `json:"offenses"`
	State     string         `json:"state"`
	Why       string         `json:"why"`
	User      string         `json:"user"`
	LastSeen  string         `json:"last_seen"`
	ExpiresAt string         `json:"expires_at"`
}

func (c cmdIO) offenders(args []string) int {
	cmd := c.newAPICommand("offenders", "sipwarden offenders [-json] [-api URL]",
		"Lists the addresses the jail is watching: score, rules hit, state (watching, banned, protected, never-ban) and why.")
	cmd.addJSON()
	pos, done, code := cmd.parse(args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return cmd.fail("unexpected arguments %q", pos)
	}
	cl, code := cmd.client()
	if cl == nil {
		return code
	}
	ctx, cancel := timeout()
	defer cancel()
	// Every page, in address order (GET /v1/offenders?limit=&after=).
	var all []json.RawMessage
	after := ""
	for {
		path := "/v1/offenders?limit=1000"
		if after != "" {
			path += "&after=" + url.QueryEscape(after)
		}
		var page struct {
			Offenders []json.RawMessage `json:"offenders"`
			Next      string            `json:"next"`
		}
		if err := cl.Get(ctx, path, &page); err != nil {
			return cmd.apiError(err)
		}
		all = append(all, page.Offenders...)
		if page.Next == "" || page.Next == after {
			break
		}
		after = page.Next
	}
	if all == nil {
		all = []json.RawMessage{}
	}
	if *cmd.jsonOut {
		writeJSON(c.stdout, map[string]any{"offenders": all})
		return 0
	}
	var out struct {
		Offenders []offender `json:"offenders"`
	}
	var bans struct {
		DryRun bool `json:"dry_run"`
	}
	if err := cl.Get(ctx, "/v1/bans", &bans); err != nil {
		return cmd.apiError(err)
	}
	for _, r := range all {
		var o offender
		if err := json.Unmarshal(r, &o); err != nil {
			return cmd.fail("undecodable answer: %v", err)
		}
		o.State = shownState(o.State, bans.DryRun)
		out.Offenders = append(out.Offenders, o)
	}
	printOffenders(c.stdout, out.Offenders, 0)
	return 0
}

// shownState: with the dry-run backend a "banned" offender is one
// sipwarden would ban; nothing is in the firewall.
func shownState(state string, dryRun bool) string {
	if dryRun && state == "banned" {
		return "would ban"
	}
	return state
}

func rulesHit(m map[string]int) string {
	var parts []string
	for r, n := range m {
		parts = append(parts, fmt.Sprintf("%s x%d", r, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// printOffenders prints the list by score, at most limit rows (0: all).
func printOffenders(w io.Writer, list []offender, limit int) {
	sort.SliceStable(list, func(i, j int) bool { return list[i].Score > list[j].Score })
	if limit > 0 && len(list) > limit {
		list = list[:limit]
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IP\tSTATE\tSCORE\tRULES HIT\tLAST SEEN\tWHY")
	for _, o := range list {
		why := o.Why
		if o.User != "" && !strings.Contains(why, o.User) {
			why = strings.TrimSpace(why + " user " + o.User)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%s\t%s\n", o.IP, o.State, o.Score, rulesHit(o.Offenses), localTime(o.LastSeen), why)
	}
	tw.Flush()
	if len(list) == 0 {
		fmt.Fprintln(w, "(no offenders)")
	}
}

func (c cmdIO) config(args []string) int {
	const syn = "sipwarden config check [-config FILE] | defaults"
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		w := c.stdout
		if len(args) == 0 {
			w = c.stderr
		}
		fmt.Fprintf(w, "Usage: %s\n\n  check     load and validate the configuration as `run` would (exit 0 valid, 2 not; every problem listed)\n  defaults  print the annotated reference configuration with every key at its default\n", syn)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "defaults":
		cmd := c.newCommand("config defaults", "sipwarden config defaults", "Prints the annotated reference configuration (examples/sipwarden.yaml): every key at its default.")
		pos, done, code := cmd.parse(args[1:])
		if done {
			return code
		}
		if len(pos) > 0 {
			return cmd.fail("unexpected arguments %q", pos)
		}
		c.stdout.Write(examples.Config)
		return 0
	case "check":
		cmd := c.newCommand("config check", "sipwarden config check [-config FILE]",
			"Loads the configuration as `run` would (file, ${VAR}, SIPWARDEN_* variables, *_file secrets) and validates it.\nExit 0 valid, 2 invalid, with every problem on its own line.")
		pos, done, code := cmd.parse(args[1:])
		if done {
			return code
		}
		if len(pos) == 1 && !cmd.set("config") {
			*cmd.cfg = pos[0]
			cmd.fs.Set("config", pos[0])
		} else if len(pos) > 0 {
			return cmd.fail("unexpected arguments %q", pos)
		}
		cfg, ok := cmd.load()
		if !ok {
			return 2
		}
		path := cmd.configPath()
		if path == "" {
			path = "built-in defaults"
		}
		backend := cfg.Ban.Backend
		if backend == config.BackendDryRun {
			backend += " (nothing is banned in the kernel)"
		}
		fmt.Fprintf(c.stdout, "%s: valid\n  event socket: %s\n  logs: %s\n  ban backend: %s\n  api: %s (token file %s)\n",
			path, esl(cfg), orNone(strings.Join(cfg.Logs.Files, ", ")), backend, cfg.API.Listen, orNone(cfg.TokenPath()))
		for _, w := range hostWarnings(cfg) {
			fmt.Fprintf(c.stdout, "warning: %s\n", w)
		}
		return 0
	}
	fmt.Fprintf(c.stderr, "sipwarden config: unknown subcommand %q\nUsage: %s\n", args[0], syn)
	return 2
}

// hostWarnings are what a valid configuration still needs from this host,
// checked as the user running the command (the daemon runs as sipwarden):
// found now rather than at the first ban or at stop.
func hostWarnings(cfg config.Config) []string {
	var out []string
	if cfg.Jail.StateFile != "" {
		dir := filepath.Dir(cfg.Jail.StateFile)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			out = append(out, fmt.Sprintf("jail.state_file: the directory %s does not exist: bans and scores would be lost at stop", dir))
		}
	}
	if dir := filepath.Dir(cfg.TokenPath()); cfg.API.Token == "" && cfg.TokenPath() == "" {
		out = append(out, "api.token_file: neither it nor jail.state_file is set: no API token can exist and every change through the API would be refused")
	} else if cfg.API.Token == "" {
		if _, err := os.Stat(cfg.TokenPath()); err != nil {
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				out = append(out, fmt.Sprintf("api.token_file: the directory %s does not exist: no API token can be generated and every change through the API would be refused", dir))
			}
		}
	}
	for i, f := range cfg.Logs.Files {
		if f == "-" {
			continue
		}
		fi, err := os.Stat(f)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			out = append(out, fmt.Sprintf("logs.files[%d]: %s does not exist (yet): sipwarden waits for it", i, f))
		case err != nil:
			out = append(out, fmt.Sprintf("logs.files[%d]: %v", i, err))
		case fi.IsDir():
			out = append(out, fmt.Sprintf("logs.files[%d]: %s is a directory: name the log file", i, f))
		default:
			if fh, err := os.Open(f); err != nil {
				out = append(out, fmt.Sprintf("logs.files[%d]: %s cannot be read by this user (the daemon's user needs the freeswitch group)", i, f))
			} else {
				fh.Close()
			}
		}
	}
	return out
}

func esl(cfg config.Config) string {
	if cfg.ESL.Disabled {
		return "disabled (nothing is whitelisted by registration)"
	}
	return strings.Join(cfg.ESL.Nodes(), ", ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func (c cmdIO) status(args []string) int {
	cmd := c.newAPICommand("status", "sipwarden status [-json] [-api URL]",
		"One screen from the running daemon: readiness, ban backend, Event Socket nodes, registrations,\nprotected addresses and their failing users, active bans, top offenders.")
	cmd.addJSON()
	pos, done, code := cmd.parse(args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return cmd.fail("unexpected arguments %q", pos)
	}
	cl, code := cmd.client()
	if cl == nil {
		return code
	}
	ctx, cancel := timeout()
	defer cancel()
	st, err := api.FetchStatus(ctx, cl)
	if err != nil {
		return cmd.apiError(err)
	}
	if *cmd.jsonOut {
		writeJSON(c.stdout, st)
		return 0
	}
	w := c.stdout
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY: " + strings.Join(st.Reasons, "; ")
	}
	fmt.Fprintf(w, "sipwarden at %s: %s\n", cl.Base, ready)
	if st.DryRun {
		fmt.Fprintln(w, "ban backend: dry-run: bans below are what sipwarden WOULD do; nothing is in the firewall")
	}
	if len(st.Nodes) == 0 {
		fmt.Fprintln(w, "event socket: none (nothing is whitelisted by registration)")
	}
	for _, n := range st.Nodes {
		state := "connected"
		if !n.Connected {
			state = "DOWN: " + n.Problem
		}
		fmt.Fprintf(w, "event socket %s: %s, %d registrations\n", n.Address, state, n.Registrations)
	}
	fmt.Fprintf(w, "registrations: %d live on %d addresses; static whitelist: %d entries\n", st.Registrations, st.RegisteredAddresses, st.StaticEntries)
	fmt.Fprintf(w, "bans: %d active\n", st.Bans)
	if len(st.Protected) > 0 {
		fmt.Fprintln(w, "\nprotected addresses with failures (registered, so never banned):")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  IP\tFAILING USER\tRULES HIT\tWHY")
		for _, p := range st.Protected {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", p.IP, p.User, rulesHit(p.Offenses), p.Why)
		}
		tw.Flush()
	}
	fmt.Fprintln(w, "\ntop offenders:")
	list := make([]offender, 0, len(st.TopOffenders))
	for _, o := range st.TopOffenders {
		list = append(list, offender{IP: o.IP, Score: o.Score, Offenses: o.Offenses, State: shownState(o.State, st.DryRun), Why: o.Why, User: o.User, LastSeen: o.LastSeen})
	}
	printOffenders(w, list, 10)
	return 0
}
