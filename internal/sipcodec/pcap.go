package sipcodec

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/pcapgo"
)

// IsCapture reports whether head (the first bytes of a file) is a pcap or
// pcapng capture.
func IsCapture(head []byte) bool {
	if len(head) < 4 {
		return false
	}
	switch binary.LittleEndian.Uint32(head[:4]) {
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1, 0x0a0d0d0a:
		return true
	}
	return false
}

// ErrNotCapture: the stream is neither pcap nor pcapng.
var ErrNotCapture = errors.New("not a pcap or pcapng capture")

// CaptureReader reads the frames of a pcap or pcapng stream, each with its
// link type (pcapng may mix them) and timestamp.
type CaptureReader struct {
	src interface {
		ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	}
	linkOf func(gopacket.CaptureInfo) int
}

// NewCaptureReader reads the file header of r.
func NewCaptureReader(r io.Reader) (*CaptureReader, error) {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	head, _ := br.Peek(4)
	if !IsCapture(head) {
		return nil, ErrNotCapture
	}
	if binary.LittleEndian.Uint32(head) == 0x0a0d0d0a {
		ng, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return nil, fmt.Errorf("pcapng: %w", err)
		}
		return &CaptureReader{src: ng, linkOf: func(ci gopacket.CaptureInfo) int {
			if i, err := ng.Interface(ci.InterfaceIndex); err == nil {
				return int(i.LinkType)
			}
			return int(ng.LinkType())
		}}, nil
	}
	pr, err := pcapgo.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("pcap: %w", err)
	}
	lt := int(pr.LinkType())
	return &CaptureReader{src: pr, linkOf: func(gopacket.CaptureInfo) int { return lt }}, nil
}

// Next returns the next frame; data aliases the reader's buffer until the
// next call. A stream cut short ends with io.EOF, like a whole one.
func (c *CaptureReader) Next() (data []byte, link int, ts time.Time, err error) {
	data, ci, err := c.src.ZeroCopyReadPacketData()
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		return nil, 0, time.Time{}, err
	}
	return data, c.linkOf(ci), ci.Timestamp, nil
}
