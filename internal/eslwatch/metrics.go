package eslwatch

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// eventNames bounds the event label: anything else is "other".
var eventNames = []string{
	"sofia::register", "sofia::unregister", "sofia::expire", "sofia::register_failure",
	"sofia::register_attempt", "sofia::pre_register", "sofia::wrong_call_state",
	"CHANNEL_HANGUP_COMPLETE", "HEARTBEAT", "other",
}

type metrics struct {
	connected   prometheus.Gauge
	reconnects  prometheus.Counter
	events      map[string]prometheus.Counter
	disconnects *prometheus.CounterVec
	skipped     *prometheus.CounterVec
	resyncs     *prometheus.CounterVec
	parseErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		connected: f.NewGauge(prometheus.GaugeOpts{
			Namespace: offense.Namespace, Name: "esl_connected",
			Help: "Event Socket nodes connected, authenticated, subscribed and resynced (1 per node).",
		}),
		reconnects: f.NewCounter(prometheus.CounterOpts{
			Namespace: offense.Namespace, Name: "esl_reconnects_total",
			Help: "Event Socket sessions re-established after an earlier one was lost.",
		}),
		disconnects: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: offense.Namespace, Name: "esl_disconnects_total",
			Help: "Event Socket sessions that ended or failed to start, by reason.",
		}, []string{"reason"}),
		skipped: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: offense.Namespace, Name: "esl_skipped_total",
			Help: "Event Socket input counted and skipped, by reason (oversized: a frame over esl.max_frame_bytes, its body discarded; unknown_type, unexpected_reply, malformed_event, bad_registration, held_overflow).",
		}, []string{"reason"}),
		resyncs: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: offense.Namespace, Name: "esl_resyncs_total",
			Help: "Registration resyncs from show registrations as json, by result.",
		}, []string{"result"}),
	}
	events := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: offense.Namespace, Name: "esl_events_total",
		Help: "Event Socket events received, by event (subclass for CUSTOM events).",
	}, []string{"event"})
	m.events = make(map[string]prometheus.Counter, len(eventNames))
	for _, n := range eventNames {
		m.events[n] = events.WithLabelValues(n)
	}
	m.parseErrors = offense.ParseErrors(reg, offense.SourceESL)
	return m
}

func (m *metrics) event(name []byte) prometheus.Counter {
	if c, ok := m.events[string(name)]; ok {
		return c
	}
	return m.events["other"]
}
