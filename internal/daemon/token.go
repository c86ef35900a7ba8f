package daemon

import (
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sipwarden/sipwarden/internal/api"
	"github.com/sipwarden/sipwarden/internal/config"
	"github.com/sipwarden/sipwarden/internal/offense"
)

// apiToken is the token every API mutation needs: api.token, or the one in
// cfg.TokenPath(), generated there at the first start. When there is none
// the API refuses every change (fail closed) and says why. The returned
// note is logged once the API is bound (a refusal to start stays one line).
func apiToken(cfg config.Config) (token, why string, note func(*slog.Logger)) {
	if cfg.API.Token != "" {
		return cfg.API.Token, "", func(*slog.Logger) {}
	}
	path := cfg.TokenPath()
	tok, created, err := api.EnsureToken(path)
	if err != nil {
		return "", "no API token (" + err.Error() + ")", func(log *slog.Logger) {
			log.Warn("no API token: every change through the API is refused; set api.token_file (or jail.state_file) to a writable path", "error", err)
		}
	}
	return tok, "", func(log *slog.Logger) {
		if created {
			log.Info("API token generated; the sipwarden commands read it through the same config", "token_file", path)
		}
	}
}

// apiNodes are the Event Socket nodes /v1/status reports on.
func apiNodes(e config.ESL) []string {
	if e.Disabled {
		return nil
	}
	return e.Nodes()
}

// backendInfo exports which ban backend really runs, so a dashboard and an
// alert can tell enforcement from dry-run: sipwarden_ban_backend{backend,
// fallback} is 1 for the one in use.
func backendInfo(reg prometheus.Registerer, backend string) {
	name, fallback := backend, "false"
	if b, ok := strings.CutSuffix(backend, " (fallback)"); ok {
		name, fallback = b, "true"
	}
	promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
		Namespace: offense.Namespace,
		Subsystem: "ban",
		Name:      "backend",
		Help:      "The ban backend in use (1): ipset enforces, dry-run only says what it would ban; fallback=true when dry-run replaced an ipset backend that could not open.",
	}, []string{"backend", "fallback"}).WithLabelValues(name, fallback).Set(1)
}
