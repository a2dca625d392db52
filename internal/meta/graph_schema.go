package meta

// tagHistorySchema is the migration that keeps every digest a tag
// pointed to, from when until when (until_at 0: still does). The
// base-image graph reads it to know which tag a base was reached through
// and whether it has moved since; rollback reads it too. Existing tags
// start their history at their last change.
const tagHistorySchema = `
CREATE TABLE tag_history (
	id {{serial}},
	repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	tag {{text}} NOT NULL,
	digest TEXT NOT NULL,
	from_at BIGINT NOT NULL,
	until_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX tag_history_tag ON tag_history(repository_id, tag, id);
CREATE INDEX tag_history_digest ON tag_history(repository_id, digest);
INSERT INTO tag_history (repository_id, tag, digest, from_at, until_at) SELECT repository_id, name, manifest_digest, updated_at, 0 FROM tags;
`
