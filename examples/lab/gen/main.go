// Command gen writes the lab's "night of traffic": a FreeSWITCH 1.11 log, a
// pcap of the SIP on the wire and a `show registrations as json` snapshot,
// built from the formats captured in shared/fixtures/freeswitch-1.11.
//
//	go run ./examples/lab/gen -out examples/lab
//
// The output is deterministic (fixed seed, fixed start time): the files are
// committed, and a test regenerates them and compares bytes. Only
// documentation addresses are used (RFC 5737, RFC 3849).
//
// The night, 2026-11-24 22:00 to 2026-11-25 06:00 UTC, FreeSWITCH at
// 192.0.2.2 / 2001:db8::2, domain pbx.example.com, log-auth-failures on:
//
//   - an office behind NAT 203.0.113.10: phones 1000-1002 register all night
//     (challenge then 200 OK, Expires 3600, refreshed every 30 min); phone
//     1003 has a stale password and fails 12 times, 30 s apart;
//   - a roaming phone, 1005, registering from 2001:db8::20;
//   - 198.51.100.23 brute-forcing passwords and user names (log only);
//   - 198.51.100.44 rejected by the external profile's ACL (log only), 30
//     INVITEs 10 s apart: an ACL rejection proves no round trip (one forged
//     UDP packet makes FreeSWITCH log one), so it takes many to ban;
//   - 198.51.100.66 running SIPVicious: svmap (OPTIONS) then svwar (REGISTER
//     to 50 extensions);
//   - 198.51.100.77 sending unauthenticated INVITEs to international numbers;
//   - 198.51.100.88 flooding OPTIONS (200 in 2 s).
package main

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

const (
	domain   = "pbx.example.com"
	serverUA = "FreeSWITCH-mod_sofia/1.11.1-release~64bit"
	allow    = "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REGISTER, REFER, NOTIFY, PUBLISH, SUBSCRIBE"
	events   = "talk, hold, conference, presence, as-feature-event, dialog, line-seize, call-info, sla, include-session-description, presence.winfo, message-summary, refer"
	hostname = "pbx1"
)

var (
	start = time.Date(2026, 11, 24, 22, 0, 0, 0, time.UTC)
	end   = start.Add(8 * time.Hour)

	server4   = netip.MustParseAddrPort("192.0.2.2:5060")
	server4x  = netip.MustParseAddrPort("192.0.2.2:5080") // external profile
	server6   = netip.MustParseAddrPort("[2001:db8::2]:5060")
	office    = netip.MustParseAddr("203.0.113.10")
	roaming   = netip.MustParseAddr("2001:db8::20")
	brute     = netip.MustParseAddr("198.51.100.23")
	aclProber = netip.MustParseAddr("198.51.100.44")
	scanner   = netip.MustParseAddr("198.51.100.66")
	tollBot   = netip.MustParseAddr("198.51.100.77")
	flooder   = netip.MustParseAddr("198.51.100.88")

	serverMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	routerMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
)

