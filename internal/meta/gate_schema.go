package meta

// gateSchema is the migration of gates (gates.go). A gated repository is
// flagged on its row with the identities its gate lets check candidates,
// so the permission decision and the blob path read it with the
// repository. A manifest is held (manifests.held) while only a candidate
// or nothing published reaches it: readers without the check permission
// do not see it by tag, by digest, or through its blobs. gate_candidates
// is every candidate ever, its state and its last decision;
// gate_checks the results posted for a manifest (like commit statuses);
// gate_counters the per-tag counter of rollback tags; immutable_tags the
// tags nobody may move or delete (rollback tags of promotions).
const gateSchema = `
ALTER TABLE repositories ADD COLUMN gated SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE repositories ADD COLUMN gate_checkers TEXT NOT NULL DEFAULT '';
ALTER TABLE manifests ADD COLUMN held SMALLINT NOT NULL DEFAULT 0;
CREATE TABLE gates (
	repository_id BIGINT PRIMARY KEY REFERENCES repositories(id) ON DELETE CASCADE,
	tags TEXT NOT NULL,
	config TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
);
CREATE TABLE gate_candidates (
	id {{serial}},
	repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	tag {{text}} NOT NULL,
	digest TEXT NOT NULL,
	state TEXT NOT NULL,
	reasons TEXT NOT NULL DEFAULT '[]',
	decision TEXT NOT NULL DEFAULT '{}',
	rollback_tag TEXT NOT NULL DEFAULT '',
	actor TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL,
	decided_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX gate_candidates_tag ON gate_candidates(repository_id, tag, id);
CREATE INDEX gate_candidates_digest ON gate_candidates(repository_id, digest);
CREATE INDEX gate_candidates_live ON gate_candidates(repository_id, id) WHERE state IN ('pending', 'blocked');
CREATE TABLE gate_checks (
	repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	digest TEXT NOT NULL,
	name TEXT NOT NULL,
	status TEXT NOT NULL,
	details_url TEXT NOT NULL DEFAULT '',
	summary TEXT NOT NULL DEFAULT '',
	actor TEXT NOT NULL DEFAULT '',
	updated_at BIGINT NOT NULL,
	PRIMARY KEY (repository_id, digest, name)
);
CREATE TABLE gate_counters (
	repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	tag {{text}} NOT NULL,
	n BIGINT NOT NULL,
	PRIMARY KEY (repository_id, tag)
);
CREATE TABLE immutable_tags (
	repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	name {{text}} NOT NULL,
	reason TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	PRIMARY KEY (repository_id, name)
);
`

// gateCheckersSchema is migration 29: a gate's checkers as accounts, by
// id, so that a user or robot deleted and created again under the same
// name (or a new organization of a deleted one's name, with a robot of the
// old one's name) is not a checker (repositories.gate_checkers held names;
// it is still written, for replicas of an older version during an upgrade,
// and no longer read). A deleted account's rows go with it. The existing
// names are carried over to the accounts that have them now.
const gateCheckersSchema = `
CREATE TABLE gate_checkers (
	repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	PRIMARY KEY (repository_id, user_id)
);
CREATE INDEX gate_checkers_user ON gate_checkers(user_id);
INSERT INTO gate_checkers (repository_id, user_id)
SELECT r.id, u.id FROM repositories r JOIN users u
ON {{strpos}}('
' || r.gate_checkers || '
', '
' || u.username || '
') > 0
WHERE r.gated = 1`
