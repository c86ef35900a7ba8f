package logwatch

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// Metrics are the log reader's counters:
//
//	sipwarden_log_lines_total
//	sipwarden_log_lines_skipped_total{reason="too_long"}
//	sipwarden_parse_errors_total{source="log"}  (see offense.ParseErrors)
//	sipwarden_log_files_unreadable  (gauge: files that exist and cannot be read)
//
// Offenses are counted by the jail (sipwarden_offenses_total{rule,source}).
type Metrics struct {
	lines       prometheus.Counter
	tooLong     prometheus.Counter
	parseErrors prometheus.Counter
	unreadable  prometheus.Gauge
}

// NewMetrics registers the counters on reg (nil: a private registry). One
// registry holds one set: share the Metrics, do not register it twice.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	f := promauto.With(reg)
	lines := f.NewCounter(prometheus.CounterOpts{
		Namespace: offense.Namespace,
		Subsystem: "log",
		Name:      "lines_total",
		Help:      "FreeSWITCH log lines read (skipped ones included).",
	})
	skipped := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: offense.Namespace,
		Subsystem: "log",
		Name:      "lines_skipped_total",
		Help:      "FreeSWITCH log lines skipped unread, by reason (too_long: over the line length limit).",
	}, []string{"reason"})
	unreadable := f.NewGauge(prometheus.GaugeOpts{
		Namespace: offense.Namespace,
		Subsystem: "log",
		Name:      "files_unreadable",
		Help:      "Configured log files that exist but cannot be read (permission, a directory); retried every poll.",
	})
	return &Metrics{
		unreadable:  unreadable,
		lines:       lines,
		tooLong:     skipped.WithLabelValues("too_long"),
		parseErrors: offense.ParseErrors(reg, offense.SourceLog),
	}
}
