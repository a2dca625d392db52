package meta

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
)

// migrations are applied in order, each in its own transaction. Never edit
// one that has shipped: append a new one. {{serial}}, {{bytes}}, {{text}}
// and {{strpos}} are replaced per dialect ({{text}} sorts bytewise on
// both, as the distribution spec's lexical ordering of tags and
// repositories requires), {{now}} by the time of the migration in
// microseconds.
var migrations = []string{
	// 1: the registry core.
	`
CREATE TABLE repositories (
	id {{serial}},
	name {{text}} NOT NULL UNIQUE,
	created_at BIGINT NOT NULL
);
CREATE TABLE blobs (
	digest TEXT PRIMARY KEY,
	size BIGINT NOT NULL,
	created_at BIGINT NOT NULL
);
CREATE TABLE repository_blobs (
	repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	digest TEXT NOT NULL REFERENCES blobs(digest),
	created_at BIGINT NOT NULL,
	PRIMARY KEY (repository_id, digest)
);
CREATE INDEX repository_blobs_digest ON repository_blobs(digest);
CREATE TABLE manifests (
	repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	digest TEXT NOT NULL,
	media_type TEXT NOT NULL,
	artifact_type TEXT NOT NULL DEFAULT '',
	size BIGINT NOT NULL,
	content {{bytes}} NOT NULL,
	subject TEXT,
	annotations TEXT,
	created_at BIGINT NOT NULL,
	PRIMARY KEY (repository_id, digest)
);
CREATE INDEX manifests_subject ON manifests(repository_id, subject) WHERE subject IS NOT NULL;
CREATE TABLE manifest_references (
	repository_id BIGINT NOT NULL,
	manifest_digest TEXT NOT NULL,
	ref_digest TEXT NOT NULL,
	is_manifest SMALLINT NOT NULL,
	PRIMARY KEY (repository_id, manifest_digest, ref_digest),
	FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_references_ref ON manifest_references(repository_id, ref_digest);
CREATE TABLE tags (
	repository_id BIGINT NOT NULL,
	name {{text}} NOT NULL,
	manifest_digest TEXT NOT NULL,
	updated_at BIGINT NOT NULL,
	PRIMARY KEY (repository_id, name),
	FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests(repository_id, digest)
);
CREATE INDEX tags_manifest ON tags(repository_id, manifest_digest);
CREATE TABLE uploads (
	id TEXT PRIMARY KEY,
	repository TEXT NOT NULL,
	size BIGINT NOT NULL DEFAULT 0,
	hash_state {{bytes}},
	locked_until BIGINT NOT NULL DEFAULT 0,
	started_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
);
CREATE TABLE events (
	id {{serial}},
	uuid TEXT NOT NULL UNIQUE,
	kind TEXT NOT NULL,
	repository TEXT NOT NULL,
	actor TEXT NOT NULL DEFAULT '',
	payload TEXT NOT NULL,
	created_at BIGINT NOT NULL
);
`,
	// 2: accounts and access.
	`
CREATE TABLE namespaces (
	id {{serial}},
	name {{text}} NOT NULL UNIQUE,
	kind TEXT NOT NULL,
	email TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL
);
CREATE TABLE users (
	id {{serial}},
	username {{text}} NOT NULL UNIQUE,
	email TEXT NOT NULL DEFAULT '',
	secret_hash TEXT NOT NULL,
	kind TEXT NOT NULL,
	namespace_id BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
	superuser SMALLINT NOT NULL DEFAULT 0,
	enabled SMALLINT NOT NULL DEFAULT 1,
	description TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL
);
CREATE INDEX users_namespace ON users(namespace_id);
CREATE TABLE teams (
	id {{serial}},
	namespace_id BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
	name {{text}} NOT NULL,
	role TEXT NOT NULL,
	description TEXT NOT NULL DEFAULT '',
	UNIQUE (namespace_id, name)
);
CREATE TABLE team_members (
	team_id BIGINT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
	user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members(user_id);
ALTER TABLE repositories ADD COLUMN visibility TEXT NOT NULL DEFAULT 'private';
ALTER TABLE repositories ADD COLUMN state TEXT NOT NULL DEFAULT 'NORMAL';
ALTER TABLE repositories ADD COLUMN mirror_robot TEXT NOT NULL DEFAULT '';
ALTER TABLE repositories ADD COLUMN description TEXT NOT NULL DEFAULT '';
CREATE TABLE repository_permissions (
	repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	user_id BIGINT REFERENCES users(id) ON DELETE CASCADE,
	team_id BIGINT REFERENCES teams(id) ON DELETE CASCADE,
	role TEXT NOT NULL
);
CREATE UNIQUE INDEX repository_permissions_user ON repository_permissions(repository_id, user_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX repository_permissions_team ON repository_permissions(repository_id, team_id) WHERE team_id IS NOT NULL;
CREATE TABLE access_tokens (
	id {{serial}},
	name {{text}} NOT NULL UNIQUE,
	secret_hash TEXT NOT NULL UNIQUE,
	scopes TEXT NOT NULL,
	owner_id BIGINT REFERENCES users(id) ON DELETE CASCADE,
	created_by TEXT NOT NULL DEFAULT '',
	expires_at BIGINT NOT NULL DEFAULT 0,
	revoked_at BIGINT NOT NULL DEFAULT 0,
	last_used_at BIGINT NOT NULL DEFAULT 0,
	created_at BIGINT NOT NULL
);
CREATE TABLE signing_keys (
	id {{serial}},
	kid TEXT NOT NULL UNIQUE,
	private_pem TEXT NOT NULL,
	created_at BIGINT NOT NULL
);
CREATE TABLE audit_log (
	id {{serial}},
	kind TEXT NOT NULL,
	actor TEXT NOT NULL DEFAULT '',
	ip TEXT NOT NULL DEFAULT '',
	namespace TEXT NOT NULL DEFAULT '',
	repository TEXT NOT NULL DEFAULT '',
	metadata TEXT NOT NULL DEFAULT '{}',
	created_at BIGINT NOT NULL
);
CREATE INDEX audit_log_namespace ON audit_log(namespace, id);
CREATE TABLE login_failures (
	key TEXT PRIMARY KEY,
	failures INTEGER NOT NULL,
	window_start BIGINT NOT NULL
);
`,
	// 3: the durable job queue (internal/jobs). The partial indexes hold
	// only live jobs, so claims stay fast however many finished jobs are
	// kept: jobs_claim walks a queue's live jobs oldest first, jobs_key
	// answers "is an older job of this ordering key still live".
	`
CREATE TABLE jobs (
	id {{serial}},
	queue TEXT NOT NULL,
	ordering_key TEXT NOT NULL DEFAULT '',
	payload TEXT NOT NULL,
	status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'dead')),
	attempts INTEGER NOT NULL DEFAULT 0,
	max_attempts INTEGER NOT NULL,
	run_at BIGINT NOT NULL,
	lease_until BIGINT NOT NULL DEFAULT 0,
	lease_owner TEXT NOT NULL DEFAULT '',
	last_error TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
);
CREATE INDEX jobs_claim ON jobs(queue, id) WHERE status IN ('pending', 'running');
CREATE INDEX jobs_key ON jobs(queue, ordering_key, id) WHERE status IN ('pending', 'running');
CREATE INDEX jobs_status ON jobs(queue, status, id);
`,
	// 4: notifications: the outbox's dispatched flag, notifications at
	// repository, organization and registry scope, and delivery attempts.
	`
ALTER TABLE events ADD COLUMN dispatched SMALLINT NOT NULL DEFAULT 0;
CREATE INDEX events_undispatched ON events(id) WHERE dispatched = 0;
CREATE TABLE notifications (
	id {{serial}},
	uuid TEXT NOT NULL UNIQUE,
	scope TEXT NOT NULL,
	target TEXT NOT NULL DEFAULT '',
	event TEXT NOT NULL,
	method TEXT NOT NULL,
	title TEXT NOT NULL DEFAULT '',
	config TEXT NOT NULL,
	event_config TEXT NOT NULL DEFAULT '{}',
	format TEXT NOT NULL DEFAULT 'quay',
	number_of_failures INTEGER NOT NULL DEFAULT 0,
	created_by TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL
);
CREATE INDEX notifications_match ON notifications(event, scope, target);
CREATE TABLE notification_attempts (
	id {{serial}},
	notification_id BIGINT NOT NULL REFERENCES notifications(id) ON DELETE CASCADE,
	event_uuid TEXT NOT NULL,
	job_id BIGINT NOT NULL,
	attempt INTEGER NOT NULL,
	status_code INTEGER NOT NULL,
	latency_ms BIGINT NOT NULL,
	error TEXT NOT NULL DEFAULT '',
	attempted_at BIGINT NOT NULL
);
CREATE INDEX notification_attempts_notification ON notification_attempts(notification_id, id);
`,
	// 5: repository mirroring (mirror_schema.go).
	mirrorSchema,
	// 6: pull-through cache (proxycache_schema.go).
	proxyCacheSchema,
	// 7: security scanning (scan_schema.go).
	scanSchema,
	// 8: a notification that keeps failing is disabled for a while, with a
	// growing back-off, rather than until reset (docs/notifications.md):
	// when its next trial delivery may go (0 while disabled: until reset),
	// how long the current disable lasts (microseconds), and why.
	`
ALTER TABLE notifications ADD COLUMN disabled_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN disabled_for BIGINT NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN disabled_reason TEXT NOT NULL DEFAULT '';
`,
	// 9: Red Hat's mapping from content sets to CPEs (cpemap.go).
	cpeMappingSchema,
	// 10: garbage collection's pending blob deletions (collector.go).
	gcSchema,
	// 11: who opened each upload session (collector.go).
	uploadActorSchema,
	// 12: one change feed (outbox.go): events get a gap-free position in
	// commit order once committed, and each subscriber a cursor over it,
	// instead of the dispatched flag that only the notification fan-out
	// could use. Existing events are numbered dispatched first, so that
	// the notification subscriber's cursor starts after every event the
	// fan-out already dispatched and before every one it had not. The
	// flag goes, so that a replica still running the fan-out stops rather
	// than delivers a second time.
	`
ALTER TABLE events ADD COLUMN position BIGINT;
UPDATE events SET position = r.n FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY dispatched DESC, id) AS n FROM events) AS r WHERE events.id = r.id;
CREATE UNIQUE INDEX events_position ON events(position);
CREATE INDEX events_unsequenced ON events(id) WHERE position IS NULL;
CREATE TABLE feed_head (
	id SMALLINT PRIMARY KEY CHECK (id = 1),
	position BIGINT NOT NULL
);
INSERT INTO feed_head (id, position) SELECT 1, COUNT(*) FROM events;
CREATE TABLE feed_cursors (
	name TEXT PRIMARY KEY,
	position BIGINT NOT NULL,
	seen_at BIGINT NOT NULL
);
INSERT INTO feed_cursors (name, position, seen_at) SELECT 'notify', COUNT(*), {{now}} FROM events WHERE dispatched = 1;
DROP INDEX events_undispatched;
ALTER TABLE events DROP COLUMN dispatched;
`,
	// 13: the manifests deleted with their subject, set by whoever stores
	// them (the scanner's SBOM: PutManifest.DeletedWithSubject), once
	// backfilled from the annotation that marked Berth's SBOMs.
	`
ALTER TABLE manifests ADD COLUMN deleted_with_subject SMALLINT NOT NULL DEFAULT 0;
UPDATE manifests SET deleted_with_subject = 1 WHERE subject IS NOT NULL AND annotations LIKE '%"dev.berth.sbom"%';
`,
	// 14: tag history (graph_schema.go).
	tagHistorySchema,
	// 15: the base-image graph (graph_schema.go).
	graphSchema,
	// 16: gates, candidates, checks and immutable tags (gate_schema.go).
	gateSchema,
	// 17: tag expiration, immutability and auto-prune policies
	// (lifecycle_schema.go).
	lifecycleSchema,
	// 18: namespace quotas and the usage they limit (quota_schema.go).
	quotaSchema,
	// 19: the web UI's sessions (web_schema.go).
	webSessionSchema,
	// 20: the storage driver's writer state of an upload (S3: multipart
	// upload id, parts, tail), saved beside the hash state.
	`ALTER TABLE uploads ADD COLUMN storage_state {{bytes}}`,
	// 21: installation-wide settings: the secret key's fingerprint
	// (settings.go).
	settingsSchema,
	// 22: jobs held behind an older live job of their ordering key are
	// marked, and claims walk only the others (jobs.go).
	jobsBehindSchema,
	// 23: a tag period that began with a restore (Quay's reversion), and
	// the history in the order Quay's tag list pages through it.
	`ALTER TABLE tag_history ADD COLUMN reversion SMALLINT NOT NULL DEFAULT 0;
CREATE INDEX tag_history_from ON tag_history(repository_id, from_at, id)`,
	// 24: the built-in subscribers' cursors (outbox.go), at the
	// feed's head (0 on a new database), so that no event is missed
	// before a process first subscribes them, and never seen, so that
	// pruning does not wait for a feature that is off (outbox.go).
	`INSERT INTO feed_cursors (name, position, seen_at)
SELECT n.name, h.position, 0 FROM feed_head h,
	(SELECT 'notify' AS name UNION ALL SELECT 'scan' UNION ALL SELECT 'graph' UNION ALL SELECT 'gate') n
WHERE h.id = 1
ON CONFLICT (name) DO NOTHING`,
	// 25: login counters are pruned by the start of their window
	// (retention.go).
	`CREATE INDEX login_failures_window ON login_failures(window_start)`,
	// 26: a sync-now asked for while a mirror syncs (mirrors.go).
	`ALTER TABLE repository_mirrors ADD COLUMN sync_now_requested SMALLINT NOT NULL DEFAULT 0`,
	// 27: when a client last confirmed a stored manifest (pushed it
	// again, or asked for it by digest): garbage collection spares it for
	// gc.delay from then too (collector.go).
	`ALTER TABLE manifests ADD COLUMN confirmed_at BIGINT NOT NULL DEFAULT 0`,
	// 28: a subject's referrers in listing order, read a page at a time
	// (ReferrersAfter): without it each page sorted every referrer.
	`CREATE INDEX manifests_referrers ON manifests(repository_id, subject, created_at, digest) WHERE subject IS NOT NULL`,
	// 29: a gate's checkers by account id (gate_schema.go).
	gateCheckersSchema,
	// 30: the ended periods of tags, by when they ended: garbage
	// collection prunes those past the time machine's window, the activity
	// page lists a repository's most recently deleted tags; and the
	// records of expiry notices, pruned once their expiration has passed
	// (retention.go).
	`CREATE INDEX tag_history_ended ON tag_history(until_at) WHERE until_at > 0;
CREATE INDEX tag_history_repository_ended ON tag_history(repository_id, until_at) WHERE until_at > 0;
CREATE INDEX expiry_notices_expires ON expiry_notices(expires_at)`,
	// 31: the summary of a scan report the data coverage of the image is
	// computed from (scans_summary.go), written with the report: the tags
	// page reads it, not the report. NULL for reports stored before.
	`ALTER TABLE manifest_scans ADD COLUMN coverage_summary {{bytes}}`,
	// 32: a job's fair key (the namespace a notification delivery is
	// for), and the running jobs by it: claims serve first the keys with
	// fewer jobs running (jobsFairSchema).
	jobsFairSchema,
	// 33: the e-mail addresses confirmed (or asked to confirm) as
	// receivers of a repository's or organization's email notifications
	// (authorized_emails.go).
	authorizedEmailsSchema,
	// 34: the graph index jobs of live gate candidates it has no record
	// of (graph_schema.go).
	graphCandidatesSchema,
	// 35: when each blob link was first made, which confirmations do not
	// move: garbage collection removes an unreferenced link at most
	// gc.uploadExpiry after it (collector.go, linkFirstMade).
	linkedAtSchema,
	// 36: whether a manifest naming a subject only describes it (a
	// signature, an SBOM, an attestation: describes), which a release of
	// the subject publishes with it (gates.go, release) without reading
	// its content. NULL for manifests stored before, or by a binary
	// before it (a replica still running during a rolling upgrade): their
	// content is read instead. No row is rewritten.
	`ALTER TABLE manifests ADD COLUMN describes INTEGER`,
	// 37: an immutability policy's tagPattern is matched from the start
	// of the tag now, as Quay's (compilePattern); before, anywhere in it.
	// The patterns stored before keep the tags they covered: one that
	// does not begin with ^, or has an alternation (^v1|stable covered
	// x-stable), is rewritten to .*(?:pattern), which matches from the
	// start what it matched anywhere (and means the same to a replica of
	// the version before, during a rolling upgrade).
	`UPDATE tag_policies SET tag_pattern = '.*(?:' || tag_pattern || ')'
WHERE kind = 'immutability' AND tag_pattern <> '' AND (substr(tag_pattern, 1, 1) <> '^' OR tag_pattern LIKE '%|%')`,
	// 38: the account that last configured a mirror (mirror_schema.go).
	mirrorConfiguredBySchema,
	// 39: the open upload sessions by namespace, which a namespace's
	// Reject limit counts (uploads.go, UploadRoom).
	uploadNamespaceSchema,
}

