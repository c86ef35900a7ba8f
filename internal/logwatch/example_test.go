package logwatch_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sipwarden/sipwarden/internal/logwatch"
	"github.com/sipwarden/sipwarden/internal/offense"
)

func ExampleScan() {
	log := `2026-11-25 19:48:24.399703 99.43% [WARNING] sofia_reg.c:1842 SIP auth challenge (REGISTER) on sofia profile 'internal' for [5555@pbx.example.com] from ip 203.0.113.9
2026-11-25 19:48:24.399703 99.43% [WARNING] sofia_reg.c:3210 Can't find user [5555@pbx.example.com] from 203.0.113.9
You must define a domain called 'pbx.example.com' in your directory and add a user with the id="5555" attribute
and you must configure your device to use the proper domain in its authentication credentials.
2026-11-25 19:48:24.399703 99.43% [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [5555@pbx.example.com] from ip 203.0.113.9
`
	p := logwatch.NewParser(nil)
	p.SetLocation(time.UTC)
	lines, err := logwatch.Scan(context.Background(), strings.NewReader(log), p, offense.SinkFunc(func(o offense.Offense) {
		fmt.Println(o.Time.Format(time.RFC3339), o.IP, o.Rule, o.User, o.Verified)
	}), nil)
	fmt.Println(lines, err)
	// Output:
	// 2026-11-25T19:48:24Z 203.0.113.9 auth_challenge 5555 false
	// 2026-11-25T19:48:24Z 203.0.113.9 unknown_user 5555 false
	// 2026-11-25T19:48:24Z 203.0.113.9 auth_failure 5555 true
	// 5 <nil>
}

func ExampleFollower() {
	f, err := logwatch.NewFollower(logwatch.Options{
		Files: []string{"/var/log/freeswitch/freeswitch.log"},
		Sink:  offense.SinkFunc(func(o offense.Offense) { fmt.Println(o.IP, o.Rule) }),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	fmt.Println(f.Run(ctx)) // nil once ctx is done
	// Output: <nil>
}
