package daemon

import (
	"log/slog"

	"github.com/sipwarden/sipwarden/internal/api"
	"github.com/sipwarden/sipwarden/internal/config"
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
			log.Warn("no API token: every change through the API is refused; set api.token_file to a writable path", "error", err)
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
