package whitelist

import "net/netip"

// Registrations returns how many live registrations ip holds (0 for a
// static-only or unknown address). The ban decision's log line uses it.
func (w *Whitelist) Registrations(ip netip.Addr) int {
	e, ok := w.Lookup(ip)
	if !ok {
		return 0
	}
	return len(e.Registrations)
}
