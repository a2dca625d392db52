package meta

// webSessionSchema is the migration of the web UI's sign-in sessions
// (web.go). A session is named by a random id the browser holds in a
// cookie; only its SHA-256 is stored, so a copy of the database signs no
// one in. csrf is the session's synchronizer token for the UI's forms.
// Rows go with their user; expired ones are deleted when a session is
// created (the expiry index keeps that cheap). tags_updated serves the
// tags sorted by push time (the UI's default, and the API's tag list)
// without sorting every tag of the repository.
const webSessionSchema = `
CREATE TABLE web_sessions (
	id_hash TEXT PRIMARY KEY,
	user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	csrf TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions(expires_at);
CREATE INDEX web_sessions_user ON web_sessions(user_id);
CREATE INDEX tags_updated ON tags(repository_id, updated_at);
`
