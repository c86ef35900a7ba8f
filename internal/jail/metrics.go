package jail

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sipwarden/sipwarden/internal/decision"
	"github.com/sipwarden/sipwarden/internal/offense"
)

type metrics struct {
	offenses     *prometheus.CounterVec
	offenseC     [maxRules][numSources]prometheus.Counter
	invalid      prometheus.Counter
	deduplicated prometheus.Counter
	bansTotal    *prometheus.CounterVec
	bansC        [maxRules]prometheus.Counter
	bansManual   prometheus.Counter
	bansActive   prometheus.Collector
	skipped      *prometheus.CounterVec
	latency      prometheus.Histogram
	errors       *prometheus.CounterVec
	recreated    prometheus.Counter
	readded      prometheus.Counter
	lifted       *prometheus.CounterVec
	dropped      prometheus.Counter
	evictions    prometheus.Counter
	untracked    prometheus.Counter
	narrowed     prometheus.Counter
	regLifted    prometheus.Counter
	regKept      prometheus.Counter
	yielded      prometheus.Counter
	setFull      *prometheus.GaugeVec
	held         prometheus.Counter
	offenders    prometheus.Collector
	setEntries   *prometheus.GaugeVec
	setMaxElem   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, active, offenders func() float64) (*metrics, error) {
	f := promauto.With(reg)
	m := &metrics{
		offenses: f.NewCounterVec(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "offenses_total",
			Help: "Offenses received by the jail, by rule and source."}, []string{"rule", "source"}),
		invalid: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "jail_invalid_offenses_total",
			Help: "Offenses without a valid address, counted and skipped."}),
		deduplicated: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "jail_deduplicated_total",
			Help: "auth_failure offenses already seen from another source (counted once)."}),
		bansTotal: f.NewCounterVec(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "bans_total",
			Help: "Bans decided, by the rule that crossed the threshold (manual for the API)."}, []string{"rule"}),
		bansActive: f.NewGaugeFunc(prometheus.GaugeOpts{Namespace: offense.Namespace, Name: "bans_active",
			Help: "Bans in force."}, active),
		skipped: f.NewCounterVec(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "ban_skipped_total",
			Help: "Bans not made because the address is never banned, allowlisted or registered (once per address per findtime)."}, []string{"reason"}),
		latency: f.NewHistogram(prometheus.HistogramOpts{Namespace: offense.Namespace, Name: "ban_latency_seconds",
			Help: "Offense seen by the jail -> entry in the kernel set.",
			// Fine around the 5 ms goal (an edge at exactly 5 ms), coarse beyond.
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 7.5e-3,
				10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5}}),
		errors: f.NewCounterVec(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "ban_errors_total",
			Help: "Failed backend operations (add, del, list, ensure); a full set counts as an add error."}, []string{"op"}),
		recreated: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "ban_set_recreated_total",
			Help: "Kernel sets found missing by the resync and created again."}),
		readded: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "ban_readded_total",
			Help: "Active bans found missing from the kernel by the resync and written again."}),
		lifted: f.NewCounterVec(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "bans_lifted_total",
			Help: "Bans removed by the resync (or at once by a registration event) because the address became never-ban, allowlisted or registered."}, []string{"reason"}),
		regLifted: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "bans_lifted_on_registration_total",
			Help: "Bans lifted at once by a registration event for the banned address (all their evidence credential-class)."}),
		regKept: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "bans_kept_on_registration_total",
			Help: "Bans kept although the banned address registered: some of their evidence was not credential-class (scanner, toll fraud, flood, ...)."}),
		dropped: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "ban_queue_dropped_total",
			Help: "Kernel writes dropped because the writer queue was full (the next resync writes them)."}),
		evictions: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "jail_evictions_total",
			Help: "Tracked addresses evicted because the jail reached max offenders."}),
		untracked: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "jail_untracked_offenses_total",
			Help: "Offenses not tracked because the jail was at max offenders and no entry could be evicted."}),
		narrowed: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "bans_narrowed_total",
			Help: "Prefix bans narrowed by the resync to the offender's address because the prefix now covers a protected address."}),
		yielded: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "bans_yielded_total",
			Help: "Bans on unverified evidence removed from a full set to make room for a ban on verified evidence."}),
		setFull: f.NewGaugeVec(prometheus.GaugeOpts{Namespace: offense.Namespace, Name: "ban_set_full",
			Help: "1 while the set refuses new entries for lack of room (bans on unverified evidence no longer reach the kernel); readiness is false meanwhile."}, []string{"set"}),
		held: f.NewCounter(prometheus.CounterOpts{Namespace: offense.Namespace, Name: "jail_held_total",
			Help: "Threshold crossings held because the registrations were not synced yet, or (esl.down_policy: hold, credential rules) an Event Socket node is down; decided when they are synced."}),
		offenders: f.NewGaugeFunc(prometheus.GaugeOpts{Namespace: offense.Namespace, Name: "jail_offenders",
			Help: "Addresses tracked by the jail."}, offenders),
		setEntries: f.NewGaugeVec(prometheus.GaugeOpts{Namespace: offense.Namespace, Name: "ban_set_entries",
			Help: "Entries in each kernel set, as read back by the last resync."}, []string{"set"}),
		setMaxElem: f.NewGaugeVec(prometheus.GaugeOpts{Namespace: offense.Namespace, Name: "ban_set_maxelem",
			Help: "Capacity (maxelem) of each kernel set."}, []string{"set"}),
	}
	for ri := range maxRules {
		if ri > otherRule {
			break
		}
		m.bansC[ri] = m.bansTotal.WithLabelValues(ruleName(ri))
		for si := range numSources {
			m.offenseC[ri][si] = m.offenses.WithLabelValues(ruleName(ri), sourceName(si))
		}
	}
	m.bansManual = m.bansTotal.WithLabelValues("manual")
	for _, r := range decision.Reasons {
		m.skipped.WithLabelValues(r.String())
		m.lifted.WithLabelValues(r.String())
	}
	for _, o := range []string{"add", "del", "list", "ensure"} {
		m.errors.WithLabelValues(o)
	}
	return m, nil
}

func (m *metrics) offense(ri, si int) prometheus.Counter { return m.offenseC[ri][si] }
func (m *metrics) bans(ri int) prometheus.Counter        { return m.bansC[ri] }
