package replay

import (
	"net/netip"

	"github.com/sipwarden/sipwarden/internal/protect"
)

// Verdicts of the graduated response for a protected address.
const (
	VerdictQuarantined = "quarantined" // a NAT mapping of a registered address was quarantined
	VerdictThrottled   = "throttled"   // a registered address went over its failure budget
)

// protectVerdict is what the guard did to a protected ip, if anything.
func protectVerdict(g *protect.Guard, ip netip.Addr) (verdict, why string) {
	if g == nil {
		return "", ""
	}
	switch g.Ever(ip) {
	case "throttled":
		return VerdictThrottled, "registered office; " + g.Summary(ip)
	case "quarantined":
		return VerdictQuarantined, "registered office; " + g.Summary(ip)
	}
	return "", ""
}
