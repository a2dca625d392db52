// Package wire hands the metadata store's typed stores to the consumers
// that declare what they use: the one place outside meta, with the
// composition roots (internal/server, cmd/berth) and the tests' shared
// environment, that names *meta.DB.
package wire

import (
	"time"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/gc"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/proxy"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/web"
)

// RegistryStores are the stores registry.New takes.
func RegistryStores(db *meta.DB) registry.Stores {
	return registry.Stores{Blobs: db.Blobs(), Uploads: db.Uploads(), Manifests: db.Manifests(), Referrers: db.Manifests(), Catalog: db.Repositories(),
		Claims: db.Uploads()}
}

// AuthzStores are the stores authz.New takes.
func AuthzStores(db *meta.DB) authz.Stores {
	return authz.Stores{Users: db.Users(), Repositories: db.Repositories(), Access: db.Access()}
}

// ProxyStores are the stores proxy.New takes.
func ProxyStores(db *meta.DB) proxy.Stores {
	return proxy.Stores{Caches: db.ProxyCaches(), Blobs: db.Blobs()}
}

// CopierStores are the stores mirror.NewCopier takes.
func CopierStores(db *meta.DB) mirror.Stores {
	return mirror.Stores{Blobs: db.Blobs(), Manifests: db.Manifests()}
}

// GCStores are the stores gc.New takes; manifests a tag left less than
// timeMachine ago are kept restorable.
func GCStores(db *meta.DB, timeMachine time.Duration) gc.Stores {
	c := db.Collector().WithTimeMachine(timeMachine)
	return gc.Stores{Uploads: db.Uploads(), Collector: c, Retention: c, Lifecycle: db.Manifests(), Sweep: c}
}

// MirrorStores are the stores mirror.NewMirrorService takes.
func MirrorStores(db *meta.DB) mirror.ServiceStores {
	return mirror.ServiceStores{Mirrors: db.Mirrors(), Tags: db.Manifests(), Queue: db.Jobs(), Users: db.Users(), ProxyCaches: db.ProxyCaches()}
}

// APIStores are the stores api.New takes; the garbage collection
// explanation counts the time machine as gc does (timeMachine).
func APIStores(db *meta.DB, timeMachine time.Duration) api.Stores {
	users, orgs, access := db.Users(), db.Organizations(), db.Access()
	return api.Stores{
		Users: users, Accounts: users, Robots: users,
		Orgs: orgs, Teams: orgs,
		Repositories: db.Repositories(), Tags: db.Manifests(),
		Permissions: access, Tokens: access, Audit: access,
		Notifications: db.Notifications(), Mirrors: db.Mirrors(), ProxyCaches: db.ProxyCaches(),
		Keepers: db.Collector().WithTimeMachine(timeMachine), VulnDB: vulnDB{db.VulnDB()},
		Gates: db.Gates(), Restorer: db.Manifests().WithTimeMachine(timeMachine), Policies: db.Policies(),
		Quotas: db.Quotas(), Usage: db.Quotas(), Emails: db.Notifications(),
	}
}

// vulnDB is the vulnerability database with its importer.
type vulnDB struct{ meta.VulnDB }

// NewImport starts an import of advisories.
func (v vulnDB) NewImport() api.VulnImport { return scan.NewImporter(v.VulnDB, nil) }

// NotifyStores are the stores notify.New and notify.NewSubscriber take.
func NotifyStores(db *meta.DB) notify.Stores {
	n := db.Notifications()
	return notify.Stores{Notifications: n, Outcomes: n, Listeners: n, Jobs: db.Jobs(), Outbox: db.Outbox(), Emails: n, Durable: db}
}

// ScanStores are the stores scan.New takes.
func ScanStores(db *meta.DB) scan.Stores {
	return scan.Stores{Results: db.Scans(), Summaries: db.Scans(), Rematches: db.Scans(), Vulns: db.VulnDB(), Manifests: db.Manifests(), Blobs: db.Blobs()}
}

// WebStores are the stores web.New takes; the server adds the scanner,
// the graph and the storage driver when they are on.
func WebStores(db *meta.DB) web.Stores {
	return web.Stores{Sessions: db.WebSessions(), Repositories: db.Repositories(), Content: db.Manifests(), Referrers: db.Manifests(),
		Mirrors: db.Mirrors(), Notifications: db.Notifications(), Gates: db.Gates(), Emails: db.Notifications()}
}
