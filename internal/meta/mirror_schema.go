package meta

// mirrorSchema is migration 5: repository mirroring (Quay's repository
// mirror). Times are Unix microseconds; JSON columns hold the rule, the
// proxy settings and the architecture filter as the API gives them.
const mirrorSchema = `
CREATE TABLE repository_mirrors (
	repository {{text}} PRIMARY KEY REFERENCES repositories(name) ON DELETE CASCADE,
	is_enabled INTEGER NOT NULL DEFAULT 1,
	external_reference TEXT NOT NULL,
	username TEXT NOT NULL DEFAULT '',
	password_sealed TEXT NOT NULL DEFAULT '',
	verify_tls INTEGER NOT NULL DEFAULT 1,
	unsigned_images INTEGER NOT NULL DEFAULT 0,
	proxy TEXT NOT NULL DEFAULT '{}',
	sync_interval BIGINT NOT NULL,
	sync_start_date BIGINT NOT NULL,
	root_rule TEXT NOT NULL,
	robot_username TEXT NOT NULL DEFAULT '',
	architecture_filter TEXT NOT NULL DEFAULT '[]',
	sync_status TEXT NOT NULL DEFAULT 'NEVER_RUN',
	sync_retries_remaining INTEGER NOT NULL DEFAULT 3,
	next_sync_at BIGINT NOT NULL,
	last_error TEXT NOT NULL DEFAULT '',
	cancel_requested INTEGER NOT NULL DEFAULT 0,
	job_id BIGINT NOT NULL DEFAULT 0,
	last_sync_at BIGINT NOT NULL DEFAULT 0,
	created_at BIGINT NOT NULL
);
CREATE INDEX repository_mirrors_due ON repository_mirrors(is_enabled, next_sync_at);
`

// mirrorConfiguredBySchema is migration 38: the account that last set a
// mirror's configuration through the API (mirrors.go, ConfiguredBy). A
// sync links a blob from another repository of the namespace only where
// both its robot and that account may pull: a repository admin does not
// borrow the robot's reach by pointing its mirror at an upstream of
// theirs. NULL for mirrors configured before, by no account (auth mode
// none, an access token) or by one deleted since: their syncs link no
// blob from another repository (each is downloaded) until an account
// configures them again.
const mirrorConfiguredBySchema = `
ALTER TABLE repository_mirrors ADD COLUMN configured_by BIGINT REFERENCES users(id) ON DELETE SET NULL;
CREATE INDEX repository_mirrors_configured_by ON repository_mirrors(configured_by) WHERE configured_by IS NOT NULL;
`
