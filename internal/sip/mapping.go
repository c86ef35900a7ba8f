package sip

import "github.com/sipwarden/sipwarden/internal/offense"

// withMapping fills the offender's NAT mapping (port and transport) into o:
// the packet's source for a request, its destination for a response (the
// offender is the address the response goes to). A quarantine blocks that
// mapping instead of the whole address.
func withMapping(o offense.Offense, p Packet, request bool) offense.Offense {
	ap := p.Dst
	if request {
		ap = p.Src
	}
	o.Port = ap.Port()
	o.Transport = offense.TransportUDP
	if p.TCP {
		o.Transport = offense.TransportTCP
	}
	return o
}
