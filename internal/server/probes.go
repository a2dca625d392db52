package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/storage"
)

// Probes for Kubernetes (README, Deployment): /livez says the process
// serves HTTP, and nothing else, so that a database outage does not get
// every replica restarted; /readyz says this replica can serve requests:
// its database answers at the schema version of this binary and its
// storage is reachable, and it is not shutting down (shutdown.go).
// /healthz (database ping) stays as it was.

// probeTimeout bounds the checks of one readiness probe.
const probeTimeout = 5 * time.Second

func livez(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// schemaChecker is what readiness asks of the database (*meta.DB).
type schemaChecker interface {
	CheckSchema(ctx context.Context) error
}

// readyz answers 200 "ok" or 503 with the reason (the details, which may
// name hosts, go to the log only).
func readyz(db schemaChecker, store storage.Driver, log *slog.Logger, draining *atomic.Bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			// Shutting down (SIGTERM): load balancers stop sending
			// requests while in-flight ones finish.
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("not ready: shutting down\n"))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		reason := ""
		if err := db.CheckSchema(ctx); err != nil {
			log.Warn("readiness: metadata store", "err", err)
			reason = "metadata store unavailable or at another schema version"
		} else if fi, err := store.Stat(ctx, "/"); err != nil || !fi.IsDir {
			if err == nil {
				err = errors.New("storage root is not a directory")
			}
			log.Warn("readiness: storage", "err", err)
			reason = "storage unreachable"
		}
		if reason != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("not ready: " + reason + "\n"))
			return
		}
		w.Write([]byte("ok\n"))
	}
}
