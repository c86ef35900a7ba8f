package replay

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// writePcap writes UDP datagrams (src, dst "ip:port", payload) at the given
// times as an Ethernet pcap.
func writePcap(t *testing.T, path string, pkts []struct {
	at       time.Time
	src, dst string
	payload  string
}) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, p := range pkts {
		sh, sp, _ := net.SplitHostPort(p.src)
		dh, dp, _ := net.SplitHostPort(p.dst)
		var spn, dpn int
		fmt.Sscan(sp, &spn)
		fmt.Sscan(dp, &dpn)
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.ParseIP(sh), DstIP: net.ParseIP(dh)}
		udp := &layers.UDP{SrcPort: layers.UDPPort(spn), DstPort: layers.UDPPort(dpn)}
		udp.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp, gopacket.Payload(p.payload)); err != nil {
			t.Fatal(err)
		}
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: p.at, CaptureLength: len(buf.Bytes()), Length: len(buf.Bytes())}, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
}

// Finding 6: a registration learned from a capture protects its address
// from FreeSWITCH's 200 OK on, never before it, and only when FreeSWITCH
// (inferred: the address the REGISTER went to and that answered it) sent
// it; a forged 200 OK from elsewhere protects nobody.
func TestLearnedRegistrationsForwardOnly(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC)
	var log strings.Builder
	for _, ip := range []string{"203.0.113.20", "203.0.113.21"} {
		for i := 0; i < 6; i++ {
			fmt.Fprintf(&log, "%s 99.00%% [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [1003@pbx.example.com] from ip %s\n",
				t0.Add(time.Duration(i)*time.Second).Format("2006-01-02 15:04:05.000000"), ip)
		}
	}
	logPath := filepath.Join(dir, "freeswitch.log")
	if err := os.WriteFile(logPath, []byte(log.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	register := func(ip, cid string) string {
		return "REGISTER sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP " + ip + ":5060;branch=z9hG4bK-" + cid + "\r\nMax-Forwards: 70\r\n" +
			"From: <sip:1000@pbx.example.com>;tag=" + cid + "\r\nTo: <sip:1000@pbx.example.com>\r\nCall-ID: " + cid + "\r\nCSeq: 1 REGISTER\r\n" +
			"Contact: <sip:1000@" + ip + ":5060>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
	}
	ok := func(ip, cid string) string {
		return "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP " + ip + ":5060;branch=z9hG4bK-" + cid + "\r\n" +
			"From: <sip:1000@pbx.example.com>;tag=" + cid + "\r\nTo: <sip:1000@pbx.example.com>;tag=fs\r\nCall-ID: " + cid + "\r\nCSeq: 1 REGISTER\r\n" +
			"Contact: <sip:1000@" + ip + ":5060>;expires=999999999\r\nContent-Length: 0\r\n\r\n"
	}
	pcapPath := filepath.Join(dir, "night.pcap")
	writePcap(t, pcapPath, []struct {
		at       time.Time
		src, dst string
		payload  string
	}{
		// .20 registers with FreeSWITCH an hour after its failures.
		{t0.Add(time.Hour), "203.0.113.20:5060", "192.0.2.2:5060", register("203.0.113.20", "r20")},
		{t0.Add(time.Hour), "192.0.2.2:5060", "203.0.113.20:5060", ok("203.0.113.20", "r20")},
		// .21 gets a 200 OK from an address it never asked, before its failures.
		{t0.Add(-time.Minute), "192.0.2.200:5060", "203.0.113.21:5060", ok("203.0.113.21", "r21")},
	})
	rep := run(t, "", logPath, pcapPath)
	v := verdicts(rep)
	for _, ip := range []string{"203.0.113.20", "203.0.113.21"} {
		if v[ip].Verdict != VerdictBan {
			t.Errorf("%s: %+v, want ban (no registration covered its failures)", ip, v[ip])
		}
	}
	if !strings.Contains(rep.Learned, "learned 1 registrations of 1 addresses from FreeSWITCH at 192.0.2.2") {
		t.Errorf("learned: %q", rep.Learned)
	}
	if len(rep.Servers) != 1 || rep.Servers[0].String() != "192.0.2.2" {
		t.Errorf("servers inferred: %v", rep.Servers)
	}
}
