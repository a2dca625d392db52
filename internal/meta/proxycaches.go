package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/oci"
)

// ErrProxyCacheNotFound is returned when an organization has no proxy
// cache configuration.
var ErrProxyCacheNotFound = fmt.Errorf("proxy cache %w", ErrNotFound)

// ErrProxyCacheConflict is returned when a proxy cache and a repository
// mirror would share an organization: each would overwrite the other's
// tags with its own upstream's.
var ErrProxyCacheConflict = errors.New("a proxy cache organization cannot hold mirrored repositories")

// ProxyCache is an organization's pull-through cache configuration.
type ProxyCache struct {
	Namespace      string
	Upstream       string // host[:port][/path prefix]
	Username       string
	PasswordSealed string // sealed by the caller; never returned by the API
	ExpirationS    int64
	Insecure       bool
	CreatedBy      string
	CreatedAt      time.Time
}

// SetProxyCache creates or replaces an organization's proxy cache
// configuration.
func (db ProxyCaches) SetProxyCache(ctx context.Context, pc ProxyCache) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var nsID int64
		// The organization's row, locked: CreateMirror reads it FOR SHARE.
		err := tx.QueryRowContext(ctx, db.q("SELECT id FROM namespaces WHERE name = ? AND kind = ?"+db.lockSuffix()), pc.Namespace, NamespaceOrg).Scan(&nsID)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNamespaceNotFound
		}
		if err != nil {
			return fmt.Errorf("look up namespace: %w", err)
		}
		var mirrored int
		err = tx.QueryRowContext(ctx, db.q(`SELECT COUNT(*) FROM repositories WHERE name LIKE CAST(? AS TEXT) ESCAPE '\' AND state = ?`),
			likePrefix(pc.Namespace+"/"), repoStateMirror).Scan(&mirrored)
		if err != nil {
			return fmt.Errorf("look up mirrors: %w", err)
		}
		if mirrored > 0 {
			return fmt.Errorf("%w: %s has %d", ErrProxyCacheConflict, pc.Namespace, mirrored)
		}
		_, err = tx.ExecContext(ctx, db.q(`INSERT INTO proxy_caches (namespace_id, upstream, username, password_sealed, expiration_s, insecure, created_by, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace_id) DO UPDATE SET upstream = excluded.upstream, username = excluded.username,
			password_sealed = excluded.password_sealed, expiration_s = excluded.expiration_s, insecure = excluded.insecure,
			created_by = excluded.created_by, created_at = excluded.created_at`),
			nsID, pc.Upstream, pc.Username, pc.PasswordSealed, pc.ExpirationS, boolInt(pc.Insecure), pc.CreatedBy, db.now())
		if err != nil {
			return fmt.Errorf("store proxy cache: %w", err)
		}
		return nil
	})
}

const proxyCacheColumns = "n.name, p.upstream, p.username, p.password_sealed, p.expiration_s, p.insecure, p.created_by, p.created_at"

func scanProxyCache(row interface{ Scan(...any) error }) (ProxyCache, error) {
	var pc ProxyCache
	var insecure int
	var created int64
	if err := row.Scan(&pc.Namespace, &pc.Upstream, &pc.Username, &pc.PasswordSealed, &pc.ExpirationS, &insecure, &pc.CreatedBy, &created); err != nil {
		return ProxyCache{}, err
	}
	pc.Insecure, pc.CreatedAt = insecure != 0, fromMicros(created)
	return pc, nil
}

// ProxyCacheOf returns an organization's proxy cache configuration.
func (db ProxyCaches) ProxyCacheOf(ctx context.Context, namespace string) (ProxyCache, error) {
	pc, err := scanProxyCache(db.read.QueryRowContext(ctx, db.q(`SELECT `+proxyCacheColumns+` FROM proxy_caches p
		JOIN namespaces n ON n.id = p.namespace_id WHERE n.name = ?`), namespace))
	if errors.Is(err, sql.ErrNoRows) {
		return ProxyCache{}, ErrProxyCacheNotFound
	}
	if err != nil {
		return ProxyCache{}, fmt.Errorf("get proxy cache: %w", err)
	}
	return pc, nil
}

