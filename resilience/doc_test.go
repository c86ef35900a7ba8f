// Package resilience_test attacks the whole daemon: the sipwarden binary,
// built once in TestMain, run as the operator runs it (`sipwarden run
// -config FILE`), mostly inside network namespaces it creates, and hit
// where it hurts: capabilities taken away, a corrupt state file, kernel sets
// flushed or destroyed under it, FreeSWITCH restarting, a flood of forged
// source addresses, a hostile client across a real link.
//
// It owns no production code and must not test a package in isolation (each
// package's own tests do that): every assertion is made from outside the
// process, through its exit code, its stderr, its HTTP API, /metrics, /proc
// and the kernel's ipsets.
//
// The suite needs root, ip(8), ipset(8) and setpriv(1) and never skips:
// a missing tool fails it. Namespaces are named swtest-res-<pid>-<n> and
// deleted at the end; traffic stays on 127.0.0.0/8 or between namespaces
// the suite creates.
package resilience_test
