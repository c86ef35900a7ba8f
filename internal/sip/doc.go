// Package sip owns sipwarden's view of SIP on the wire: it decodes HEPv3
// datagrams, live AF_PACKET captures and pcap/pcapng files into Packets, and
// its Analyzer turns the SIP messages inside them into offense.Offense records
// (scanner_user_agent, toll_fraud_invite, extension_scan, auth_failure, flood,
// malformed_sip, sip_injection) and learns registrations from 200 OKs to
// REGISTER.
//
// It must not decide or ban: every offense goes to the offense.Sink it is
// given, and the jail applies rule switches, weights and the whitelist. The
// source address of an offense is always the packet's, never a header's.
//
// Parsing: sipgo's parser (imported as sipmsg) is the judge of what is
// malformed. A zero-allocation literal scanner reads the fields the rules need
// and vouches for a message only when it is sure sipgo would accept it (a
// differential fuzz test holds it to that); anything unusual is handed to
// sipgo. Requests are counted per source address before any parsing, and a
// source over the flood threshold is not parsed for the rest of its window.
//
// Limits: TCP is read one segment at a time (a segment must start with a SIP
// start line and hold whole messages; continuations and partial messages are
// skipped and counted, not reassembled); IPv4/IPv6 fragments are skipped;
// per-address state is capped (Config.MaxTrackedIPs) and evicted at random
// when full, so a flood of spoofed sources cannot exhaust memory.
package sip