// ProxyCaches lists every proxy cache configuration.
func (db ProxyCaches) ProxyCaches(ctx context.Context) ([]ProxyCache, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT `+proxyCacheColumns+` FROM proxy_caches p JOIN namespaces n ON n.id = p.namespace_id ORDER BY n.name`)
	if err != nil {
		return nil, fmt.Errorf("list proxy caches: %w", err)
	}
	defer rows.Close()
	out := []ProxyCache{}
	for rows.Next() {
		pc, err := scanProxyCache(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, pc)
	}
	return out, rows.Err()
}

// DeleteProxyCache removes an organization's proxy cache configuration.
// The cached repositories stay, as ordinary repositories.
func (db ProxyCaches) DeleteProxyCache(ctx context.Context, namespace string) error {
	res, err := db.write.ExecContext(ctx, db.q(`DELETE FROM proxy_caches WHERE namespace_id = (SELECT id FROM namespaces WHERE name = ?)`), namespace)
	if err != nil {
		return fmt.Errorf("delete proxy cache: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrProxyCacheNotFound
	}
	return nil
}

// ProxyTagChecked returns the digest a cached tag had upstream when it
// was last checked, and when.
func (db ProxyCaches) ProxyTagChecked(ctx context.Context, repo, tag string) (digest.Digest, time.Time, error) {
	var d string
	var at int64
	err := db.read.QueryRowContext(ctx, db.q(`SELECT p.digest, p.checked_at FROM proxy_tags p JOIN repositories r ON r.id = p.repository_id
		WHERE r.name = ? AND p.name = ?`), repo, tag).Scan(&d, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return "", time.Time{}, fmt.Errorf("proxy tag %w", ErrNotFound)
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("get proxy tag: %w", err)
	}
	return digest.Digest(d), fromMicros(at), nil
}

// TouchProxyTag records that a cached tag was found unchanged upstream
// at the given time. A repository that does not exist (deleted
// meanwhile) is ErrRepositoryNotFound.
func (db ProxyCaches) TouchProxyTag(ctx context.Context, repo, tag string, d digest.Digest, at time.Time) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		id, err := db.repoID(ctx, tx, repo)
		if err != nil {
			return err
		}
		return db.touchProxyTag(ctx, tx, id, tag, d, at)
	})
}

func (db *core) touchProxyTag(ctx context.Context, tx *sql.Tx, repoID int64, tag string, d digest.Digest, at time.Time) error {
	_, err := tx.ExecContext(ctx, db.q(`INSERT INTO proxy_tags (repository_id, name, digest, checked_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, checked_at = excluded.checked_at`), repoID, tag, d.String(), at.UnixMicro())
	if err != nil {
		return fmt.Errorf("record proxy tag: %w", err)
	}
	return nil
}

// ProxyReferenced reports whether a manifest stored in the repository
// refers to the digest (a blob or a child manifest), and the size that
// manifest gives it. A reference whose descriptor is not found in the
// manifest's body (it cannot happen: references are read from the body)
// has size -1.
func (db ProxyCaches) ProxyReferenced(ctx context.Context, repo string, d digest.Digest) (int64, bool, error) {
	return db.proxyReferenced(ctx, repo, d, "")
}

// ProxyBlobReferenced is ProxyReferenced of what a manifest stored in the
// repository names as a blob (a config, a layer, an index entry that is
// not a manifest): what the cache downloads through the upstream's blob
// endpoint, reading no more bytes than the manifest declares. Never a
// child manifest: it is pulled as a manifest, and the quota does not
// count it as a blob.
func (db ProxyCaches) ProxyBlobReferenced(ctx context.Context, repo string, d digest.Digest) (int64, bool, error) {
	return db.proxyReferenced(ctx, repo, d, " AND mr.is_manifest = 0")
}

func (db ProxyCaches) proxyReferenced(ctx context.Context, repo string, d digest.Digest, filter string) (int64, bool, error) {
	var content []byte
	var mediaType string
	err := db.read.QueryRowContext(ctx, db.q(`SELECT m.content, m.media_type FROM manifest_references mr
		JOIN repositories r ON r.id = mr.repository_id
		JOIN manifests m ON m.repository_id = mr.repository_id AND m.digest = mr.manifest_digest
		WHERE r.name = ? AND mr.ref_digest = ?`+filter+` LIMIT 1`), repo, d.String()).Scan(&content, &mediaType)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("look up manifest references: %w", err)
	}
	m, err := oci.ParseManifest(content, mediaType)
	if err != nil {
		return -1, true, nil // stored, so it parsed when it came in
	}
	descs := append(append([]oci.Descriptor{}, m.Layers...), m.Manifests...)
	if m.Config != nil {
		descs = append(descs, *m.Config)
	}
	for _, desc := range descs {
		if desc.Digest == d {
			return desc.Size, true, nil
		}
	}
	return -1, true, nil
}

// QuotaRoom refuses (*QuotaExceededError) a blob of added bytes that the
// cache is about to download for a namespace whose usage it would bring
// past its quota's Reject limit: an organization's admins, who set up its
// cache, must not get past a limit a superuser set by pulling through an
// upstream of their own. Read outside any transaction: concurrent
// downloads may each pass, by at most their own size.
func (db ProxyCaches) QuotaRoom(ctx context.Context, ns string, added int64) error {
	qs, err := db.quotas(ctx, db.read, ns, 0)
	if err != nil || len(qs) == 0 {
		return err
	}
	usage, err := Quotas(db).NamespaceUsage(ctx, ns)
	if err != nil {
		return err
	}
	q := qs[0]
	for _, l := range q.Limits {
		if l.Type == QuotaReject && usage+added > ThresholdBytes(q.LimitBytes, l.ThresholdPercent) {
			return &QuotaExceededError{Namespace: ns, Usage: usage, Added: added, LimitBytes: q.LimitBytes, ThresholdPercent: l.ThresholdPercent}
		}
	}
	return nil
}

// PutProxyManifest stores a manifest fetched by the pull-through cache.
// Unlike PutManifest its references need not be in the repository yet:
// blobs and child manifests are fetched when first requested. The tags
// (if any) are recorded as checked at checkedAt. One transaction, with the
// repo_push event when something changed.
func (db ProxyCaches) PutProxyManifest(ctx context.Context, p PutManifest, checkedAt time.Time) error {
	return db.putManifest(ctx, p, false, func(tx *sql.Tx, repoID int64, tag string) error {
		return db.touchProxyTag(ctx, tx, repoID, tag, p.Manifest.Digest, checkedAt)
	})
}
