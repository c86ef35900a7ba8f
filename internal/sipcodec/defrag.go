package sipcodec

import (
	"errors"
	"net/netip"
)

// Defragmenter reassembles IPv4 and IPv6 fragments, within fixed bounds: at
// most MaxDatagrams incomplete datagrams (the oldest is dropped for a new
// one), each at most 65,535 bytes in at most 64 fragments, and a datagram
// still incomplete after 4,096 further fragments is dropped. A datagram with
// overlapping fragments is dropped whole, as Linux does, so that what the
// analyzer sees is what the kernel delivered. It is not safe for concurrent
// use.
type Defragmenter struct {
	// MaxDatagrams bounds the datagrams held (default 256: at most 16 MiB).
	MaxDatagrams int

	pending map[fragKey]*fragDatagram
	seq     uint64 // fragments seen
	dropped uint64
}

// Errors of reassembly (the datagram is dropped).
var (
	ErrFragmentOverlap = errors.New("overlapping IP fragments")
	ErrFragmentTooBig  = errors.New("reassembled datagram over 65535 bytes or 64 fragments")
)

const (
	maxDatagram     = 65535
	maxFragments    = 64
	fragmentHorizon = 4096
)

type fragKey struct {
	src, dst netip.Addr
	id       uint32
	proto    uint8
}

type fragSpan struct{ from, to int }

type fragDatagram struct {
	buf   []byte
	spans []fragSpan
	have  int
	total int // -1 until the last fragment is seen
	born  uint64
}

// Held reports the incomplete datagrams held.
func (d *Defragmenter) Held() int { return len(d.pending) }

// Dropped reports the incomplete datagrams dropped (evicted, stale,
// overlapping or oversized).
func (d *Defragmenter) Dropped() uint64 { return d.dropped }

// add files one fragment (payload at byte offset off; more: not the last).
// It returns the whole datagram once complete, ErrFragmentHeld before.
func (d *Defragmenter) add(k fragKey, off int, more bool, payload []byte) ([]byte, error) {
	if d.pending == nil {
		d.pending = make(map[fragKey]*fragDatagram)
	}
	d.seq++
	if d.seq%256 == 0 {
		for key, p := range d.pending {
			if d.seq-p.born > fragmentHorizon {
				delete(d.pending, key)
				d.dropped++
			}
		}
	}
	end := off + len(payload)
	p := d.pending[k]
	if p == nil {
		max := d.MaxDatagrams
		if max <= 0 {
			max = 256
		}
		if len(d.pending) >= max {
			var oldest fragKey
			var born uint64 = ^uint64(0)
			for key, q := range d.pending {
				if q.born < born {
					oldest, born = key, q.born
				}
			}
			delete(d.pending, oldest)
			d.dropped++
		}
		p = &fragDatagram{total: -1, born: d.seq}
		d.pending[k] = p
	}
	drop := func(err error) ([]byte, error) {
		delete(d.pending, k)
		d.dropped++
		return nil, err
	}
	if end > maxDatagram || len(p.spans) >= maxFragments || (more && len(payload)%8 != 0) {
		return drop(ErrFragmentTooBig)
	}
	if !more {
		if p.total >= 0 && p.total != end {
			return drop(ErrFragmentOverlap)
		}
		p.total = end
	}
	if p.total >= 0 && end > p.total {
		return drop(ErrFragmentOverlap)
	}
	for _, s := range p.spans {
		if off < s.to && s.from < end {
			return drop(ErrFragmentOverlap)
		}
	}
	if len(p.buf) < end {
		p.buf = append(p.buf, make([]byte, end-len(p.buf))...)
	}
	copy(p.buf[off:end], payload)
	p.spans = append(p.spans, fragSpan{off, end})
	p.have += len(payload)
	if p.total < 0 || p.have != p.total {
		return nil, ErrFragmentHeld
	}
	delete(d.pending, k)
	return p.buf[:p.total], nil
}
