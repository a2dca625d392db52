package meta

// proxyCacheSchema is migration 6: the pull-through cache. proxy_caches
// holds one upstream per organization (the password sealed by the
// caller); proxy_tags records when a cached tag was last checked against
// its upstream.
const proxyCacheSchema = `
CREATE TABLE proxy_caches (
	namespace_id BIGINT PRIMARY KEY REFERENCES namespaces(id) ON DELETE CASCADE,
	upstream TEXT NOT NULL,
	username TEXT NOT NULL DEFAULT '',
	password_sealed TEXT NOT NULL DEFAULT '',
	expiration_s BIGINT NOT NULL,
	insecure SMALLINT NOT NULL DEFAULT 0,
	created_by TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL
);
CREATE TABLE proxy_tags (
	repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
	name {{text}} NOT NULL,
	digest TEXT NOT NULL,
	checked_at BIGINT NOT NULL,
	PRIMARY KEY (repository_id, name)
);
`
