package whitelist

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Bounds of UnmarshalState: a state file is ours, but it is read back from
// disk, so it is checked like any input.
const (
	MaxStateBytes         = 256 << 20 // about 800k registrations of ordinary size
	MaxStateRegistrations = 1_000_000
	maxStateField         = 4096 // bytes in one string of a registration
	stateVersion          = 1
)

// ErrState reports a state blob that UnmarshalState refused; nothing of it
// was loaded.
var ErrState = errors.New("whitelist state")

type stateDoc struct {
	Version       int        `json:"version"`
	Registrations []stateReg `json:"registrations"`
}

type stateReg struct {
	IP netip.Addr `json:"ip"`
	Registration
}

// MarshalState returns the live registrations with their absolute expiries
// (static prefixes come from the configuration, not from here), for the
// jail's state file. The output is sorted, so equal sets give equal bytes.
func (w *Whitelist) MarshalState() ([]byte, error) {
	limit := w.clock()
	w.mu.RLock()
	limit -= w.grace
	doc := stateDoc{Version: stateVersion, Registrations: make([]stateReg, 0, w.store.nRegs)}
	for ip, e := range w.store.byIP {
		for i := range e.regs {
			if e.regs[i].expires > limit {
				doc.Registrations = append(doc.Registrations, stateReg{IP: ip, Registration: e.regs[i].registration(ip)})
			}
		}
	}
	w.mu.RUnlock()
	slices.SortFunc(doc.Registrations, func(a, b stateReg) int {
		return cmp.Or(a.IP.Compare(b.IP), strings.Compare(a.Node, b.Node), strings.Compare(a.CallID, b.CallID),
			strings.Compare(a.User, b.User), strings.Compare(a.Contact, b.Contact))
	})
	return json.Marshal(doc)
}

// UnmarshalState adds the registrations of a MarshalState blob: they
// protect at once, and each node's first resync replaces its own (they are
// older than any listing). Registrations already expired are dropped. A
// blob that is not such a state, or breaks a bound, is an error wrapping
// ErrState and nothing is loaded.
func (w *Whitelist) UnmarshalState(data []byte) error {
	if len(data) > MaxStateBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrState, len(data), MaxStateBytes)
	}
	var doc stateDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the object", ErrState)
	}
	if doc.Version != stateVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrState, doc.Version, stateVersion)
	}
	if len(doc.Registrations) > MaxStateRegistrations {
		return fmt.Errorf("%w: %d registrations, limit %d", ErrState, len(doc.Registrations), MaxStateRegistrations)
	}
	for i := range doc.Registrations {
		if err := doc.Registrations[i].check(); err != nil {
			return fmt.Errorf("%w: registration %d: %w", ErrState, i, err)
		}
	}
	now := w.clock()
	w.mu.Lock()
	defer w.mu.Unlock()
	seq := w.store.bump()
	for i := range doc.Registrations {
		r := &doc.Registrations[i].Registration
		r.IP = doc.Registrations[i].IP.Unmap().WithZone("")
		if r.ExpiresAt.UnixNano() <= now-w.grace {
			continue
		}
		w.store.upsert(r, seq)
	}
	w.publishLocked()
	return nil
}

func (s *stateReg) check() error {
	if !s.IP.IsValid() {
		return errors.New("no address")
	}
	if s.ExpiresAt.IsZero() || s.ExpiresAt.Year() > 9999 {
		return fmt.Errorf("expiry %v", s.ExpiresAt)
	}
	for _, f := range []string{s.User, s.Realm, s.Profile, s.Contact, s.CallID, s.UserAgent, s.Node} {
		if len(f) > maxStateField {
			return fmt.Errorf("a field of %d bytes, limit %d", len(f), maxStateField)
		}
	}
	return nil
}
