// Package loggen writes realistic FreeSWITCH logs for benchmarks and load
// tests: mostly the noise a FreeSWITCH 1.11 logs at the default levels
// (channel state machine, sofia, module and SQL lines, modelled on
// shared/fixtures/freeswitch-1.11), legitimate phones being challenged, and
// about 5% attack lines (auth failures, unknown users, ACL rejections,
// scanner challenges) from a few hundred documentation addresses
// (198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32).
//
// It owns nothing else and must not be imported by the daemon.
package loggen

import (
	"bufio"
	"fmt"
	"io"
	"math/rand"
	"net/netip"
	"strconv"
	"time"
)

// Format is the line layout written.
type Format int

const (
	// Modern lines carry the idle-CPU field (FreeSWITCH >= 1.10.7):
	// "2026-11-25 19:47:20.879698 86.47% [WARNING] sofia_reg.c:1787 ...".
	Modern Format = iota
	// Classic lines have no idle-CPU field, the layout Debian's fail2ban
	// FreeSWITCH filter reads: "2026-11-25 19:47:20.879698 [WARNING] ...".
	Classic
)

// Options tune GenerateOptions; zero values take the defaults.
type Options struct {
	Format      Format
	AttackRatio float64   // share of attack lines; default 0.05
	Attackers   int       // distinct attacking addresses; default 300
	Start       time.Time // first line's time; default 2026-11-25 00:00:00 UTC
}

// Stats describes what was written, for checking a reader's verdicts.
type Stats struct {
	Lines       int            // lines written
	AttackLines int            // lines that belong to attacks (continuation lines included)
	ByRule      map[string]int // attack offenses written, by rule name (auth_failure, unknown_user, acl_reject, auth_challenge)
	Legit       int            // challenge lines of legitimate phones (auth_challenge, 192.0.2.0/24)
	Attackers   []netip.Addr   // the attacking addresses
}

// Generate writes lines lines of a Modern FreeSWITCH log to w, the same for
// the same seed.
func Generate(w io.Writer, lines int, seed int64) error {
	_, err := GenerateOptions(w, lines, seed, Options{})
	return err
}

// GenerateOptions is Generate with a choice of format and mix.
func GenerateOptions(w io.Writer, lines int, seed int64, o Options) (Stats, error) {
	if o.AttackRatio <= 0 {
		o.AttackRatio = 0.05
	}
	if o.Attackers <= 0 {
		o.Attackers = 300
	}
	if o.Start.IsZero() {
		o.Start = time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	}
	g := &gen{
		w:   bufio.NewWriterSize(w, 256<<10),
		rnd: rand.New(rand.NewSource(seed)),
		o:   o,
		t:   o.Start,
		st:  Stats{ByRule: map[string]int{}},
	}
	g.attackers = make([]netip.Addr, o.Attackers)
	for i := range g.attackers {
		g.attackers[i] = attacker(i)
	}
	g.st.Attackers = g.attackers
	for g.st.Lines < lines {
		// Keep the share of attack lines near AttackRatio, in random bursts.
		if float64(g.st.AttackLines) < o.AttackRatio*float64(g.st.Lines+1)*(0.3+0.8*g.rnd.Float64()) {
			g.attack(lines - g.st.Lines)
		} else {
			g.noise(lines - g.st.Lines)
		}
	}
	if err := g.w.Flush(); err != nil {
		return g.st, fmt.Errorf("write log: %w", err)
	}
	return g.st, g.err
}

// attacker returns the i-th attacking address: a third IPv6, the rest
// spread over the two IPv4 documentation networks.
func attacker(i int) netip.Addr {
	switch i % 3 {
	case 0:
		return netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i/3%254)})
	case 1:
		return netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + i/3%254)})
	default:
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
	}
}

type gen struct {
	w         *bufio.Writer
	rnd       *rand.Rand
	o         Options
	t         time.Time
	buf       []byte
	st        Stats
	attackers []netip.Addr
	session   int
	err       error
}

