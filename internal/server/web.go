package server

import (
	"log/slog"
	"net/http"
	"strings"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/gate"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// webUI builds the web UI served at "/".
func webUI(cfg config.Config, db *meta.DB, driver storage.Driver, authn web.Authenticator, scanner *scan.Service, graphOn bool,
	apiHandler web.API, gates *gate.Service, sealer web.Sealer, log *slog.Logger) (http.Handler, error) {
	st := wire.WebStores(db)
	st.Blobs = driver
	st.Admin = db
	st.Signatures = gates
	if scanner != nil {
		st.Scanner = scanner
	}
	if graphOn {
		st.Graph = db.Graph()
	}
	srv := publicServer(cfg)
	opts := web.Options{Auth: authn, Registry: srv.Host, SecureCookies: strings.HasPrefix(cfg.ExternalURL, "https://"),
		Logger: log, API: apiHandler, VulnStaleAfter: cfg.Scan.VulnDB.StaleAfter, Queues: knownQueues, Cursors: sealer}
	timeMachine := cfg.GC.TimeMachine // the API's restore window: the Activity page offers the restores it makes
	opts.TimeMachine = &timeMachine
	if cfg.ExternalURL != "" {
		// Forms posted from the public origin are the UI's own, whatever
		// Host a reverse proxy sends (as the API trusts it).
		opts.TrustedOrigin = srv.Scheme + "://" + srv.Host
	}
	return web.New(st, opts)
}
