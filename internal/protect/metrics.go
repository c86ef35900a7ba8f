package protect

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sipwarden/sipwarden/internal/offense"
)

type metrics struct {
	actions *prometheus.CounterVec
	lifted  prometheus.Counter
	dropped prometheus.Counter
	errors  prometheus.Counter
	latency prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, g *Guard) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		actions: f.NewCounterVec(prometheus.CounterOpts{Namespace: offense.Namespace, Subsystem: "protect", Name: "actions_total",
			Help: "Offenses of protected addresses by the rung they got (watching, quarantined, throttled) and rule class (credential, never_excused, other)."},
			[]string{"action", "class"}),
		lifted: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Subsystem: "protect", Name: "lifted_total",
			Help: "Quarantines and throttles lifted at once by a registration (all their evidence credential-class)."}),
		dropped: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Subsystem: "protect", Name: "dropped_total",
			Help: "Kernel writes dropped (queue full) or addresses not tracked (max_addresses reached)."}),
		errors: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Subsystem: "protect", Name: "errors_total",
			Help: "Failed kernel writes of quarantine or throttle entries."}),
		latency: f.NewHistogram(prometheus.HistogramOpts{Namespace: offense.Namespace, Subsystem: "protect", Name: "latency_seconds",
			Help:    "Offense judged -> quarantine or throttle entry in the kernel.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 50e-3, 250e-3, 1}}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{Namespace: offense.Namespace, Subsystem: "protect", Name: "failing_users",
		Help: "Users failing within protect.window at addresses a live registration protects (GET /v1/protected names them)."},
		func() float64 { u, _, _ := g.failingUsers(); return u })
	f.NewGaugeFunc(prometheus.GaugeOpts{Namespace: offense.Namespace, Subsystem: "protect", Name: "quarantined_mappings",
		Help: "NAT mappings (address, transport, port) of protected addresses in quarantine."},
		func() float64 { _, q, _ := g.failingUsers(); return q })
	f.NewGaugeFunc(prometheus.GaugeOpts{Namespace: offense.Namespace, Subsystem: "protect", Name: "throttled_addresses",
		Help: "Protected addresses throttled (over their failure budget, or a never-excused rule without a port)."},
		func() float64 { _, _, t := g.failingUsers(); return t })
	for _, a := range []Action{Watch, Quarantine, Throttle} {
		for _, c := range []Class{Credential, NeverExcused, Other} {
			m.actions.WithLabelValues(a.String(), c.String())
		}
	}
	return m
}

func (m *metrics) action(a Action, c Class) prometheus.Counter {
	return m.actions.WithLabelValues(a.String(), c.String())
}