func (db *core) render(stmt string) string {
	r := strings.NewReplacer(
		"{{serial}}", map[dialect]string{sqlite: "INTEGER PRIMARY KEY AUTOINCREMENT", postgres: "BIGSERIAL PRIMARY KEY"}[db.dialect],
		"{{bytes}}", map[dialect]string{sqlite: "BLOB", postgres: "BYTEA"}[db.dialect],
		"{{text}}", map[dialect]string{sqlite: "TEXT", postgres: `TEXT COLLATE "C"`}[db.dialect],
		"{{now}}", strconv.FormatInt(db.now(), 10),
		// The position of a substring, 1-based (0: absent), arguments in
		// the same order on both.
		"{{strpos}}", map[dialect]string{sqlite: "instr", postgres: "strpos"}[db.dialect],
	)
	return r.Replace(stmt)
}

// migrationLockID is the PostgreSQL advisory lock key that serializes
// migrations across replicas starting at once.
const migrationLockID = 0x62657274 // "bert"

func (db *core) migrate(ctx context.Context) error { return db.migrateTo(ctx, len(migrations)) }

// migrateTo applies the migrations up to version target.
func (db *core) migrateTo(ctx context.Context, target int) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		if db.dialect == postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockID); err != nil {
				return fmt.Errorf("migration lock: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var current int
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if current > len(migrations) {
			return fmt.Errorf("database schema version %d is newer than this binary's %d: upgrade berth", current, len(migrations))
		}
		if db.noUpgrade && current > 0 && current < target {
			return fmt.Errorf("%w: the database's schema version is %d, this binary's %d; run `berth admin migrate` (or berth serve) of this version first, as the upgrade's step", ErrSchemaBehind, current, target)
		}
		for v := current + 1; v <= target; v++ {
			for _, stmt := range strings.Split(db.render(migrations[v-1]), ";\n") {
				if strings.TrimSpace(stmt) == "" {
					continue
				}
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migration %d: %w", v, err)
				}
			}
		}
		// Recorded after all of them: each migration changes the schema,
		// which makes SQLite prepare a kept statement again.
		for v := current + 1; v <= target; v++ {
			if _, err := tx.ExecContext(ctx, db.q("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)"), v, db.now()); err != nil {
				return fmt.Errorf("record migration %d: %w", v, err)
			}
		}
		return nil
	})
}
