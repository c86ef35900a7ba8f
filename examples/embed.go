// Package examples holds what operators copy: the annotated configuration,
// FreeSWITCH, firewall, systemd, fail2ban, Prometheus and Grafana files,
// each validated by the tests here with the real tools.
//
// Its only Go is the embedded reference configuration, so that
// `sipwarden config defaults` prints the very file shipped here.
package examples

import _ "embed"

// Config is examples/sipwarden.yaml, the annotated reference configuration
// with every key at its default (examples_test ties it to config.Default).
//
//go:embed sipwarden.yaml
var Config []byte
