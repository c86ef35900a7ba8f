// Package sipcodec decodes and encodes the containers SIP arrives in: HEPv3
// datagrams, pcap/pcapng files and link-layer frames down to their UDP or TCP
// payload (Ethernet, Linux cooked, BSD loopback, raw IP; IPv4 and IPv6 with
// extension headers, fragments reassembled by a bounded Defragmenter).
//
// It owns bytes only: it must not listen on sockets, keep per-flow SIP state
// or judge what it decodes (that is package sip). Every decoder is
// allocation-free on the hot path, never panics on hostile input (each has a
// Fuzz target) and returns payloads that alias its input.
package sipcodec