func main() {
	out := flag.String("out", "examples/lab", "directory to write freeswitch.log, night.pcap and registrations.json into")
	flag.Parse()
	if err := generate(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func generate(dir string) error {
	n := newNight()
	n.office()
	n.roamingPhone()
	n.bruteForce()
	n.aclProbe()
	n.sipvicious()
	n.tollFraud()
	n.flood()
	n.aclProbeMore() // last: the rest of the night's generation keeps its random sequence

	pcap, err := n.pcap()
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"freeswitch.log":     n.log(),
		"night.pcap":         pcap,
		"registrations.json": n.registrations(),
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"freeswitch.log", "night.pcap", "registrations.json"} {
		if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// night collects log lines and packets, each with its time; both are sorted
// (stably) when written.
type night struct {
	rng      *prng
	lines    []logEntry
	packets  []packet
	regs     map[string]reg // by user, the latest registration
	sessions int            // FreeSWITCH's session counter (Tot N)
	ipID     uint16
}

type logEntry struct {
	t     time.Time
	lines []string // rendered lines; continuation lines carry no time
}

type packet struct {
	t        time.Time
	src, dst netip.AddrPort
	payload  []byte
}

type reg struct {
	user, callID, contact string
	ip                    netip.Addr
	port                  uint16
	expires               time.Time
}

func newNight() *night {
	return &night{rng: &prng{rand.NewPCG(20261124, 2200)}, regs: map[string]reg{}}
}

// prng derives everything from PCG-DXSM's raw output, a fixed algorithm,
// rather than from rand.Rand's helpers, whose algorithms a Go release may
// change: the committed files must stay reproducible.
type prng struct{ src *rand.PCG }

func (r *prng) Uint64() uint64 { return r.src.Uint64() }
func (r *prng) Uint32() uint32 { return uint32(r.src.Uint64() >> 32) }

// IntN is in [0, n); the modulo bias is irrelevant for test data.
func (r *prng) IntN(n int) int       { return int(r.src.Uint64() % uint64(n)) }
func (r *prng) Int64N(n int64) int64 { return int64(r.src.Uint64() % uint64(n)) }
func (r *prng) Float64() float64     { return float64(r.src.Uint64()>>11) / (1 << 53) }

// --- the scenarios -------------------------------------------------------

func (n *night) office() {
	// Phones 1000-1002 register at boot and refresh every 30 minutes.
	for i, user := range []string{"1000", "1001", "1002"} {
		p := phone{n: n, user: user, password: "s3cret-" + user, ip: office, port: uint16(5060 + 2*i),
			ua: "Yealink SIP-T46U 108.86.0.45", server: server4}
		p.callID = n.hex(16) + "@" + office.String()
		for t := n.at(time.Duration(5+7*i) * time.Second); t.Before(end); t = t.Add(30*time.Minute + n.jitter(3*time.Second)) {
			p.register(t, true)
		}
	}
	// Phone 1003 kept an old password: every attempt is challenged, then
	// refused. The phone retries every 30 s.
	p := phone{n: n, user: "1003", password: "old-password", ip: office, port: 5066,
		ua: "Yealink SIP-T46U 108.86.0.45", server: server4}
	p.callID = n.hex(16) + "@" + office.String()
	t := n.at(7*time.Minute + 3*time.Second)
	for i := 0; i < 12; i++ {
		p.register(t, false)
		t = t.Add(30*time.Second + n.jitter(200*time.Millisecond))
	}
}

func (n *night) roamingPhone() {
	p := phone{n: n, user: "1005", password: "s3cret-1005", ip: roaming, port: 5060,
		ua: "Linphone/5.2.5 (belle-sip/5.2.4)", server: server6}
	p.callID = n.hex(16)
	for t := n.at(70 * time.Second); t.Before(end); t = t.Add(30*time.Minute + n.jitter(3*time.Second)) {
		p.register(t, true)
	}
}

// bruteForce: 198.51.100.23 guesses passwords for extensions and tries
// common user names (log only: it used TLS, which the capture cannot read).
func (n *night) bruteForce() {
	users := []string{"1000", "admin", "1001", "100", "1002", "test", "1003", "101", "1004", "sip", "1006", "200", "1007", "user", "1008", "102",
		"1009", "guest", "1010", "103", "1011", "operator", "1012", "1234", "1013", "voip", "1014", "300", "1015", "asterisk"}
	known := map[string]bool{}
	for i := 1000; i <= 1015; i++ {
		known[strconv.Itoa(i)] = true
	}
	t := n.at(91*time.Minute + 17*time.Second)
	for _, u := range users {
		at := "[" + u + "@" + server4.Addr().String() + "]"
		lines := []string{
			n.stamp(t) + "[WARNING] sofia_reg.c:1842 SIP auth challenge (REGISTER) on sofia profile 'internal' for " + at + " from ip " + brute.String(),
		}
		n.addLog(t, lines...)
		t2 := t.Add(time.Duration(1+n.rng.IntN(5)) * time.Millisecond)
		if known[u] {
			n.addLog(t2, n.stamp(t2)+"[WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for "+at+" from ip "+brute.String())
		} else {
			s := n.stamp(t2)
			n.addLog(t2,
				s+"[WARNING] sofia_reg.c:3210 Can't find user "+at+" from "+brute.String(),
				"You must define a domain called '"+server4.Addr().String()+"' in your directory and add a user with the id=\""+u+"\" attribute",
				"and you must configure your device to use the proper domain in its authentication credentials.",
			)
			n.addLog(t2, s+"[WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for "+at+" from ip "+brute.String())
		}
		t = t.Add(1500*time.Millisecond + n.jitter(400*time.Millisecond))
	}
}

// aclProbe: 198.51.100.44 sends INVITEs to the external profile, whose
// apply-inbound-acl only admits the carriers (log only).
func (n *night) aclProbe() {
	n.aclProbes(n.at(4*time.Hour+14*time.Minute+2*time.Second), 6)
}

// aclProbeMore: the prober keeps going, 24 more INVITEs after the first 6.
func (n *night) aclProbeMore() {
	n.aclProbes(n.at(4*time.Hour+15*time.Minute+5*time.Second), 24)
}

func (n *night) aclProbes(t time.Time, count int) {
	for i := 0; i < count; i++ {
		uuid := n.uuid()
		port := 5060
		ch := "sofia/external/" + "1000@" + server4x.Addr().String()
		callID := n.hex(12)
		n.sessions++
		s := n.stamp(t)
		n.addLog(t,
			uuid+" "+s+"[NOTICE] switch_channel.c:1143 New Channel "+ch+" ["+uuid+"]",
			uuid+" "+s+"[DEBUG] switch_core_state_machine.c:581 ("+ch+") Running State Change CS_NEW (Cur 1 Tot "+strconv.Itoa(n.sessions)+")",
			uuid+" "+s+"[INFO] sofia.c:10472 "+ch+" receiving invite from "+aclProber.String()+":"+strconv.Itoa(port)+" version: 1.11.1-release  64bit call-id: "+callID,
			s+"[DEBUG] sofia.c:10566 verifying acl \"carriers\" for ip/port "+aclProber.String()+":0.",
			s+"[WARNING] sofia.c:10679 IP "+aclProber.String()+" Rejected by acl \"carriers\"",
		)
		t = t.Add(10*time.Second + n.jitter(time.Second))
	}
}

// sipvicious: svmap finds the server (OPTIONS to both profiles), then svwar
// walks extensions 1000-1049 with REGISTER. FreeSWITCH challenges every
// REGISTER (it does not reveal which users exist).
func (n *night) sipvicious() {
	t := n.at(2*time.Hour + 42*time.Minute + 10*time.Second)
	src := netip.AddrPortFrom(scanner, 5060)
	for _, dst := range []netip.AddrPort{server4, server4x} {
		callID := strconv.FormatUint(n.rng.Uint64()%1e19, 10)
		tag := n.hex(23)
		branch := strconv.FormatUint(uint64(n.rng.Uint32()), 10)
		req := msg(
			"OPTIONS sip:100@"+dst.Addr().String()+" SIP/2.0",
			"Via: SIP/2.0/UDP "+src.String()+";branch=z9hG4bK-"+branch+";rport",
			"Max-Forwards: 70",
			`To: "sipvicious"<sip:100@`+dst.Addr().String()+">",
			`From: "sipvicious"<sip:100@`+dst.Addr().String()+">;tag="+tag,
			"User-Agent: friendly-scanner",
			"Call-ID: "+callID,
			"Contact: sip:100@"+src.String(),
			"CSeq: 1 OPTIONS",
			"Accept: application/sdp",
			"Content-Length: 0",
		)
		n.send(t, src, dst, req)
		res := msg(
			"SIP/2.0 200 OK",
			"Via: SIP/2.0/UDP "+src.String()+";branch=z9hG4bK-"+branch+";rport="+strconv.Itoa(int(src.Port()))+";received="+src.Addr().String(),
			`From: "sipvicious"<sip:100@`+dst.Addr().String()+">;tag="+tag,
			`To: "sipvicious"<sip:100@`+dst.Addr().String()+">;tag="+n.tag(),
			"Call-ID: "+callID,
			"CSeq: 1 OPTIONS",
			"Contact: <sip:"+dst.String()+">",
			"User-Agent: "+serverUA,
			"Accept: application/sdp",
			"Allow: "+allow,
			"Supported: timer, path, replaces",
			"Allow-Events: "+events,
			"Content-Length: 0",
		)
		n.send(t.Add(400*time.Microsecond), dst, src, res)
		t = t.Add(150 * time.Millisecond)
	}

	t = t.Add(20 * time.Second)
	for ext := 1000; ext < 1050; ext++ {
		u := strconv.Itoa(ext)
		callID := strconv.FormatUint(n.rng.Uint64()%1e19, 10)
		tag := n.hex(23)
		branch := strconv.FormatUint(uint64(n.rng.Uint32()), 10)
		host := server4.Addr().String()
		req := msg(
			"REGISTER sip:"+host+" SIP/2.0",
			"Via: SIP/2.0/UDP "+src.String()+";branch=z9hG4bK-"+branch+";rport",
			"Max-Forwards: 70",
			`To: "`+u+`"<sip:`+u+"@"+host+">",
			`From: "`+u+`"<sip:`+u+"@"+host+">;tag="+tag,
			"User-Agent: friendly-scanner",
			"Call-ID: "+callID,
			"Contact: sip:"+u+"@"+src.String(),
			"CSeq: 1 REGISTER",
			"Accept: application/sdp",
			"Content-Length: 0",
		)
		n.send(t, src, server4, req)
		res := msg(
			"SIP/2.0 401 Unauthorized",
			"Via: SIP/2.0/UDP "+src.String()+";branch=z9hG4bK-"+branch+";rport="+strconv.Itoa(int(src.Port()))+";received="+src.Addr().String(),
			`From: "`+u+`"<sip:`+u+"@"+host+">;tag="+tag,
			`To: "`+u+`"<sip:`+u+"@"+host+">;tag="+n.tag(),
			"Call-ID: "+callID,
			"CSeq: 1 REGISTER",
			"User-Agent: "+serverUA,
			"Allow: "+allow,
			"Supported: timer, path, replaces",
			`WWW-Authenticate: Digest realm="`+host+`", nonce="`+n.uuid()+`", algorithm=MD5, qop="auth"`,
			"Content-Length: 0",
		)
		n.send(t.Add(500*time.Microsecond), server4, src, res)
		n.addLog(t, n.stamp(t)+"[WARNING] sofia_reg.c:1842 SIP auth challenge (REGISTER) on sofia profile 'internal' for ["+u+"@"+host+"] from ip "+scanner.String())
		t = t.Add(200*time.Millisecond + n.jitter(50*time.Millisecond))
	}
}

// tollFraud: INVITEs without credentials to international numbers, each
// answered 407 and ACKed; FreeSWITCH abandons each channel 10 s later.
func (n *night) tollFraud() {
	numbers := []string{"011972599887766", "00441614960000", "011972599887767", "00441614960001",
		"9011972599887766", "011972599887768", "00441614960002", "+972599887769"}
	t := n.at(5*time.Hour + 12*time.Minute + 40*time.Second)
	src := netip.AddrPortFrom(tollBot, 5071)
	host := server4.Addr().String()
	for _, num := range numbers {
		callID := n.hex(32)
		tag := n.hex(8)
		branch := "z9hG4bK" + n.hex(10)
		sdp := "v=0\r\n" +
			"o=- 3976" + strconv.Itoa(100000+n.rng.IntN(899999)) + " 1 IN IP4 " + tollBot.String() + "\r\n" +
			"s=-\r\n" +
			"c=IN IP4 " + tollBot.String() + "\r\n" +
			"t=0 0\r\n" +
			"m=audio 10000 RTP/AVP 0 8 101\r\n" +
			"a=rtpmap:0 PCMU/8000\r\n" +
			"a=rtpmap:8 PCMA/8000\r\n" +
			"a=rtpmap:101 telephone-event/8000\r\n"
		from := `"1000" <sip:1000@` + host + ">;tag=" + tag
		to := "<sip:" + num + "@" + host + ">"
		invite := msg(
			"INVITE sip:"+num+"@"+host+" SIP/2.0",
			"Via: SIP/2.0/UDP "+src.String()+";branch="+branch+";rport",
			"From: "+from,
			"To: "+to,
			"Call-ID: "+callID,
			"CSeq: 1 INVITE",
			"Contact: <sip:1000@"+src.String()+">",
			"Max-Forwards: 70",
			"User-Agent: Z 5.5.10 v2.10.19.9",
			"Content-Type: application/sdp",
			"Content-Length: "+strconv.Itoa(len(sdp)),
		)
		invite = append(invite[:len(invite)-2], []byte("\r\n"+sdp)...) // body after the blank line
		n.send(t, src, server4, invite)
		totag := n.tag()
		res := msg(
			"SIP/2.0 407 Proxy Authentication Required",
			"Via: SIP/2.0/UDP "+src.String()+";branch="+branch+";rport="+strconv.Itoa(int(src.Port()))+";received="+src.Addr().String(),
			"From: "+from,
			"To: "+to+";tag="+totag,
			"Call-ID: "+callID,
			"CSeq: 1 INVITE",
			"User-Agent: "+serverUA,
			"Accept: application/sdp",
			"Allow: "+allow,
			"Supported: timer, path, replaces",
			"Allow-Events: "+events,
			`Proxy-Authenticate: Digest realm="`+host+`", nonce="`+n.uuid()+`", algorithm=MD5, qop="auth"`,
			"Content-Length: 0",
		)
		n.send(t.Add(1100*time.Microsecond), server4, src, res)
		ack := msg(
			"ACK sip:"+num+"@"+host+" SIP/2.0",
			"Via: SIP/2.0/UDP "+src.String()+";branch="+branch+";rport",
			"From: "+from,
			"To: "+to+";tag="+totag,
			"Call-ID: "+callID,
			"CSeq: 1 ACK",
			"Max-Forwards: 70",
			"Content-Length: 0",
		)
		n.send(t.Add(1300*time.Microsecond), src, server4, ack)

		// The log, as in B_logauthfail_true_invite_unauth_freeswitch.log.txt.
		uuid := n.uuid()
		ch := "sofia/internal/1000@" + host
		n.sessions++
		s := n.stamp(t)
		n.addLog(t,
			uuid+" "+s+"[NOTICE] switch_channel.c:1143 New Channel "+ch+" ["+uuid+"]",
			uuid+" "+s+"[DEBUG] switch_core_state_machine.c:581 ("+ch+") Running State Change CS_NEW (Cur 1 Tot "+strconv.Itoa(n.sessions)+")",
			uuid+" "+s+"[INFO] sofia.c:10472 "+ch+" receiving invite from "+src.String()+" version: 1.11.1-release  64bit call-id: "+callID,
			s+"[DEBUG] sofia.c:10566 verifying acl \"domains\" for ip/port "+tollBot.String()+":0.",
			s+"[WARNING] sofia_reg.c:1842 SIP auth challenge (INVITE) on sofia profile 'internal' for ["+num+"@"+host+"] from ip "+tollBot.String(),
			uuid+" "+s+"[DEBUG] switch_core_state_machine.c:600 ("+ch+") State NEW",
			s+"[DEBUG] sofia.c:2408 detaching session "+uuid,
		)
		t2 := t.Add(10*time.Second + 20*time.Millisecond)
		s2 := n.stamp(t2)
		var hang []string
		for _, l := range []string{
			"[WARNING] switch_core_state_machine.c:684 " + uuid + " " + ch + " Abandoned",
			"[NOTICE] switch_core_state_machine.c:687 Hangup " + ch + " [CS_NEW] [WRONG_CALL_STATE]",
			"[DEBUG] switch_core_state_machine.c:581 (" + ch + ") Running State Change CS_HANGUP (Cur 1 Tot " + strconv.Itoa(n.sessions) + ")",
			"[DEBUG] switch_core_state_machine.c:844 (" + ch + ") Callstate Change DOWN -> HANGUP",
			"[DEBUG] switch_core_state_machine.c:846 (" + ch + ") State HANGUP",
			"[DEBUG] mod_sofia.c:469 Channel " + ch + " hanging up, cause: WRONG_CALL_STATE",
			"[DEBUG] switch_core_state_machine.c:59 " + ch + " Standard HANGUP, cause: WRONG_CALL_STATE",
			"[NOTICE] switch_core_session.c:1766 Session " + strconv.Itoa(n.sessions) + " (" + ch + ") Ended",
			"[NOTICE] switch_core_session.c:1770 Close Channel " + ch + " [CS_DESTROY]",
			"[DEBUG] mod_sofia.c:380 " + ch + " SOFIA DESTROY",
		} {
			hang = append(hang, uuid+" "+s2+l)
		}
		n.addLog(t2, hang...)
		t = t.Add(15*time.Second + n.jitter(2*time.Second))
	}
}

// flood: 200 OPTIONS in 2 s from one address, each answered.
func (n *night) flood() {
	t := n.at(6*time.Hour + 20*time.Minute)
	src := netip.AddrPortFrom(flooder, 5060)
	host := server4.Addr().String()
	callBase := n.hex(8)
	for i := 0; i < 200; i++ {
		callID := callBase + "-" + strconv.Itoa(i)
		tag := n.hex(8)
		branch := "z9hG4bK" + n.hex(10)
		req := msg(
			"OPTIONS sip:"+host+" SIP/2.0",
			"Via: SIP/2.0/UDP "+src.String()+";branch="+branch+";rport",
			"From: <sip:ping@"+flooder.String()+">;tag="+tag,
			"To: <sip:"+host+">",
			"Call-ID: "+callID,
			"CSeq: 1 OPTIONS",
			"Max-Forwards: 70",
			"User-Agent: Asterisk PBX 16.2.1",
			"Content-Length: 0",
		)
		n.send(t, src, server4, req)
		res := msg(
			"SIP/2.0 200 OK",
			"Via: SIP/2.0/UDP "+src.String()+";branch="+branch+";rport="+strconv.Itoa(int(src.Port()))+";received="+src.Addr().String(),
			"From: <sip:ping@"+flooder.String()+">;tag="+tag,
			"To: <sip:"+host+">;tag="+n.tag(),
			"Call-ID: "+callID,
			"CSeq: 1 OPTIONS",
			"Contact: <sip:"+server4.String()+">",
			"User-Agent: "+serverUA,
			"Accept: application/sdp",
			"Allow: "+allow,
			"Supported: timer, path, replaces",
			"Allow-Events: "+events,
			"Content-Length: 0",
		)
		n.send(t.Add(300*time.Microsecond), server4, src, res)
		t = t.Add(10 * time.Millisecond)
	}
}

// --- a registering phone --------------------------------------------------

type phone struct {
	n                  *night
	user, password, ua string
	ip                 netip.Addr
	port               uint16
	server             netip.AddrPort
	callID             string
	cseq               int
}

// register runs REGISTER -> 401 -> REGISTER with credentials -> 200 OK (ok)
// or 403 Forbidden, as in the B_logauthfail_true_* fixtures, and logs the
// challenge (and the failure) as FreeSWITCH does with log-auth-failures.
func (p *phone) register(t time.Time, ok bool) {
	n := p.n
	src := netip.AddrPortFrom(p.ip, p.port)
	hostport := src.String()
	aor := "<sip:" + p.user + "@" + domain + ">"
	fromTag := n.hex(10)
	contact := "<sip:" + p.user + "@" + hostport + ";transport=UDP>"

	p.cseq++
	branch := "z9hG4bK" + n.hex(12)
	first := msg(
		"REGISTER sip:"+domain+" SIP/2.0",
		"Via: SIP/2.0/UDP "+hostport+";branch="+branch,
		"From: "+aor+";tag="+fromTag,
		"To: "+aor,
		"Call-ID: "+p.callID,
		"CSeq: "+strconv.Itoa(p.cseq)+" REGISTER",
		"Contact: "+contact,
		"Max-Forwards: 70",
		"Expires: 3600",
		"User-Agent: "+p.ua,
		"Content-Length: 0",
	)
	n.send(t, src, p.server, first)
	nonce := n.uuid()
	challenge := msg(
		"SIP/2.0 401 Unauthorized",
		"Via: SIP/2.0/UDP "+hostport+";branch="+branch,
		"From: "+aor+";tag="+fromTag,
		"To: "+aor+";tag="+n.tag(),
		"Call-ID: "+p.callID,
		"CSeq: "+strconv.Itoa(p.cseq)+" REGISTER",
		"User-Agent: "+serverUA,
		"Allow: "+allow,
		"Supported: timer, path, replaces",
		`WWW-Authenticate: Digest realm="`+domain+`", nonce="`+nonce+`", algorithm=MD5, qop="auth"`,
		"Content-Length: 0",
	)
	t1 := t.Add(500 * time.Microsecond)
	n.send(t1, p.server, src, challenge)
	n.addLog(t1, n.stamp(t1)+"[WARNING] sofia_reg.c:1842 SIP auth challenge (REGISTER) on sofia profile 'internal' for ["+p.user+"@"+domain+"] from ip "+p.ip.String())

	p.cseq++
	branch = "z9hG4bK" + n.hex(12)
	cnonce := n.hex(8)
	uri := "sip:" + domain
	second := msg(
		"REGISTER sip:"+domain+" SIP/2.0",
		"Via: SIP/2.0/UDP "+hostport+";branch="+branch,
		"From: "+aor+";tag="+fromTag,
		"To: "+aor,
		"Call-ID: "+p.callID,
		"CSeq: "+strconv.Itoa(p.cseq)+" REGISTER",
		"Contact: "+contact,
		`Authorization: Digest username="`+p.user+`",realm="`+domain+`",cnonce="`+cnonce+`",nc=00000001,qop=auth,uri="`+uri+`",nonce="`+nonce+`",response="`+
			digest(p.user, domain, p.password, "REGISTER", uri, nonce, "00000001", cnonce)+`",algorithm=MD5`,
		"Max-Forwards: 70",
		"Expires: 3600",
		"User-Agent: "+p.ua,
		"Content-Length: 0",
	)
	t2 := t1.Add(40 * time.Millisecond)
	n.send(t2, src, p.server, second)
	t3 := t2.Add(1500 * time.Microsecond)
	if ok {
		final := msg(
			"SIP/2.0 200 OK",
			"Via: SIP/2.0/UDP "+hostport+";branch="+branch,
			"From: "+aor+";tag="+fromTag,
			"To: "+aor+";tag="+n.tag(),
			"Call-ID: "+p.callID,
			"CSeq: "+strconv.Itoa(p.cseq)+" REGISTER",
			"Contact: "+contact+";expires=3600",
			"Date: "+t3.UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT"),
			"User-Agent: "+serverUA,
			"Allow: "+allow,
			"Supported: timer, path, replaces",
			"Content-Length: 0",
		)
		n.send(t3, p.server, src, final)
		n.regs[p.user] = reg{user: p.user, callID: p.callID, contact: "sip:" + p.user + "@" + hostport + ";transport=UDP",
			ip: p.ip, port: p.port, expires: t3.Add(3600 * time.Second)}
		return
	}
	final := msg(
		"SIP/2.0 403 Forbidden",
		"Via: SIP/2.0/UDP "+hostport+";branch="+branch,
		"From: "+aor+";tag="+fromTag,
		"To: "+aor+";tag="+n.tag(),
		"Call-ID: "+p.callID,
		"CSeq: "+strconv.Itoa(p.cseq)+" REGISTER",
		"User-Agent: "+serverUA,
		"Allow: "+allow,
		"Supported: timer, path, replaces",
		"Content-Length: 0",
	)
	n.send(t3, p.server, src, final)
	n.addLog(t3, n.stamp(t3)+"[WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for ["+p.user+"@"+domain+"] from ip "+p.ip.String())
}

// digest is RFC 2617 with qop=auth, MD5.
func digest(user, realm, password, method, uri, nonce, nc, cnonce string) string {
	h := func(s string) string { sum := md5.Sum([]byte(s)); return hex.EncodeToString(sum[:]) }
	return h(h(user+":"+realm+":"+password) + ":" + nonce + ":" + nc + ":" + cnonce + ":auth:" + h(method+":"+uri))
}

// --- output ----------------------------------------------------------------

// log renders the entries in time order, in FreeSWITCH 1.11's format.
func (n *night) log() []byte {
	slices.SortStableFunc(n.lines, func(a, b logEntry) int { return a.t.Compare(b.t) })
	var b bytes.Buffer
	for _, e := range n.lines {
		for _, l := range e.lines {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// registrations renders `show registrations as json` as FreeSWITCH 1.11 does
// (every value a string, absolute expires with FreeSWITCH's 60 s margin, no
// trailing newline), at the end of the night.
func (n *night) registrations() []byte {
	users := make([]string, 0, len(n.regs))
	for u := range n.regs {
		users = append(users, u)
	}
	slices.Sort(users)
	type row struct {
		RegUser      string `json:"reg_user"`
		Realm        string `json:"realm"`
		Token        string `json:"token"`
		URL          string `json:"url"`
		Expires      string `json:"expires"`
		NetworkIP    string `json:"network_ip"`
		NetworkPort  string `json:"network_port"`
		NetworkProto string `json:"network_proto"`
		Hostname     string `json:"hostname"`
		Metadata     string `json:"metadata"`
	}
	var rows []row
	for _, u := range users {
		r := n.regs[u]
		rows = append(rows, row{
			RegUser: r.user, Realm: domain, Token: r.callID, URL: "sofia/internal/" + r.contact,
			Expires: strconv.FormatInt(r.expires.Add(60*time.Second).Unix(), 10), NetworkIP: r.ip.String(),
			NetworkPort: strconv.Itoa(int(r.port)), NetworkProto: "udp", Hostname: hostname,
		})
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(struct {
		RowCount int   `json:"row_count"`
		Rows     []row `json:"rows"`
	}{len(rows), rows}); err != nil {
		panic(err) // static types: cannot fail
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// pcap renders the packets in time order: classic pcap, Ethernet, UDP.
func (n *night) pcap() ([]byte, error) {
	slices.SortStableFunc(n.packets, func(a, b packet) int { return a.t.Compare(b.t) })
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return nil, err
	}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	for _, p := range n.packets {
		src, dst := routerMAC, serverMAC
		if p.src.Addr() == server4.Addr() || p.src.Addr() == server6.Addr() {
			src, dst = serverMAC, routerMAC
		}
		eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst}
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.src.Port()), DstPort: layers.UDPPort(p.dst.Port())}
		var ip gopacket.NetworkLayer
		var ipl gopacket.SerializableLayer
		if p.src.Addr().Is4() {
			eth.EthernetType = layers.EthernetTypeIPv4
			n.ipID++
			v4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: n.ipID, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolUDP,
				SrcIP: p.src.Addr().AsSlice(), DstIP: p.dst.Addr().AsSlice()}
			ip, ipl = v4, v4
		} else {
			eth.EthernetType = layers.EthernetTypeIPv6
			v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP,
				SrcIP: p.src.Addr().AsSlice(), DstIP: p.dst.Addr().AsSlice()}
			ip, ipl = v6, v6
		}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			return nil, err
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, opts, eth, ipl, udp, gopacket.Payload(p.payload)); err != nil {
			return nil, fmt.Errorf("serialize %s -> %s: %w", p.src, p.dst, err)
		}
		data := buf.Bytes()
		ci := gopacket.CaptureInfo{Timestamp: p.t, CaptureLength: len(data), Length: len(data)}
		if err := w.WritePacket(ci, data); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

// --- helpers ---------------------------------------------------------------

func (n *night) send(t time.Time, src, dst netip.AddrPort, payload []byte) {
	n.packets = append(n.packets, packet{t: t, src: src, dst: dst, payload: payload})
}

func (n *night) addLog(t time.Time, lines ...string) {
	n.lines = append(n.lines, logEntry{t: t, lines: lines})
}

// stamp is "YYYY-MM-DD HH:MM:SS.uuuuuu NN.NN% " (the idle CPU field exists
// since FreeSWITCH 1.10.7).
func (n *night) stamp(t time.Time) string {
	idle := 93 + n.rng.Float64()*6.9
	return t.UTC().Format("2006-01-02 15:04:05.000000") + " " + strconv.FormatFloat(idle, 'f', 2, 64) + "% "
}

// msg joins header lines with CRLF and ends the header block; a body, if
// any, is appended by the caller after the final CRLF pair.
func msg(lines ...string) []byte {
	return []byte(strings.Join(lines, "\r\n") + "\r\n\r\n")
}

func (n *night) hex(chars int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, chars)
	for i := range b {
		b[i] = digits[n.rng.IntN(16)]
	}
	return string(b)
}

// tag is a sofia-sip style To tag (13 alphanumerics).
func (n *night) tag() string {
	const chars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 13)
	for i := range b {
		b[i] = chars[n.rng.IntN(len(chars))]
	}
	return string(b)
}

func (n *night) uuid() string {
	h := n.hex(32)
	return h[:8] + "-" + h[8:12] + "-4" + h[13:16] + "-" + "89ab"[n.rng.IntN(4):][:1] + h[17:20] + "-" + h[20:]
}

// at is start+d plus a random fraction of a second, so that records do not
// fall on whole seconds.
func (n *night) at(d time.Duration) time.Time {
	return start.Add(d + time.Duration(n.rng.IntN(1_000_000))*time.Microsecond)
}

func (n *night) jitter(d time.Duration) time.Duration {
	return time.Duration(n.rng.Int64N(int64(2*d))) - d
}
