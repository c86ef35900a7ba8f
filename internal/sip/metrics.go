package sip

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/offense"
)

type metrics struct {
	messages    *prometheus.CounterVec
	parseErrors *prometheus.CounterVec
	skippedVec  *prometheus.CounterVec

	mu      sync.RWMutex
	sources map[offense.Source]*srcMetrics
}

// srcMetrics holds the resolved children of one source label.
type srcMetrics struct {
	messages    prometheus.Counter
	parseErrors prometheus.Counter
	skip        map[string]prometheus.Counter
	vec         *prometheus.CounterVec
	src         string
}

var skipReasons = []string{"keepalive", "stun", "flood", "tcp_continuation", "tcp_partial", "fragment", "not_sip"}

func (s *srcMetrics) skipped(reason string) {
	if c, ok := s.skip[reason]; ok {
		c.Inc()
		return
	}
	s.vec.WithLabelValues(s.src, reason).Inc()
}

func newMetrics(reg prometheus.Registerer, t *table) *metrics {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sipwarden", Subsystem: "sip", Name: "messages_total",
			Help: "SIP messages handed to the analyzer (keep-alives and STUN excluded), by source.",
		}, []string{"source"}),
		skippedVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sipwarden", Subsystem: "sip", Name: "skipped_total",
			Help: "Payloads not analysed, by source and reason (keepalive, stun, flood, tcp_continuation, tcp_partial, fragment, not_sip).",
		}, []string{"source", "reason"}),
		parseErrors: offense.ParseErrors(reg),
		sources:     map[offense.Source]*srcMetrics{},
	}
	m.messages = register(reg, m.messages)
	m.skippedVec = register(reg, m.skippedVec)
	tracked := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "sipwarden", Subsystem: "sip", Name: "tracked_ips",
		Help: "Source addresses with live per-address state (flood and scan windows).",
	}, func() float64 { return float64(t.size.Load()) })
	evicted := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "sipwarden", Subsystem: "sip", Name: "state_evictions_total",
		Help: "Per-address states evicted because the table was full (a sign of many or spoofed sources).",
	}, func() float64 { return float64(t.evictions.Load()) })
	// Several analyzers on one registry (tests) keep the first gauges.
	_ = reg.Register(tracked)
	_ = reg.Register(evicted)
	return m
}

// register registers c or returns the collector already registered under its
// name.
func register(reg prometheus.Registerer, c *prometheus.CounterVec) *prometheus.CounterVec {
	if err := reg.Register(c); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			if ex, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return ex
			}
		}
		panic(err) // a different collector under our name: programming error
	}
	return c
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
		parseErrors: m.parseErrors.WithLabelValues(string(s)),
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
