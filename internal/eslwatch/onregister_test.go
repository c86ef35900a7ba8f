package eslwatch

import (
	"strings"
	"testing"

	"github.com/sipwarden/sipwarden/internal/eslwatch/esltest"
	"github.com/sipwarden/sipwarden/internal/whitelist"
)

// OnRegister hears each sofia::register event (the graduated response
// lifts quarantines on it), never a failure or an un-REGISTER.
func TestOnRegister(t *testing.T) {
	srv := esltest.NewServer(t, "ClueCon")
	got := make(chan whitelist.Registration, 10)
	h := start(t, []string{srv.Addr}, func(o *Options) { o.OnRegister = func(r whitelist.Registration) { got <- r } })
	h.waitFor("resync", 1)
	evs := fixtureEvents(t, "A_vanilla_esl_custom_sofia_events.raw.txt")
	if err := srv.Push(strings.Join(evs, "")); err != nil {
		t.Fatal(err)
	}
	h.waitFor("event", len(evs))
	if len(got) != 1 {
		t.Fatalf("OnRegister called %d times, want once (the one sofia::register)", len(got))
	}
	r := <-got
	if r.IP.String() != "127.0.0.1" || r.User != "1000" {
		t.Fatalf("registration %+v", r)
	}
}
