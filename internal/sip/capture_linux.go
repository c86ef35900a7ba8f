//go:build linux

package sip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/gopacket/gopacket/pcapgo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sys/unix"

	"github.com/sipwarden/sipwarden/internal/offense"
	"github.com/sipwarden/sipwarden/internal/sipcodec"
)

// Capture reads SIP from a network interface through an AF_PACKET socket
// (pure Go, no libpcap) with a BPF filter for the SIP ports. IP fragments
// and IPv6 extension headers pass the filter and are checked in software;
// TCP is reassembled per flow.
type Capture struct {
	h         *pcapgo.EthernetHandle
	a         *Analyzer
	log       *slog.Logger
	iface     string
	ports     map[uint16]bool
	closeOnce sync.Once
	packets   prometheus.Counter
}

// NewCapture opens iface at once (so a missing privilege fails start-up with
// a clear message) and filters the given ports (default 5060, 5080).
// reg nil: a private registry.
func NewCapture(iface string, ports []int, a *Analyzer, log *slog.Logger, reg prometheus.Registerer) (*Capture, error) {
	if a == nil {
		return nil, errors.New("capture: nil analyzer")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if len(ports) == 0 {
		ports = []int{5060, 5080}
	}
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("capture interface %q: %w", iface, err)
	}
	filter, err := sipFilter(ports, ifc.Flags&net.FlagLoopback != 0)
	if err != nil {
		return nil, fmt.Errorf("capture filter: %w", err)
	}
	// pcapgo hides the errno; probe first so EPERM gets a useful message.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("capture on %s needs CAP_NET_RAW (run as root or grant it: setcap cap_net_raw+ep sipwarden, or AmbientCapabilities=CAP_NET_RAW): %w", iface, err)
		}
		return nil, fmt.Errorf("capture on %s: packet socket: %w", iface, err)
	}
	unix.Close(fd)
	h, err := pcapgo.NewEthernetHandle(iface)
	if err != nil {
		return nil, fmt.Errorf("capture on %s: %w", iface, err)
	}
	if err := h.SetBPF(filter); err != nil {
		h.Close()
		return nil, fmt.Errorf("capture on %s: attach BPF: %w", iface, err)
	}
	pm := make(map[uint16]bool, len(ports))
	for _, p := range ports {
		pm[uint16(p)] = true
	}
	pk := promauto.With(reg).NewCounter(prometheus.CounterOpts{
		Namespace: offense.Namespace, Subsystem: "sip", Name: "capture_packets_total",
		Help: "Frames read from the capture interface (after the BPF filter).",
	})
	return &Capture{h: h, a: a, log: log.With("component", "capture", "interface", iface), iface: iface, ports: pm, packets: pk}, nil
}

// Close releases the socket (Run does it too).
func (c *Capture) Close() error {
	var err error
	c.closeOnce.Do(func() { err = c.h.Close() })
	return err
}

// Run reads frames until ctx is cancelled; it returns nil then.
func (c *Capture) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	// Live capture never unwraps HEP: a datagram that starts "HEP3" is
	// whatever its sender wrote, and only the HEP listener, which knows
	// the sender, reads HEP.
	w := c.a.newWire(offense.SourceCapture, c.ports, nil)
	for {
		data, ci, err := c.h.ZeroCopyReadPacketData()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			return fmt.Errorf("capture on %s: %w", c.iface, err)
		}
		c.packets.Inc()
		// Frames that arrived before the filter was attached are checked
		// against the ports again in software.
		w.frame(sipcodec.LinkEthernet, data, ci.Timestamp)
	}
}
