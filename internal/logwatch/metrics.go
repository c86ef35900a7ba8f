package logwatch

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// Metrics are the log reader's counters:
//
//	sipwarden_log_lines_total
//	sipwarden_log_lines_skipped_total{reason="too_long"}
//	sipwarden_parse_errors_total{source="log"}  (shared, see offense.ParseErrors)
//
// Offenses are counted by the jail (sipwarden_offenses_total{rule,source}).
type Metrics struct {
	lines       prometheus.Counter
	tooLong     prometheus.Counter
	parseErrors prometheus.Counter
}

// NewMetrics registers the counters on reg (nil: a private registry), or
// reuses those already registered there.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	lines := register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "sipwarden",
		Subsystem: "log",
		Name:      "lines_total",
		Help:      "FreeSWITCH log lines read (skipped ones included).",
	}))
	skipped := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "sipwarden",
		Subsystem: "log",
		Name:      "lines_skipped_total",
		Help:      "FreeSWITCH log lines skipped unread, by reason (too_long: over the line length limit).",
	}, []string{"reason"}))
	return &Metrics{
		lines:       lines,
		tooLong:     skipped.WithLabelValues("too_long"),
		parseErrors: offense.ParseErrors(reg).WithLabelValues(string(offense.SourceLog)),
	}
}

// register registers c on reg, or returns the collector of the same
// description already there.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // programming error: another collector under our name
	}
	return c
}
