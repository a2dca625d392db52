package meta

// lifecycleSchema is the migration of Quay's tag policies (lifecycle.go):
// a tag's expiration (tags.expires_at, 0: none), immutability and
// auto-prune policies of an organization or of one repository
// (tag_policies: repository_id NULL for the whole organization), and the
// repo_image_expiry notices sent, once per notification, tag and
// expiration.
const lifecycleSchema = `
ALTER TABLE tags ADD COLUMN expires_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX tags_expires ON tags(expires_at) WHERE expires_at > 0;
CREATE TABLE tag_policies (
	id {{serial}},
	uuid TEXT NOT NULL UNIQUE,
	kind TEXT NOT NULL,
	namespace_id BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
	repository_id BIGINT REFERENCES repositories(id) ON DELETE CASCADE,
	method TEXT NOT NULL DEFAULT '',
	value TEXT NOT NULL DEFAULT '',
	tag_pattern TEXT NOT NULL DEFAULT '',
	tag_pattern_matches SMALLINT NOT NULL DEFAULT 1,
	created_at BIGINT NOT NULL
);
CREATE INDEX tag_policies_namespace ON tag_policies(namespace_id, kind);
CREATE TABLE expiry_notices (
	notification_uuid TEXT NOT NULL,
	repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	tag {{text}} NOT NULL,
	expires_at BIGINT NOT NULL,
	PRIMARY KEY (notification_uuid, repository_id, tag, expires_at)
);
`
