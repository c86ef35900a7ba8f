// Package offense defines the one record that every source (Event Socket,
// FreeSWITCH logs, SIP payloads) emits and the jail consumes, and the stable
// rule and source names that appear in metrics, logs and the API.
//
// It owns no behaviour: it must not import any other sipwarden package, so
// that sources and the jail can both depend on it without depending on each
// other.
package offense

import (
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Rule names an offense rule. The names are part of the user-facing contract
// (SPEC.md): never rename one.
type Rule string

// The rules of SPEC.md, plus auth_challenge (off by default).
const (
	AuthFailure      Rule = "auth_failure"       // REGISTER/INVITE digest failure
	AuthChallenge    Rule = "auth_challenge"     // a 401/407 challenge; every login has one (weight 0 by default)
	UnknownUser      Rule = "unknown_user"       // "Can't find user"
	ACLReject        Rule = "acl_reject"         // rejected by an ACL
	ScannerUserAgent Rule = "scanner_user_agent" // SIPVicious, sipcli, ...
	TollFraudInvite  Rule = "toll_fraud_invite"  // unauthenticated INVITE to international/premium numbers
	ExtensionScan    Rule = "extension_scan"     // many distinct target users
	Flood            Rule = "flood"              // request rate
	MalformedSIP     Rule = "malformed_sip"      // unparsable or incomplete SIP
	SIPInjection     Rule = "sip_injection"      // SQL/shell payloads in headers
	NoRoute          Rule = "no_route"           // calls from the public context to nowhere
)

// Rules lists every known rule, in a stable order.
var Rules = []Rule{
	AuthFailure, AuthChallenge, UnknownUser, ACLReject, ScannerUserAgent,
	TollFraudInvite, ExtensionScan, Flood, MalformedSIP, SIPInjection, NoRoute,
}

// Known reports whether r is one of Rules.
func (r Rule) Known() bool {
	for _, k := range Rules {
		if k == r {
			return true
		}
	}
	return false
}

// Source names where an offense was seen. Values are bounded metric labels.
type Source string

// The sources.
const (
	SourceESL     Source = "esl"     // FreeSWITCH Event Socket
	SourceLog     Source = "log"     // FreeSWITCH log lines
	SourceHEP     Source = "hep"     // HEPv3 from FreeSWITCH's capture-server
	SourceCapture Source = "capture" // live AF_PACKET capture
	SourcePCAP    Source = "pcap"    // pcap/pcapng file (replay)
	SourceAPI     Source = "api"     // manual ban through the HTTP API
)

// Transport is the SIP transport of an offense's mapping.
type Transport string

// The transports. TLS is TCP on the wire (a kernel rule matches it as tcp).
const (
	TransportUDP Transport = "udp"
	TransportTCP Transport = "tcp"
	TransportTLS Transport = "tls"
)

// Offense is one piece of evidence against one source address.
type Offense struct {
	IP     netip.Addr // the address FreeSWITCH or the packet saw; never a header's claim. Unmapped.
	Rule   Rule
	Source Source
	Time   time.Time // when it happened (the record's own time, not the reader's)
	User   string    // the target or auth user when known (e.g. "1003")
	Method string    // SIP method when known (REGISTER, INVITE)
	Detail string    // short, human: user agent, dialled number, ACL name...
	// Port and Transport are the source's NAT mapping as FreeSWITCH or the
	// packet saw it (Event Socket network-port, the packet's source port):
	// what a quarantine blocks instead of the whole address. Zero and ""
	// when unknown (log lines carry no port).
	Port      uint16
	Transport Transport
	// Verified marks evidence that needed a round trip with the source
	// (a digest failure after a challenge, a TCP message): a forged UDP
	// source address cannot produce it. The jail may weigh it more.
	Verified bool
}

// Sink receives offenses. Implementations are safe for concurrent use and
// do not block for long: sources call Offend on their hot path.
type Sink interface {
	Offend(Offense)
}

// SinkFunc adapts a function to a Sink.
type SinkFunc func(Offense)

// Offend calls f(o).
func (f SinkFunc) Offend(o Offense) { f(o) }

// Namespace is the Prometheus namespace of every sipwarden metric.
const Namespace = "sipwarden"

// ParseErrors registers on reg the counter
// sipwarden_parse_errors_total{source=src}: input records of that source that
// could not be parsed. Each source registers its own, once per registry
// (through promauto: a second registration is a bug and panics).
func ParseErrors(reg prometheus.Registerer, src Source) prometheus.Counter {
	return promauto.With(reg).NewCounter(prometheus.CounterOpts{
		Namespace:   Namespace,
		Name:        "parse_errors_total",
		Help:        "Input records that could not be parsed, by source; they are counted and skipped.",
		ConstLabels: prometheus.Labels{"source": string(src)},
	})
}
