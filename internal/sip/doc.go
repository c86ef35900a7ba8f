// Package sip owns sipwarden's view of SIP on the wire. Its sources turn
// what arrives into Packets: the HEP listener (HEPv3 from FreeSWITCH's
// capture-server, only from allowed senders and capture IDs), live AF_PACKET
// capture and pcap/pcapng files (IP fragments and TCP reassembled, TCP
// handshakes tracked); the bytes themselves are decoded by package sipcodec.
// Its Analyzer turns the SIP messages inside them into offense.Offense
// records (scanner_user_agent, toll_fraud_invite, extension_scan,
// auth_failure, flood, malformed_sip, sip_injection) and reports the
// registrations FreeSWITCH's 200 OKs to REGISTER confirm.
//
// It must not decide or ban: every offense goes to the offense.Sink it is
// given, and the jail applies rule switches, weights and the whitelist. The
// source address of an offense is always the packet's, never a header's.
// Trust: a response is evidence only when a FreeSWITCH address sent it
// (Options.Servers, or learned from the capture in replay); an offense is
// Verified only when a round trip with its source was seen (a TCP handshake,
// a digest answer to a nonce FreeSWITCH gave that address), never because
// HEP claims TCP.
//
// Parsing: sipgo's parser (imported as sipmsg) is the judge of what is
// malformed. A zero-allocation literal scanner reads the fields the rules need
// and vouches for a message only when it is sure sipgo would accept it (a
// differential fuzz test holds it to that); anything unusual is handed to
// sipgo. Leading CR/LF/whitespace before a start line is skipped, as sofia
// does. Requests are counted per source address before any parsing, and a
// source over the flood threshold is not parsed for the rest of its window.
//
// Limits: TCP reassembly holds at most 16,384 flows, 64 KiB per message and
// 16 MiB in all; IP reassembly at most 256 datagrams; per-address state is
// capped (Config.MaxTrackedIPs) and evicted at random when full, so a flood
// of spoofed sources cannot exhaust memory.
package sip
