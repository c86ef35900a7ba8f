package sip

import (
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// Every offense from a packet names the offender's NAT mapping: the source
// port of a request, the destination port of a response, and the transport.
func TestOffenseMapping(t *testing.T) {
	nat := netip.MustParseAddrPort("198.51.100.7:40123")
	fs := netip.MustParseAddrPort("192.0.2.1:5060")
	scanner := "OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:40123;branch=z9hG4bK1\r\n" +
		"From: <sip:100@192.0.2.1>;tag=1\r\nTo: <sip:100@192.0.2.1>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n" +
		"User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n"
	forbidden := "SIP/2.0 403 Forbidden\r\nVia: SIP/2.0/UDP 198.51.100.7:40123;branch=z9hG4bK2\r\n" +
		"From: <sip:1001@192.0.2.1>;tag=2\r\nTo: <sip:1001@192.0.2.1>;tag=3\r\nCall-ID: c2\r\nCSeq: 2 REGISTER\r\n" +
		"Content-Length: 0\r\n\r\n"
	for _, tc := range []struct {
		name      string
		p         Packet
		rule      offense.Rule
		port      uint16
		transport offense.Transport
	}{
		{"request over udp", Packet{Src: nat, Dst: fs, Payload: []byte(scanner)}, offense.ScannerUserAgent, 40123, offense.TransportUDP},
		{"request over tcp", Packet{Src: nat, Dst: fs, TCP: true, Payload: []byte(scanner)}, offense.ScannerUserAgent, 40123, offense.TransportTCP},
		{"response to the offender", Packet{Src: fs, Dst: nat, Payload: []byte(forbidden)}, offense.AuthFailure, 40123, offense.TransportUDP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &collector{}
			a, err := NewAnalyzer(Options{Config: DefaultConfig(), Sink: c, Registerer: prometheus.NewRegistry(),
				Servers: func(ip netip.Addr) bool { return ip == fs.Addr() }})
			if err != nil {
				t.Fatal(err)
			}
			tc.p.Source, tc.p.Time = offense.SourceHEP, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
			a.Packet(tc.p)
			var found bool
			for _, o := range c.offs {
				if o.Rule != tc.rule {
					continue
				}
				found = true
				if o.IP != nat.Addr() || o.Port != tc.port || o.Transport != tc.transport {
					t.Errorf("%s: mapping %s %d/%s, want %s %d/%s", o.Rule, o.IP, o.Port, o.Transport, nat.Addr(), tc.port, tc.transport)
				}
			}
			if !found {
				t.Fatalf("no %s among %+v", tc.rule, c.offs)
			}
		})
	}
}
