package meta

import "time"

// The typed stores, one per aggregate. Each is a small value sharing the
// DB's connection; consumers declare the narrow interface they use and the
// composition root hands them the store that satisfies it. A change that
// must span aggregates (a push: content, outbox and audit) is one method
// of the aggregate that owns it, or runs in a Tx (tx.go).

// Users are accounts that sign in, and their robots and namespaces.
type Users struct{ *core }

// Access holds permissions, access tokens, signing keys, login throttles
// and the audit log.
type Access struct{ *core }

// Repositories are the containers of content: their rows, visibility and
// listing.
type Repositories struct{ *core }

// Blobs are stored blobs and the links that let a repository serve them.
type Blobs struct{ *core }

// Uploads are blob upload sessions.
type Uploads struct{ *core }

// Manifests are manifests, tags and referrers: the content graph.
type Manifests struct{ *core }

// Collector is what garbage collection reads and deletes. A manifest a
// tag left less than TimeMachine ago stays restorable (not collected).
type Collector struct {
	*core
	timeMachine time.Duration
}

// WithTimeMachine returns the collector keeping, for d, the manifests
// tags left (deleted, expired, pruned or moved tags can be restored).
func (c Collector) WithTimeMachine(d time.Duration) Collector {
	c.timeMachine = d
	return c
}

// Outbox is the change feed: events appended with the changes they
// announce.
type Outbox struct{ *core }

// Mirrors are repository mirror configurations and their sync state.
type Mirrors struct{ *core }

// Scans are per-manifest scan results: packages, layers and matches.
type Scans struct{ *core }

// VulnDB is the imported vulnerability data and its sources.
type VulnDB struct{ *core }

// Organizations are shared namespaces, their members and teams.
type Organizations struct{ *core }

// Jobs is the durable job queue.
type Jobs struct{ *core }

// Notifications are Quay's repository notifications and their delivery
// state.
type Notifications struct{ *core }

// ProxyCaches are pull-through cache organizations and their tag checks.
type ProxyCaches struct{ *core }

// Graph is the base-image graph: which stored image is built on which
// (graph_schema.go says what each table holds).
type Graph struct{ *core }

// Users returns the store of accounts.
func (db *DB) Users() Users { return Users{db.core} }

// Access returns the store of permissions, tokens and audit.
func (db *DB) Access() Access { return Access{db.core} }

// Repositories returns the store of repositories.
func (db *DB) Repositories() Repositories { return Repositories{db.core} }

// Blobs returns the store of blobs and links.
func (db *DB) Blobs() Blobs { return Blobs{db.core} }

// Uploads returns the store of upload sessions.
func (db *DB) Uploads() Uploads { return Uploads{db.core} }

// Manifests returns the store of manifests, tags and referrers.
func (db *DB) Manifests() Manifests { return Manifests{db.core} }

// Collector returns garbage collection's store.
func (db *DB) Collector() Collector { return Collector{core: db.core} }

// Outbox returns the change feed.
func (db *DB) Outbox() Outbox { return Outbox{db.core} }

// Mirrors returns the store of mirrors.
func (db *DB) Mirrors() Mirrors { return Mirrors{db.core} }

// Scans returns the store of scan results.
func (db *DB) Scans() Scans { return Scans{db.core} }

// VulnDB returns the vulnerability database.
func (db *DB) VulnDB() VulnDB { return VulnDB{db.core} }

// Organizations returns the store of organizations and teams.
func (db *DB) Organizations() Organizations { return Organizations{db.core} }

// Jobs returns the job queue.
func (db *DB) Jobs() Jobs { return Jobs{db.core} }

// Notifications returns the store of notifications.
func (db *DB) Notifications() Notifications { return Notifications{db.core} }

// ProxyCaches returns the store of pull-through caches.
func (db *DB) ProxyCaches() ProxyCaches { return ProxyCaches{db.core} }

// Graph returns the base-image graph's store.
func (db *DB) Graph() Graph { return Graph{db.core} }
