package api

import (
	"html/template"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sipwarden/sipwarden/internal/jail"
)

// The status page at /: the facts of `sipwarden status`, rendered on the
// server as plain HTML (no script, no external resource), readable on a
// phone. It refreshes itself every 30 s.
var page = template.Must(template.New("status").Funcs(template.FuncMap{
	"rules": func(m map[string]int) string {
		var parts []string
		for r, n := range m {
			parts = append(parts, r+" ×"+itoa(n))
		}
		sort.Strings(parts)
		return strings.Join(parts, ", ")
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"score": ftoa,
}).Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="30">
<title>sipwarden: {{if .Ready}}ready{{else}}not ready{{end}}</title>
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:60em;padding:.5em 1em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
.ok{color:#176b2c}.bad{color:#b3261e;font-weight:bold}.dry{background:#fff3cd;padding:.5em;border-radius:4px}
table{border-collapse:collapse;width:100%;font-size:.92em}th,td{text-align:left;padding:.25em .4em;border-bottom:1px solid #ddd;vertical-align:top}
.wrap{overflow-x:auto}dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}dt{color:#555}dd{margin:0}
</style>
</head>
<body>
<h1>sipwarden</h1>
<p id="ready" class="{{if .Ready}}ok{{else}}bad{{end}}">{{if .Ready}}Ready{{else}}Not ready: {{range $i, $r := .Reasons}}{{if $i}}; {{end}}{{$r}}{{end}}{{end}}</p>
{{range .Notes}}<p class="note dry">{{.}}</p>
{{end}}{{if .DryRun}}<p id="dry-run" class="dry">Dry-run: the bans below are what sipwarden <b>would</b> do; nothing is in the firewall.</p>{{end}}
<dl id="summary">
<dt>Registrations</dt><dd id="registrations">{{.Registrations}}</dd>
<dt>Registered addresses</dt><dd id="registered-addresses">{{.RegisteredAddresses}}</dd>
<dt>Static whitelist</dt><dd id="static-entries">{{.StaticEntries}}</dd>
<dt>Active bans</dt><dd id="bans">{{.Bans}}</dd>
<dt>As of</dt><dd>{{when .Time}}</dd>
</dl>
<h2>Event Socket</h2>
{{if .Nodes}}<div class="wrap"><table id="nodes"><tr><th>Node</th><th>State</th><th>Registrations</th></tr>
{{range .Nodes}}<tr><td>{{.Address}}</td><td class="{{if .Connected}}ok{{else}}bad{{end}}">{{if .Connected}}connected{{else}}down: {{.Problem}}{{end}}</td><td>{{.Registrations}}</td></tr>
{{end}}</table></div>{{else}}<p id="nodes">No Event Socket: nothing is whitelisted by registration.</p>{{end}}
<h2>Protected addresses with failures</h2>
{{if .Protected}}<div class="wrap"><table id="protected"><tr><th>Address</th><th>Failing user</th><th>Rules hit</th><th>Why</th></tr>
{{range .Protected}}<tr><td>{{.IP}}</td><td>{{.User}}</td><td>{{rules .Offenses}}</td><td>{{.Why}}</td></tr>
{{end}}</table></div>{{else}}<p id="protected">None.</p>{{end}}
<h2>{{if .DryRun}}Would-be bans (dry-run){{else}}Bans{{end}}</h2>
{{if .BanList}}<div class="wrap"><table id="ban-list"><tr><th>Address</th><th>Rule</th><th>Reason</th><th>Expires</th></tr>
{{range .BanList}}<tr><td>{{if .Prefix.IsValid}}{{.Prefix}}{{else}}{{.IP}}{{end}}</td><td>{{.Rule}}</td><td>{{.Reason}}</td><td>{{when .ExpiresAt}}</td></tr>
{{end}}</table></div>{{else}}<p id="ban-list">No active bans.</p>{{end}}
<h2>Top offenders</h2>
{{if .TopOffenders}}<div class="wrap"><table id="offenders"><tr><th>Address</th><th>State</th><th>Score</th><th>Rules hit</th><th>Why</th></tr>
{{range .TopOffenders}}<tr><td>{{.IP}}</td><td>{{if and $.DryRun (eq .State "banned")}}would ban{{else}}{{.State}}{{end}}</td><td>{{score .Score}}</td><td>{{rules .Offenses}}</td><td>{{.Why}}</td></tr>
{{end}}</table></div>{{else}}<p id="offenders">None.</p>{{end}}
<p><small>The same facts as <code>sipwarden status</code> and <code>GET /v1/status</code>.</small></p>
</body>
</html>
`))

type pageData struct {
	Status
	BanList []jail.Ban
}

func (s *Server) statusPage(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		writeError(w, http.StatusNotFound, "no such page")
		return
	}
	bans := s.opt.Jail.Bans()
	sort.Slice(bans, func(i, j int) bool { return bans[i].IP.Less(bans[j].IP) })
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Cache-Control", "no-store")
	_ = page.Execute(w, pageData{Status: s.buildStatus(r), BanList: bans})
}

func itoa(n int) string     { return strconv.Itoa(n) }
func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }
