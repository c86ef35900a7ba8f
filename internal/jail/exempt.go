package jail

import (
	"net/netip"

	"github.com/sipwarden/sipwarden/internal/decision"
)

// Exempt reports whether ip may not be banned, and why, by the same
// decision an automatic or manual ban takes, without banning: reason is
// "never_ban", "static", "registered", or "" when a ban would go ahead.
// `sipwarden check` (and fail2ban's ignorecommand through it) asks this.
func (j *Jail) Exempt(ip netip.Addr) (reason, why string) {
	if !ip.IsValid() {
		return "", ""
	}
	ip = ip.Unmap().WithZone("")
	pfx := j.key(ip)
	v := j.decide(ip, pfx)
	if v.Reason == decision.Ban {
		return "", ""
	}
	return v.Reason.String(), v.Why
}
