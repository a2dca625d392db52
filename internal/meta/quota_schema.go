package meta

// quotaSchema is the migration of namespace quotas (quota.go,
// quota_accounting.go).
//
// quota_blob_refs counts, per namespace (the first path component of a
// repository name), how many manifest references (manifest_references
// rows with is_manifest = 0) of the namespace's repositories name each
// blob, with the blob's size: NULL while no blob row exists (a manifest of
// the pull-through cache is stored before its blobs). A row exists exactly
// while its count is above zero. quota_usage holds each namespace's sum of
// the non-NULL sizes: the bytes of the distinct blobs its manifests
// reference. Both are keyed by the namespace's name, not its row, as
// repositories are: the count follows the repositories whatever happens to
// the namespace row. They are changed in the transactions that change the
// references (and, for the size, in those that record or condemn a blob
// row), so they never drift and are never backfilled, except here, once,
// from the content stored before this migration.
//
// namespace_quotas is the limit a superuser sets on a namespace (one per
// namespace, as Quay), namespace_quota_limits its Warning and Reject
// thresholds in percent of it.
const quotaSchema = `
CREATE TABLE quota_blob_refs (
	namespace {{text}} NOT NULL,
	digest TEXT NOT NULL,
	refs BIGINT NOT NULL,
	size BIGINT,
	PRIMARY KEY (namespace, digest)
);
CREATE INDEX quota_blob_refs_digest ON quota_blob_refs(digest);
CREATE TABLE quota_usage (
	namespace {{text}} PRIMARY KEY,
	bytes BIGINT NOT NULL
);
CREATE TABLE namespace_quotas (
	id {{serial}},
	namespace_id BIGINT NOT NULL UNIQUE REFERENCES namespaces(id) ON DELETE CASCADE,
	limit_bytes BIGINT NOT NULL,
	created_by TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL
);
CREATE TABLE namespace_quota_limits (
	id {{serial}},
	quota_id BIGINT NOT NULL REFERENCES namespace_quotas(id) ON DELETE CASCADE,
	kind TEXT NOT NULL CHECK (kind IN ('Warning', 'Reject')),
	threshold_percent INTEGER NOT NULL,
	UNIQUE (quota_id, kind, threshold_percent)
);
INSERT INTO quota_blob_refs (namespace, digest, refs, size)
	SELECT CASE WHEN {{strpos}}(r.name, '/') > 0 THEN substr(r.name, 1, {{strpos}}(r.name, '/') - 1) ELSE r.name END,
		mr.ref_digest, COUNT(*), MAX(b.size)
	FROM manifest_references mr
	JOIN repositories r ON r.id = mr.repository_id
	LEFT JOIN blobs b ON b.digest = mr.ref_digest
	WHERE mr.is_manifest = 0
	GROUP BY 1, 2;
INSERT INTO quota_usage (namespace, bytes)
	SELECT namespace, COALESCE(SUM(size), 0) FROM quota_blob_refs GROUP BY namespace;
`
