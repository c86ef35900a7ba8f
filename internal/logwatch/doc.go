// Package logwatch reads FreeSWITCH log files (followed live, replayed from
// plain or gzip files, or read from stdin) and turns the lines that prove an
// attack into offense.Offense records for the jail.
//
// It owns the recognition of FreeSWITCH's log line formats (with and without
// the idle-CPU field, year-less dates, syslog/journald prefixes, session-UUID
// prefixes, unprefixed continuation lines), the rules that read them
// (auth_failure, auth_challenge, unknown_user, acl_reject, no_route), and the
// rotation-safe following of log files.
//
// It must not score, ban or whitelist: every offense it sees goes to the Sink,
// and the jail decides. It never takes an address from text a client
// controls: the offending address is the one FreeSWITCH took from the socket,
// and a rule only matches when its text starts the message part of a line.
package logwatch