// head appends "[UUID ]DATE [NN.NN% ][LEVEL] file " for one line.
func (g *gen) head(uuid, level, file string) {
	g.t = g.t.Add(time.Duration(g.rnd.Intn(20000)) * time.Microsecond)
	b := g.buf[:0]
	if uuid != "" {
		b = append(b, uuid...)
		b = append(b, ' ')
	}
	b = g.t.AppendFormat(b, "2006-01-02 15:04:05.000000")
	b = append(b, ' ')
	if g.o.Format == Modern {
		idle := 60 + g.rnd.Intn(4000)
		b = strconv.AppendInt(b, int64(idle/100), 10)
		b = append(b, '.', byte('0'+idle/10%10), byte('0'+idle%10), '%', ' ')
	}
	b = append(b, '[')
	b = append(b, level...)
	b = append(b, "] "...)
	b = append(b, file...)
	b = append(b, ' ')
	g.buf = b
}

func (g *gen) end() {
	g.buf = append(g.buf, '\n')
	if _, err := g.w.Write(g.buf); err != nil && g.err == nil {
		g.err = fmt.Errorf("write log: %w", err)
	}
	g.st.Lines++
}

func (g *gen) line(uuid, level, file, text string) {
	g.head(uuid, level, file)
	g.buf = append(g.buf, text...)
	g.end()
}

func (g *gen) raw(text string) {
	g.buf = append(g.buf[:0], text...)
	g.end()
}

func (g *gen) uuid() string {
	var b [16]byte
	g.rnd.Read(b[:])
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hex[c>>4], hex[c&15])
	}
	return string(out)
}

var sofiaParams = []string{"debug [0]", "sip-trace [no]", "sip-capture [no]", "rfc2833-pt [101]", "sip-port [5060]", "dialplan [XML]", "context [public]", "dtmf-duration [2000]", "inbound-codec-prefs [OPUS,G722,PCMU,PCMA]", "rtp-timer-name [soft]", "local-network-acl [localnet.auto]", "manage-presence [true]", "nonce-ttl [60]", "auth-calls [true]"}
var apis = []string{"sofia", "sofia_gateway_data", "sofia_username_of", "sofia_contact", "sofia_count_reg", "sofia_dig", "sofia_presence_data", "sofia_regex"}

// noise writes one event of ordinary traffic (at most max lines).
func (g *gen) noise(max int) {
	r := g.rnd.Intn(100)
	switch {
	case r < 55 && max >= 12:
		g.call()
	case r < 60:
		// A registered phone renewing: challenged, then accepted silently.
		phone := netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + g.rnd.Intn(40))})
		g.line("", "WARNING", "sofia_reg.c:1842", fmt.Sprintf("SIP auth challenge (REGISTER) on sofia profile 'internal' for [%d@pbx.example.com] from ip %s", 1000+g.rnd.Intn(40), phone))
		g.st.Legit++
	case r < 70:
		g.line("", "DEBUG", "switch_core_sqldb.c:1494", "SQL ERR [no such table: sip_registrations]")
	case r < 75:
		g.line("", "DEBUG", "sofia.c:4718", sofiaParams[g.rnd.Intn(len(sofiaParams))])
	case r < 80:
		g.line("", "NOTICE", "switch_loadable_module.c:389", "Adding API Function '"+apis[g.rnd.Intn(len(apis))]+"'")
	case r < 90:
		g.line("", "DEBUG", "sofia.c:10566", fmt.Sprintf("verifying acl \"domains\" for ip/port 192.0.2.%d:0.", 10+g.rnd.Intn(40)))
	default:
		g.line("", "INFO", "sofia.c:6178", "Setting MAX Auth Validity to 0 Attempts")
	}
}

