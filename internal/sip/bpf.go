package sip

import (
	"errors"
	"fmt"

	"golang.org/x/net/bpf"
)

// sipFilter builds a classic BPF program for Ethernet frames that accepts
// IPv4 and IPv6 UDP and TCP packets with a source or destination port in
// ports. What it cannot check it passes to the software decoder, which
// checks the ports again: IPv4 fragments (a non-first one has no ports) and
// IPv6 packets with extension headers (Hop-by-Hop, Routing, Fragment,
// Destination Options), so that neither hides SIP from the capture.
// dropOutgoing drops the kernel's PACKET_OUTGOING copies, which on "lo"
// duplicate every packet.
func sipFilter(ports []int, dropOutgoing bool) ([]bpf.RawInstruction, error) {
	if len(ports) == 0 {
		return nil, errors.New("no capture ports")
	}
	if len(ports) > 32 {
		return nil, fmt.Errorf("%d capture ports: at most 32", len(ports))
	}
	for _, p := range ports {
		if p <= 0 || p > 65535 {
			return nil, fmt.Errorf("bad capture port %d", p)
		}
	}
	var b asm
	if dropOutgoing {
		b.add(bpf.LoadExtension{Num: bpf.ExtType})
		b.jeq(4, "drop", "") // PACKET_OUTGOING
	}
	b.add(bpf.LoadAbsolute{Off: 12, Size: 2})
	b.jeq(0x0800, "v4", "")
	b.jeq(0x86dd, "v6", "drop")

	b.label("v4")
	b.add(bpf.LoadAbsolute{Off: 20, Size: 2})
	b.jset(0x3fff, "accept", "") // MF or fragment offset: reassembled in software
	b.add(bpf.LoadAbsolute{Off: 23, Size: 1})
	b.jeq(17, "v4l4", "")
	b.jeq(6, "v4l4", "drop")
	b.label("v4l4")
	b.add(bpf.LoadMemShift{Off: 14})
	b.add(bpf.LoadIndirect{Off: 14, Size: 2})
	for _, p := range ports {
		b.jeq(uint32(p), "accept", "")
	}
	b.add(bpf.LoadIndirect{Off: 16, Size: 2})
	for _, p := range ports {
		b.jeq(uint32(p), "accept", "")
	}
	b.jump("drop")

	b.label("v6")
	b.add(bpf.LoadAbsolute{Off: 20, Size: 1})
	b.jeq(17, "v6l4", "")
	b.jeq(6, "v6l4", "")
	b.jeq(0, "accept", "")      // Hop-by-Hop
	b.jeq(43, "accept", "")     // Routing
	b.jeq(44, "accept", "")     // Fragment
	b.jeq(60, "accept", "drop") // Destination Options
	b.label("v6l4")
	b.add(bpf.LoadAbsolute{Off: 54, Size: 2})
	for _, p := range ports {
		b.jeq(uint32(p), "accept", "")
	}
	b.add(bpf.LoadAbsolute{Off: 56, Size: 2})
	for _, p := range ports {
		b.jeq(uint32(p), "accept", "")
	}
	b.jump("drop")

	b.label("accept")
	b.add(bpf.RetConstant{Val: 262144})
	b.label("drop")
	b.add(bpf.RetConstant{Val: 0})
	return b.assemble()
}

// asm is a tiny assembler with symbolic forward jumps.
type asm struct {
	ins    []bpf.Instruction
	fix    []fixup
	labels map[string]int
}

type fixup struct {
	at          int
	jt, jf, abs string
}

func (a *asm) add(i bpf.Instruction) { a.ins = append(a.ins, i) }

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.ins)
}

// jeq: if A == v goto jt else goto jf ("" = next instruction).
func (a *asm) jeq(v uint32, jt, jf string) {
	a.fix = append(a.fix, fixup{at: len(a.ins), jt: jt, jf: jf})
	a.add(bpf.JumpIf{Cond: bpf.JumpEqual, Val: v})
}

func (a *asm) jset(mask uint32, jt, jf string) {
	a.fix = append(a.fix, fixup{at: len(a.ins), jt: jt, jf: jf})
	a.add(bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: mask})
}

func (a *asm) jump(to string) {
	a.fix = append(a.fix, fixup{at: len(a.ins), abs: to})
	a.add(bpf.Jump{})
}

func (a *asm) assemble() ([]bpf.RawInstruction, error) {
	rel := func(from int, l string) (uint32, error) {
		if l == "" {
			return 0, nil
		}
		to, ok := a.labels[l]
		if !ok {
			return 0, fmt.Errorf("bpf: no label %q", l)
		}
		d := to - from - 1
		if d < 0 {
			return 0, fmt.Errorf("bpf: backward jump to %q", l)
		}
		return uint32(d), nil
	}
	for _, f := range a.fix {
		if f.abs != "" {
			d, err := rel(f.at, f.abs)
			if err != nil {
				return nil, err
			}
			a.ins[f.at] = bpf.Jump{Skip: d}
			continue
		}
		j := a.ins[f.at].(bpf.JumpIf)
		t, err := rel(f.at, f.jt)
		if err != nil {
			return nil, err
		}
		e, err := rel(f.at, f.jf)
		if err != nil {
			return nil, err
		}
		if t > 255 || e > 255 {
			return nil, errors.New("bpf: jump too far (too many ports)")
		}
		j.SkipTrue, j.SkipFalse = uint8(t), uint8(e)
		a.ins[f.at] = j
	}
	return bpf.Assemble(a.ins)
}
