package daemon

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// referencer is what the reference watch needs of the ban backend
// (ipset.Set): how many rules use each ban set.
type referencer interface {
	References(ctx context.Context) (map[string]uint32, error)
}

// refWatch notices ban sets no firewall rule references: bans go into
// them and drop nothing. It is a warning, not a failure: the operator may
// load the rules after starting sipwarden (the README's order). It logs
// once at start and again whenever the answer changes, never every round.
type refWatch struct {
	fw    referencer
	every time.Duration
	log   *slog.Logger
	gauge *prometheus.GaugeVec

	mu    sync.Mutex
	unref []string // sorted; nil until the first look
	seen  bool
}

func newRefWatch(fw referencer, every time.Duration, log *slog.Logger, reg prometheus.Registerer) *refWatch {
	return &refWatch{fw: fw, every: every, log: log.With("component", "ban"),
		gauge: promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
			Namespace: offense.Namespace, Subsystem: "ban", Name: "set_unreferenced",
			Help: "1 while no firewall rule references the ban set (its bans drop nothing), else 0.",
		}, []string{"set"})}
}

func (w *refWatch) check(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	refs, err := w.fw.References(ctx)
	if err != nil {
		return // the jail's resync reports an unreachable backend
	}
	var unref []string
	for set, n := range refs {
		v := 0.0
		if n == 0 {
			unref = append(unref, set)
			v = 1
		}
		w.gauge.WithLabelValues(set).Set(v)
	}
	slices.Sort(unref)
	w.mu.Lock()
	changed := !w.seen || !slices.Equal(unref, w.unref)
	w.unref, w.seen = unref, true
	w.mu.Unlock()
	switch {
	case !changed:
	case len(unref) > 0:
		w.log.Warn("no firewall rule references the ban sets: bans drop nothing; load examples/firewall/ (iptables-restore, ip6tables-restore) or set ban.install_rule: true",
			"sets", strings.Join(unref, ","))
	default:
		if w.log.Enabled(ctx, slog.LevelInfo) {
			w.log.Info("ban sets referenced by firewall rules", "sets", len(refs))
		}
	}
}

// Run looks at start and every resync interval until ctx ends.
func (w *refWatch) Run(ctx context.Context) error {
	w.check(ctx)
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.check(ctx)
		}
	}
}

// Note is the /readyz detail: ready stays true, the body names the sets.
func (w *refWatch) Note() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.unref) == 0 {
		return ""
	}
	return "no firewall rule references " + strings.Join(w.unref, ",") + ": bans drop nothing"
}