// call writes the channel lines of one ordinary call from a phone.
func (g *gen) call() {
	g.session++
	u := g.uuid()
	phone := fmt.Sprintf("192.0.2.%d", 10+g.rnd.Intn(40))
	port := 5060 + g.rnd.Intn(100)
	ch := fmt.Sprintf("sofia/internal/%d@%s:%d", 1000+g.rnd.Intn(40), phone, port)
	n := strconv.Itoa(g.session)
	g.line(u, "NOTICE", "switch_channel.c:1143", "New Channel "+ch+" ["+u+"]")
	g.line(u, "DEBUG", "switch_core_state_machine.c:581", "("+ch+") Running State Change CS_NEW (Cur 1 Tot "+n+")")
	g.line(u, "INFO", "sofia.c:10472", fmt.Sprintf("%s receiving invite from %s:%d version: 1.11.1-release  64bit call-id: %d-%d@%s", ch, phone, port, g.session, g.rnd.Intn(99999), phone))
	g.line("", "DEBUG", "sofia.c:10566", "verifying acl \"domains\" for ip/port "+phone+":0.")
	g.line(u, "DEBUG", "switch_core_state_machine.c:600", "("+ch+") State NEW")
	g.line("", "DEBUG", "sofia.c:2408", "detaching session "+u)
	g.line(u, "DEBUG", "switch_core_state_machine.c:844", "("+ch+") Callstate Change DOWN -> HANGUP")
	g.line(u, "DEBUG", "mod_sofia.c:469", "Channel "+ch+" hanging up, cause: NORMAL_CLEARING")
	g.line(u, "DEBUG", "switch_core_state_machine.c:59", ch+" Standard HANGUP, cause: NORMAL_CLEARING")
	g.line(u, "NOTICE", "switch_core_session.c:1766", "Session "+n+" ("+ch+") Ended")
	g.line(u, "NOTICE", "switch_core_session.c:1770", "Close Channel "+ch+" [CS_DESTROY]")
	g.line(u, "DEBUG", "switch_core_state_machine.c:745", "("+ch+") State DESTROY going to sleep")
}

// attack writes one attack event (at most max lines).
func (g *gen) attack(max int) {
	ip := g.attackers[g.rnd.Intn(len(g.attackers))]
	user := strconv.Itoa(100 + g.rnd.Intn(9900))
	r := g.rnd.Intn(100)
	switch {
	case r < 40 && max >= 2:
		g.line("", "WARNING", "sofia_reg.c:1842", "SIP auth challenge (REGISTER) on sofia profile 'internal' for ["+user+"@pbx.example.com] from ip "+ip.String())
		g.line("", "WARNING", "sofia_reg.c:1787", "SIP auth failure (REGISTER) on sofia profile 'internal' for ["+user+"@pbx.example.com] from ip "+ip.String())
		g.st.ByRule["auth_challenge"]++
		g.st.ByRule["auth_failure"]++
		g.st.AttackLines += 2
	case r < 55 && max >= 2:
		dial := "00972" + strconv.Itoa(100000+g.rnd.Intn(899999))
		g.line("", "WARNING", "sofia_reg.c:1842", "SIP auth challenge (INVITE) on sofia profile 'internal' for ["+dial+"@pbx.example.com] from ip "+ip.String())
		g.line("", "WARNING", "sofia_reg.c:1787", "SIP auth failure (INVITE) on sofia profile 'internal' for ["+dial+"@pbx.example.com] from ip "+ip.String())
		g.st.ByRule["auth_challenge"]++
		g.st.ByRule["auth_failure"]++
		g.st.AttackLines += 2
	case r < 75 && max >= 3:
		g.line("", "WARNING", "sofia_reg.c:3210", "Can't find user ["+user+"@pbx.example.com] from "+ip.String())
		g.raw("You must define a domain called 'pbx.example.com' in your directory and add a user with the id=\"" + user + "\" attribute")
		g.raw("and you must configure your device to use the proper domain in its authentication credentials.")
		g.st.ByRule["unknown_user"]++
		g.st.AttackLines += 3
	case r < 90:
		g.line("", "WARNING", "sofia.c:10667", "IP "+ip.String()+" Rejected by acl \"domains\"")
		g.st.ByRule["acl_reject"]++
		g.st.AttackLines++
	default:
		g.line("", "WARNING", "sofia_reg.c:1842", "SIP auth challenge (REGISTER) on sofia profile 'internal' for ["+user+"@pbx.example.com] from ip "+ip.String())
		g.st.ByRule["auth_challenge"]++
		g.st.AttackLines++
	}
}
