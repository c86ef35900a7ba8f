package sip

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sipwarden/sipwarden/internal/offense"
)

type metrics struct {
	messages   *prometheus.CounterVec
	skippedVec *prometheus.CounterVec
	reg        prometheus.Registerer

	mu          sync.RWMutex
	sources     map[offense.Source]*srcMetrics
	parseErrors map[offense.Source]prometheus.Counter // guarded by mu
}

// srcMetrics holds the resolved children of one source label.
type srcMetrics struct {
	messages    prometheus.Counter
	parseErrors prometheus.Counter
	skip        map[string]prometheus.Counter
	vec         *prometheus.CounterVec
	src         string
}

var skipReasons = []string{"keepalive", "stun", "flood", "tcp_continuation", "tcp_partial", "tcp_gap", "tcp_overflow",
	"tcp_retransmission", "tcp_unverified_extra", "fragment", "not_sip", "hep", "hep_sender", "hep_capture_id", "response_not_from_server"}

func (s *srcMetrics) skipped(reason string) {
	if c, ok := s.skip[reason]; ok {
		c.Inc()
		return
	}
	s.vec.WithLabelValues(s.src, reason).Inc()
}

func newMetrics(reg prometheus.Registerer, t *table) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		messages: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: offense.Namespace, Subsystem: "sip", Name: "messages_total",
			Help: "SIP messages handed to the analyzer (keep-alives and STUN excluded), by source.",
		}, []string{"source"}),
		skippedVec: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: offense.Namespace, Subsystem: "sip", Name: "skipped_total",
			Help: "Payloads not analysed, by source and reason (keepalive, stun, flood, tcp_continuation, tcp_partial, tcp_gap, tcp_overflow, tcp_retransmission, tcp_unverified_extra, fragment, not_sip, hep, hep_sender, hep_capture_id, response_not_from_server).",
		}, []string{"source", "reason"}),
		reg:         reg,
		parseErrors: map[offense.Source]prometheus.Counter{},
		sources:     map[offense.Source]*srcMetrics{},
	}
	// The SIP sources' parse errors are registered up front (the HEP
	// listener counts into the analyzer's); another source on first use.
	for _, s := range []offense.Source{offense.SourceHEP, offense.SourceCapture, offense.SourcePCAP} {
		m.parseErrors[s] = offense.ParseErrors(reg, s)
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: offense.Namespace, Subsystem: "sip", Name: "tracked_ips",
		Help: "Source addresses with live per-address state (flood and scan windows).",
	}, func() float64 { return float64(t.size.Load()) })
	f.NewCounterFunc(prometheus.CounterOpts{
		Namespace: offense.Namespace, Subsystem: "sip", Name: "state_evictions_total",
		Help: "Per-address states evicted because the table was full (a sign of many or spoofed sources).",
	}, func() float64 { return float64(t.evictions.Load()) })
	return m
}

func (m *metrics) source(s offense.Source) *srcMetrics {
	m.mu.RLock()
	sm := m.sources[s]
	m.mu.RUnlock()
	if sm != nil {
		return sm
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if sm = m.sources[s]; sm != nil {
		return sm
	}
	sm = &srcMetrics{
		messages:    m.messages.WithLabelValues(string(s)),
		parseErrors: m.parseErrorsLocked(s),
		skip:        map[string]prometheus.Counter{},
		vec:         m.skippedVec,
		src:         string(s),
	}
	for _, r := range skipReasons {
		sm.skip[r] = m.skippedVec.WithLabelValues(string(s), r)
	}
	m.sources[s] = sm
	return sm
}

// parseErrorsLocked returns the parse error counter of source s,
// registering it on first use; m.mu is held.
func (m *metrics) parseErrorsLocked(s offense.Source) prometheus.Counter {
	c, ok := m.parseErrors[s]
	if !ok {
		c = offense.ParseErrors(m.reg, s)
		m.parseErrors[s] = c
	}
	return c
}
