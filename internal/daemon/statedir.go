package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sipwarden/sipwarden/internal/offense"
)

// stateDir checks, at start and then every interval, that the state file
// can be written where jail.state_file says: a missing or read-only
// directory would otherwise be found at stop, when the bans' history is
// lost. One ERROR line per change, a /readyz note and
// sipwarden_state_file_writable.
type stateDir struct {
	path  string
	every time.Duration
	log   *slog.Logger
	gauge prometheus.Gauge

	mu      sync.Mutex
	problem string
	seen    bool
}

func newStateDir(path string, every time.Duration, log *slog.Logger, reg prometheus.Registerer) *stateDir {
	return &stateDir{path: path, every: every, log: log.With("component", "state"),
		gauge: promauto.With(reg).NewGauge(prometheus.GaugeOpts{
			Namespace: offense.Namespace, Name: "state_file_writable",
			Help: "1 when jail.state_file's directory exists and is writable, else 0 (bans' history and scores would be lost at stop).",
		})}
}

// probe returns why the state file cannot be written, or "".
func (s *stateDir) probe() string {
	dir := filepath.Dir(s.path)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("directory %s does not exist", dir)
	case err != nil:
		return err.Error()
	case !st.IsDir():
		return fmt.Sprintf("%s is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".sipwarden-probe-*")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Sprintf("directory %s is not writable: %v", dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	return ""
}

func (s *stateDir) check() {
	p := s.probe()
	s.mu.Lock()
	first := !s.seen
	changed := first || p != s.problem
	s.problem, s.seen = p, true
	s.mu.Unlock()
	if p != "" {
		s.gauge.Set(0)
	} else {
		s.gauge.Set(1)
	}
	switch {
	case !changed:
	case p != "":
		s.log.Error("jail.state_file cannot be written: bans' history and scores will be lost at stop; create the directory, writable by the sipwarden user",
			"file", s.path, "problem", p)
	case !first:
		s.log.Info("jail.state_file writable", "file", s.path)
	}
}

// Run rechecks every interval until ctx ends (the first check ran in New).
func (s *stateDir) Run(ctx context.Context) error {
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.check()
		}
	}
}

// Note is the /readyz detail.
func (s *stateDir) Note() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.problem == "" {
		return ""
	}
	return "jail.state_file " + s.path + ": " + s.problem
}
