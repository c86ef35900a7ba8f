package fslab

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// UA is a bare UDP SIP endpoint in one of the lab's namespaces: it sends
// exactly the bytes a test writes (hostile ones included) and reads the
// answers.
type UA struct {
	conn *net.UDPConn
	To   netip.AddrPort
}

// UA opens a UDP socket in namespace ns bound to local (port 0: any),
// talking to FreeSWITCH's port port.
func (l *Lab) UA(ns string, local netip.AddrPort, port int) *UA {
	l.t.Helper()
	var c *net.UDPConn
	err := InNS(ns, func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(local))
		return err
	})
	if err != nil {
		l.t.Fatalf("UDP socket in %s on %s: %v", ns, local, err)
	}
	l.t.Cleanup(func() { c.Close() })
	return &UA{conn: c, To: netip.AddrPortFrom(FSAddr, uint16(port))}
}

// Local is the socket's address.
func (u *UA) Local() netip.AddrPort { return u.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Send sends one message; LF line ends become CRLF.
func (u *UA) Send(msg string) error {
	msg = strings.ReplaceAll(strings.ReplaceAll(msg, "\r\n", "\n"), "\n", "\r\n")
	_, err := u.conn.WriteToUDPAddrPort([]byte(msg), u.To)
	return err
}

// ErrNoAnswer is returned when nothing arrives in time.
var ErrNoAnswer = errors.New("no answer")

// Recv reads one message within timeout.
func (u *UA) Recv(timeout time.Duration) (string, error) {
	buf := make([]byte, 65536)
	u.conn.SetReadDeadline(time.Now().Add(timeout))
	n, _, err := u.conn.ReadFromUDPAddrPort(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "", ErrNoAnswer
	}
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// Final sends msg and returns the first final (>= 200) answer whose
// Call-ID is callID, skipping provisional ones and anything else.
func (u *UA) Final(msg, callID string, timeout time.Duration) (string, error) {
	if err := u.Send(msg); err != nil {
		return "", err
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return "", ErrNoAnswer
		}
		resp, err := u.Recv(left)
		if err != nil {
			return "", err
		}
		if Status(resp) >= 200 && Header(resp, "Call-ID") == callID {
			return resp, nil
		}
	}
}

// Status is the status code of a response (0 for a request or garbage).
func Status(msg string) int {
	rest, ok := strings.CutPrefix(msg, "SIP/2.0 ")
	if !ok || len(rest) < 3 {
		return 0
	}
	n, _ := strconv.Atoi(rest[:3])
	return n
}

// Header is the first value of a header (case-insensitive name).
func Header(msg, name string) string {
	for _, line := range strings.Split(msg, "\r\n") {
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// challengeParam reads one parameter of a Digest challenge.
func challengeParam(ch, name string) string {
	for _, part := range strings.Split(strings.TrimPrefix(ch, "Digest "), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok && strings.EqualFold(k, name) {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// Digest answers the challenge in resp (401 or 407) for method and uri
// with user and password (RFC 2617, MD5, qop=auth when offered). realm
// overrides the challenge's realm in the answer (a hostile client's
// choice) when not empty; the hash uses the same value.
func Digest(resp, method, uri, user, password, realm string) (header, value string) {
	header, ch := "Authorization", Header(resp, "WWW-Authenticate")
	if ch == "" {
		header, ch = "Proxy-Authorization", Header(resp, "Proxy-Authenticate")
	}
	if realm == "" {
		realm = challengeParam(ch, "realm")
	}
	nonce := challengeParam(ch, "nonce")
	h := func(s string) string { sum := md5.Sum([]byte(s)); return hex.EncodeToString(sum[:]) }
	ha1 := h(user + ":" + realm + ":" + password)
	ha2 := h(method + ":" + uri)
	if strings.Contains(challengeParam(ch, "qop"), "auth") {
		const nc, cnonce = "00000001", "0a4f113b"
		r := h(ha1 + ":" + nonce + ":" + nc + ":" + cnonce + ":auth:" + ha2)
		return header, fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=MD5, qop=auth, nc=%s, cnonce="%s"`,
			user, realm, nonce, uri, r, nc, cnonce)
	}
	r := h(ha1 + ":" + nonce + ":" + ha2)
	return header, fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=MD5`, user, realm, nonce, uri, r)
}
