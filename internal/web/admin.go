package web

import (
	"context"
	"net/http"
	"sort"
	"time"

	"github.com/berth-dev/berth/internal/gc"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
)

// AdminStore reads the figures of the admin page (*meta.DB): the job
// queues as the metrics read them, and the storage's blobs and uploads.
type AdminStore interface {
	Figures(ctx context.Context) (meta.Figures, error)
	StorageFigures(ctx context.Context) (meta.StorageFigures, error)
}

// vulnSource is an imported ecosystem with its staleness.
type vulnSource struct {
	Ecosystem string    `json:"ecosystem"`
	Records   int64     `json:"records"`
	UpdatedAt time.Time `json:"updated_at"`
	Stale     bool
}

type queueRow struct {
	Name string
	meta.QueueFigures
}

// admin is the superuser's page: the vulnerability database's sources
// (what `berth admin vulndb status` and GET /api/v1/superuser/vulndb show) with
// their staleness, garbage collection's status (GET
// /api/v1/superuser/gc), the storage's figures and the job queues (the
// metrics' figures). Anyone else finds nothing here.
func (u *UI) admin(w http.ResponseWriter, r *http.Request, v *visitor) error {
	if !v.id.Superuser {
		return errNotFound
	}
	ctx := r.Context()
	stale := u.opts.VulnStaleAfter
	if stale <= 0 {
		stale = scan.DefaultStaleAfter
	}
	data := map[string]any{"StaleAfter": stale.String()}
	var vdb struct {
		Ecosystems []vulnSource `json:"ecosystems"`
	}
	if err := u.call(r, v, http.MethodGet, "/api/v1/superuser/vulndb", nil, &vdb); err != nil {
		data["VulnError"] = err.Error()
	}
	now := u.opts.Now()
	for i := range vdb.Ecosystems {
		vdb.Ecosystems[i].Stale = now.Sub(vdb.Ecosystems[i].UpdatedAt) > stale
	}
	data["Vulns"] = vdb.Ecosystems
	var orgs struct {
		Organizations []struct {
			Name   string   `json:"name"`
			Owners []string `json:"owners"`
		} `json:"organizations"`
	}
	if err := u.call(r, v, http.MethodGet, "/api/v1/superuser/organizations/", nil, &orgs); err != nil {
		return pageError(err)
	}
	data["Orgs"] = orgs.Organizations
	var st gc.Status
	if err := u.call(r, v, http.MethodGet, "/api/v1/superuser/gc", nil, &st); err != nil {
		data["GCError"] = err.Error() // e.g. housekeeping off (501)
	} else {
		data["GC"] = st
	}
	if u.db.Admin != nil {
		sf, err := u.db.Admin.StorageFigures(ctx)
		if err != nil {
			return err
		}
		f, err := u.db.Admin.Figures(ctx)
		if err != nil {
			return err
		}
		for _, q := range u.opts.Queues {
			if _, ok := f.Queues[q]; !ok {
				f.Queues[q] = meta.QueueFigures{}
			}
		}
		var queues []queueRow
		for name, q := range f.Queues {
			queues = append(queues, queueRow{name, q})
		}
		sort.Slice(queues, func(i, j int) bool { return queues[i].Name < queues[j].Name })
		data["Storage"], data["Queues"], data["FeedLag"], data["Unsequenced"] = sf, queues, f.FeedLag, f.Unsequenced
	}
	u.render(w, r, v, http.StatusOK, "admin", "Administration", data)
	return nil
}
