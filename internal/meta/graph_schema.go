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

// graphSchema is the migration of the base-image graph (graph.go).
// graph_images holds every image manifest the graph indexed, past and
// present (rows stay when the manifest is deleted, so an image built on a
// digest a tag left long ago still finds it), with its layer count and
// its top chain ID; graph_chains every chain ID of each, so "which images
// start with these layers" is an indexed lookup. graph_bases records,
// per dependent image, its bases (level 1 the immediate one, then down the
// chain), how each was detected and the tag it was reached through (with
// what that tag pointed to then: the base or its index). graph_triggers
// remembers each base_image_updated fired, once per dependent and new
// base. Every image and index already stored is queued for indexing (the
// graph's jobs, per repository in push order), so an upgraded registry
// knows what its existing images are built on.
const graphSchema = `
CREATE INDEX manifests_digest ON manifests(digest);
CREATE TABLE graph_images (
	repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	digest TEXT NOT NULL,
	layers INTEGER NOT NULL,
	top_chain TEXT NOT NULL,
	platform TEXT NOT NULL DEFAULT '',
	indexed_at BIGINT NOT NULL,
	PRIMARY KEY (repository_id, digest)
);
CREATE INDEX graph_images_top ON graph_images(top_chain);
CREATE TABLE graph_chains (
	repository_id BIGINT NOT NULL,
	digest TEXT NOT NULL,
	depth INTEGER NOT NULL,
	chain_id TEXT NOT NULL,
	PRIMARY KEY (repository_id, digest, depth),
	FOREIGN KEY (repository_id, digest) REFERENCES graph_images(repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX graph_chains_chain ON graph_chains(chain_id);
CREATE TABLE graph_bases (
	repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	digest TEXT NOT NULL,
	base_repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	base_digest TEXT NOT NULL,
	base_tag {{text}} NOT NULL DEFAULT '',
	base_top TEXT NOT NULL,
	method TEXT NOT NULL,
	level INTEGER NOT NULL,
	layers INTEGER NOT NULL,
	matched_at BIGINT NOT NULL,
	PRIMARY KEY (repository_id, digest, base_repository_id, base_digest, base_tag)
);
CREATE INDEX graph_bases_tag ON graph_bases(base_repository_id, base_tag);
CREATE INDEX graph_bases_base ON graph_bases(base_repository_id, base_digest);
CREATE TABLE graph_triggers (
	repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	digest TEXT NOT NULL,
	new_base TEXT NOT NULL,
	fired_at BIGINT NOT NULL,
	PRIMARY KEY (repository_id, digest, new_base)
);
INSERT INTO jobs (queue, ordering_key, payload, status, attempts, max_attempts, run_at, last_error, created_at, updated_at)
	SELECT 'graph', 'index|' || r.name, '{"kind":"index","repository":"' || r.name || '","digest":"' || m.digest || '"}',
		'pending', 0, 5, {{now}}, '', {{now}}, {{now}}
	FROM manifests m JOIN repositories r ON r.id = m.repository_id
	WHERE m.media_type IN ('application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json',
		'application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json')
	ORDER BY m.created_at, m.digest;
`

// graphCandidatesSchema is migration 34: the gate waits for the graph to
// have looked at a candidate (Graph.Indexed), which the graph records for
// every image and index it looks at since; a live candidate stored
// before (an index, an image without layers) has no such record, so its
// index job is queued again (idempotent), behind the repository's live
// graph jobs.
const graphCandidatesSchema = `
INSERT INTO jobs (queue, ordering_key, payload, status, attempts, max_attempts, run_at, last_error, created_at, updated_at, behind)
	SELECT 'graph', 'index|' || r.name, '{"kind":"index","repository":"' || r.name || '","digest":"' || c.digest || '"}',
		'pending', 0, 5, {{now}}, '', {{now}}, {{now}},
		CASE WHEN EXISTS (SELECT 1 FROM jobs o WHERE o.queue = 'graph' AND o.ordering_key = 'index|' || r.name
			AND o.status IN ('pending', 'running')) THEN 1 ELSE 0 END
	FROM (SELECT DISTINCT repository_id, digest FROM gate_candidates WHERE state IN ('pending', 'blocked')) c
	JOIN repositories r ON r.id = c.repository_id
	WHERE NOT EXISTS (SELECT 1 FROM graph_images g WHERE g.repository_id = c.repository_id AND g.digest = c.digest)
	ORDER BY c.repository_id, c.digest;
`
