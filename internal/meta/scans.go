package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"
)

// ScanQueue is the job queue of the scanner: indexing and matching one
// manifest, and re-matching manifests after a database import.
const ScanQueue = "scan"

// Scan statuses, as Quay's security API names them.
const (
	ScanQueued      = "queued"
	ScanScanned     = "scanned"
	ScanFailed      = "failed"
	ScanUnsupported = "unsupported"
)

// Event kinds appended by the scanner.
const (
	EventManifestScanned    = "manifest_scanned"
	EventVulnerabilityFound = "vulnerability_found"
)

// ScanJob is the payload of a scan queue job: Kind "manifest" indexes and
// matches Digest (announcing it in Repository); Kind "rematch" re-matches
// the manifests the Records name.
type ScanJob struct {
	Kind       string   `json:"kind"`
	Repository string   `json:"repository,omitempty"`
	Digest     string   `json:"digest,omitempty"`
	Records    []string `json:"records,omitempty"`
}

// Scan job kinds.
const (
	ScanJobManifest = "manifest"
	ScanJobRematch  = "rematch"
)

// enqueueScan queues a scan of digest for repo, in the push's transaction.
// The manifest's state becomes queued unless it was scanned before (the
// job then only announces the known result in repo).
func (db *core) enqueueScan(ctx context.Context, tx *sql.Tx, repo, digest string) error {
	if _, err := db.markQueued(ctx, tx, digest); err != nil {
		return err
	}
	return db.enqueueScanJob(ctx, tx, repo, digest)
}

// markQueued records a manifest's scan as queued unless it has a state
// already, and reports whether it did.
func (db *core) markQueued(ctx context.Context, tx *sql.Tx, digest string) (bool, error) {
	res, err := tx.ExecContext(ctx, db.q(`INSERT INTO manifest_scans (digest, status, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (digest) DO NOTHING`), digest, ScanQueued, db.now())
	if err != nil {
		return false, fmt.Errorf("queue scan: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

func (db *core) enqueueScanJob(ctx context.Context, tx *sql.Tx, repo, digest string) error {
	payload, _ := json.Marshal(ScanJob{Kind: ScanJobManifest, Repository: repo, Digest: digest})
	_, err := db.enqueueJob(ctx, tx, Job{Queue: ScanQueue, OrderingKey: "manifest|" + digest, Payload: payload})
	return err
}

// RequeueFailedScan queues again, for repo, the scan of digest if it
// failed at least age ago (by the store's clock), and reports whether it
// did: the
// state goes back to queued, and the job is queued, in one transaction,
// only for the request whose update finds it failed (of concurrent ones,
// one queues; the others see it queued).
func (db Scans) RequeueFailedScan(ctx context.Context, repo, digest string, age time.Duration) (bool, error) {
	queued := false
	err := db.tx(ctx, func(tx *sql.Tx) error {
		queued = false
		now := db.now()
		res, err := tx.ExecContext(ctx, db.q(`UPDATE manifest_scans SET status = ?, reason = '', updated_at = ?
			WHERE digest = ? AND status = ? AND updated_at <= ?`), ScanQueued, now, digest, ScanFailed, now-age.Microseconds())
		if err != nil {
			return fmt.Errorf("queue a failed scan again: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return nil
		}
		queued = true
		return db.enqueueScanJob(ctx, tx, repo, digest)
	})
	return queued, err
}

// QueueScan queues a scan of digest for repo in tx (the scanner's feed
// subscriber, for a manifest a push stored).
func (db Scans) QueueScan(ctx context.Context, tx Tx, repo, digest string) error {
	return db.enqueueScan(ctx, tx.tx, repo, digest)
}

// EnqueueScan queues a scan of a stored manifest (a rescan on request, or
// a manifest stored before scanning was turned on).
func (db Scans) EnqueueScan(ctx context.Context, repo, digest string) error {
	return db.tx(ctx, func(tx *sql.Tx) error { return db.enqueueScan(ctx, tx, repo, digest) })
}

// QueueFirstScan queues a scan of a stored manifest never queued before
// (stored before scanning was turned on), unless a concurrent request did
// meanwhile: requests that find no scan at once queue one job, not one
// each (each would announce its result again).
func (db Scans) QueueFirstScan(ctx context.Context, repo, digest string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		first, err := db.markQueued(ctx, tx, digest)
		if err != nil || !first {
			return err // queued by another request, if not err
		}
		return db.enqueueScanJob(ctx, tx, repo, digest)
	})
}

// ManifestScan is the scan state and report of a manifest.
type ManifestScan struct {
	Digest         string
	Status         string
	Reason         string
	IndexerVersion int
	Report         []byte
	UpdatedAt      time.Time
}

// ManifestScan returns the scan state of a manifest; ErrNotFound if it was
// never queued.
func (db Scans) ManifestScan(ctx context.Context, digest string) (ManifestScan, error) {
	s := ManifestScan{Digest: digest}
	var updated int64
	err := db.read.QueryRowContext(ctx, db.q("SELECT status, reason, indexer_version, report, updated_at FROM manifest_scans WHERE digest = ?"), digest).
		Scan(&s.Status, &s.Reason, &s.IndexerVersion, &s.Report, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return ManifestScan{}, fmt.Errorf("scan of %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return ManifestScan{}, fmt.Errorf("read scan: %w", err)
	}
	s.UpdatedAt = fromMicros(updated)
	return s, nil
}

// LayerIndexRow is a layer's cached index result.
type LayerIndexRow struct {
	Version   int
	Status    string
	Result    []byte
	IndexedAt time.Time
}

// LayerIndex returns the cached index result of a layer; ErrNotFound if
// the layer was never indexed.
func (db Scans) LayerIndex(ctx context.Context, digest string) (LayerIndexRow, error) {
	var r LayerIndexRow
	var at int64
	err := db.read.QueryRowContext(ctx, db.q("SELECT indexer_version, status, result, indexed_at FROM layer_index WHERE digest = ?"), digest).
		Scan(&r.Version, &r.Status, &r.Result, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return LayerIndexRow{}, fmt.Errorf("layer %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return LayerIndexRow{}, fmt.Errorf("read layer index: %w", err)
	}
	r.IndexedAt = fromMicros(at)
	return r, nil
}

// LayerIndexEntry is a layer's index result to cache.
type LayerIndexEntry struct {
	Digest  string
	Version int
	Status  string
	Result  []byte
}

// putLayerIndex stores (or replaces) a layer's index result.
func (db *core) putLayerIndex(ctx context.Context, tx *sql.Tx, l LayerIndexEntry) error {
	_, err := tx.ExecContext(ctx, db.q(`INSERT INTO layer_index (digest, indexer_version, status, result, indexed_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (digest) DO UPDATE SET indexer_version = excluded.indexer_version, status = excluded.status,
		result = excluded.result, indexed_at = excluded.indexed_at`), l.Digest, l.Version, l.Status, l.Result, db.now())
	if err != nil {
		return fmt.Errorf("store layer index: %w", err)
	}
	return nil
}

// ScanPackage is a package of a manifest as the matcher names it (for
// Debian, the source package and version).
type ScanPackage struct {
	Ecosystem string
	Name      string
	Version   string
}

// ScanVuln is a vulnerability matched in a manifest: Package is the
// matched "name@version".
type ScanVuln struct {
	VulnID   string
	Package  string
	Severity string
}

// ScanResult is the outcome of scanning a manifest.
type ScanResult struct {
	Digest         string
	Status         string
	Reason         string
	IndexerVersion int
	Report         []byte
	// Summary is what the data coverage of the image is computed from
	// (scan's coverage summary of Report), stored beside it: nil with no
	// report.
	Summary  []byte
	Packages []ScanPackage
	Vulns    []ScanVuln
	// Layers are newly indexed layers to cache, by digest (written in the
	// same transaction: one write per scan, not one per layer).
	Layers []LayerIndexEntry
	// Events are appended in the same transaction (manifest_scanned,
	// vulnerability_found).
	Events []Event
}

// SaveScan stores a manifest's scan result, replacing its packages and
// matched vulnerabilities, and appends its events, in one transaction,
// after which it runs also in that transaction (what the scanner derives
// from the result, its SBOM, commits with it).
func (db Scans) SaveScan(ctx context.Context, r ScanResult, also ...func(context.Context, Tx) error) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		ts := db.now()
		for _, l := range r.Layers {
			if err := db.putLayerIndex(ctx, tx, l); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO manifest_scans (digest, status, reason, indexer_version, report, coverage_summary, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (digest) DO UPDATE SET status = excluded.status, reason = excluded.reason, indexer_version = excluded.indexer_version,
			report = excluded.report, coverage_summary = excluded.coverage_summary, updated_at = excluded.updated_at`),
			r.Digest, r.Status, r.Reason, r.IndexerVersion, r.Report, nilIfEmpty(r.Summary), ts); err != nil {
			return fmt.Errorf("store scan: %w", err)
		}
		if _, err := tx.ExecContext(ctx, db.q("DELETE FROM manifest_packages WHERE digest = ?"), r.Digest); err != nil {
			return fmt.Errorf("store scan packages: %w", err)
		}
		seen := map[ScanPackage]bool{}
		var rows [][]any
		for _, p := range r.Packages {
			if !seen[p] {
				seen[p] = true
				rows = append(rows, []any{p.Ecosystem, p.Name, p.Version, r.Digest})
			}
		}
		if err := db.insertRows(ctx, tx, "manifest_packages (ecosystem, name, version, digest)", rows); err != nil {
			return fmt.Errorf("store scan packages: %w", err)
		}
		if _, err := tx.ExecContext(ctx, db.q("DELETE FROM manifest_vulns WHERE digest = ?"), r.Digest); err != nil {
			return fmt.Errorf("store scan vulnerabilities: %w", err)
		}
		if err := db.insertVulns(ctx, tx, r.Digest, r.Vulns); err != nil {
			return err
		}
		if err := db.appendEvents(ctx, tx, r.Events); err != nil {
			return err
		}
		for _, fn := range also {
			if err := fn(ctx, Tx{tx}); err != nil {
				return err
			}
		}
		return nil
	})
}

func (db *core) insertVulns(ctx context.Context, tx *sql.Tx, digest string, vulns []ScanVuln) error {
	seen := map[[2]string]bool{}
	var rows [][]any
	for _, v := range vulns {
		k := [2]string{v.VulnID, v.Package}
		if !seen[k] {
			seen[k] = true
			rows = append(rows, []any{digest, v.VulnID, v.Package, v.Severity})
		}
	}
	if err := db.insertRows(ctx, tx, "manifest_vulns (digest, vuln_id, package, severity)", rows); err != nil {
		return fmt.Errorf("store scan vulnerabilities: %w", err)
	}
	return nil
}

// insertRows inserts rows (all of one width) into table, many per
// statement: a scan stores hundreds of rows, and one round trip each
// would dominate its time on PostgreSQL.
func (db *core) insertRows(ctx context.Context, tx *sql.Tx, table string, rows [][]any) error {
	return db.insertRowsBy(ctx, tx, table, rows, 200)
}

// insertRowsBy is insertRows with perStatement rows per statement (fewer
// for large rows, so that one statement stays small).
func (db *core) insertRowsBy(ctx context.Context, tx *sql.Tx, table string, rows [][]any, perStatement int) error {
	for len(rows) > 0 {
		n := min(perStatement, len(rows))
		width := len(rows[0])
		one := "(" + placeholders(width) + ")"
		args := make([]any, 0, n*width)
		for _, r := range rows[:n] {
			args = append(args, r...)
		}
		query := "INSERT INTO " + table + " VALUES " + strings.TrimSuffix(strings.Repeat(one+", ", n), ", ")
		if _, err := tx.ExecContext(ctx, db.q(query), args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

func (db *core) appendEvents(ctx context.Context, tx *sql.Tx, evs []Event) error {
	for _, e := range evs {
		if err := db.appendEvent(ctx, tx, e); err != nil {
			return err
		}
	}
	return nil
}

// AppendEvents appends events in a transaction of their own (the scanner
// announcing a scan where it cannot do so in the transaction that
// completes its job).
func (db Scans) AppendEvents(ctx context.Context, evs []Event) error {
	if len(evs) == 0 {
		return nil
	}
	return db.tx(ctx, func(tx *sql.Tx) error { return db.appendEvents(ctx, tx, evs) })
}

// AppendEventsIn appends events in tx (the scanner announcing a scan in
// the transaction that completes its job).
func (db Scans) AppendEventsIn(ctx context.Context, tx Tx, evs []Event) error {
	return db.appendEvents(ctx, tx.tx, evs)
}

// ManifestVulns returns the vulnerabilities last matched in a manifest.
func (db Scans) ManifestVulns(ctx context.Context, digest string) ([]ScanVuln, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT vuln_id, package, severity FROM manifest_vulns WHERE digest = ? ORDER BY vuln_id, package"), digest)
	if err != nil {
		return nil, fmt.Errorf("read scan vulnerabilities: %w", err)
	}
	defer rows.Close()
	var out []ScanVuln
	for rows.Next() {
		var v ScanVuln
		if err := rows.Scan(&v.VulnID, &v.Package, &v.Severity); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// VulnChange replaces, for one manifest, the matches of a set of records.
type VulnChange struct {
	Digest string
	// HadMatches says the manifest had matches of the records before
	// (they are deleted first).
	HadMatches bool
	Vulns      []ScanVuln
	Events     []Event
}

// ApplyRematch replaces the matches of the records ids in each changed
// manifest and appends the changes' events, in one transaction.
func (db Scans) ApplyRematch(ctx context.Context, ids []string, changes []VulnChange) error {
	if len(changes) == 0 {
		return nil
	}
	digests := make([]string, len(changes))
	var rows [][]any
	for i, c := range changes {
		digests[i] = c.Digest
		seen := map[[2]string]bool{}
		for _, v := range c.Vulns {
			if k := [2]string{v.VulnID, v.Package}; !seen[k] {
				seen[k] = true
				rows = append(rows, []any{c.Digest, v.VulnID, v.Package, v.Severity})
			}
		}
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		ts := db.now()
		err := chunks(digests, func(ds []string) error {
			_, err := tx.ExecContext(ctx, db.q("UPDATE manifest_scans SET updated_at = ? WHERE digest IN ("+placeholders(len(ds))+")"),
				append([]any{ts}, anySlice(ds)...)...)
			return err
		})
		if err != nil {
			return fmt.Errorf("touch scans: %w", err)
		}
		// One statement per manifest, by its primary key's prefix: a
		// statement naming many digests and many records lets PostgreSQL
		// walk the records' index instead (5x slower at 10,000 manifests).
		for _, c := range changes {
			if !c.HadMatches {
				continue
			}
			err := chunks(ids, func(part []string) error {
				_, err := tx.ExecContext(ctx, db.q("DELETE FROM manifest_vulns WHERE digest = ? AND vuln_id IN ("+placeholders(len(part))+")"),
					append([]any{c.Digest}, anySlice(part)...)...)
				return err
			})
			if err != nil {
				return fmt.Errorf("replace scan vulnerabilities: %w", err)
			}
		}
		if err := db.insertRows(ctx, tx, "manifest_vulns (digest, vuln_id, package, severity)", rows); err != nil {
			return fmt.Errorf("replace scan vulnerabilities: %w", err)
		}
		for _, c := range changes {
			if err := db.appendEvents(ctx, tx, c.Events); err != nil {
				return err
			}
		}
		return nil
	})
}

// PackageHit is a manifest holding a package.
type PackageHit struct {
	Digest string
	ScanPackage
}

// ManifestsWithPackages returns the scanned manifests holding any of the
// named packages. A key with a bare ecosystem ("Debian") also finds every
// release of it ("Debian:12").
func (db Scans) ManifestsWithPackages(ctx context.Context, keys []VulnKey) ([]PackageHit, error) {
	var out []PackageHit
	for _, k := range keys {
		query := "SELECT digest, ecosystem, name, version FROM manifest_packages WHERE name = ? AND (ecosystem = ?"
		args := []any{k.Name, k.Ecosystem}
		if !strings.Contains(k.Ecosystem, ":") {
			query += " OR ecosystem LIKE CAST(? AS TEXT)"
			args = append(args, k.Ecosystem+":%")
		}
		rows, err := db.read.QueryContext(ctx, db.q(query+")"), args...)
		if err != nil {
			return nil, fmt.Errorf("find manifests by package: %w", err)
		}
		for rows.Next() {
			var h PackageHit
			if err := rows.Scan(&h.Digest, &h.Ecosystem, &h.Name, &h.Version); err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, h)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// VulnsOfRecords returns, per manifest, the matches stored for any of the
// records.
func (db Scans) VulnsOfRecords(ctx context.Context, ids []string) (map[string][]ScanVuln, error) {
	out := map[string][]ScanVuln{}
	err := chunks(ids, func(part []string) error {
		rows, err := db.read.QueryContext(ctx, db.q("SELECT digest, vuln_id, package, severity FROM manifest_vulns WHERE vuln_id IN ("+placeholders(len(part))+")"), anySlice(part)...)
		if err != nil {
			return fmt.Errorf("find manifests by vulnerability: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var d string
			var v ScanVuln
			if err := rows.Scan(&d, &v.VulnID, &v.Package, &v.Severity); err != nil {
				return err
			}
			out[d] = append(out[d], v)
		}
		return rows.Err()
	})
	return out, err
}

// ManifestHolder is a repository holding a manifest, with the tags that
// point at it there.
type ManifestHolder struct {
	Repository string
	Tags       []string
}

// ManifestHolders lists the repositories holding a manifest, with its
// tags there but those past their expiration (liveTag).
func (db Scans) ManifestHolders(ctx context.Context, digest string) ([]ManifestHolder, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT r.name, COALESCE(t.name, '') FROM manifests m
		JOIN repositories r ON r.id = m.repository_id
		LEFT JOIN tags t ON t.repository_id = m.repository_id AND t.manifest_digest = m.digest AND `+liveTag("t")+`
		WHERE m.digest = ? ORDER BY r.name, t.name`), db.now(), digest)
	if err != nil {
		return nil, fmt.Errorf("find manifest holders: %w", err)
	}
	defer rows.Close()
	var out []ManifestHolder
	for rows.Next() {
		var repo, tag string
		if err := rows.Scan(&repo, &tag); err != nil {
			return nil, err
		}
		if len(out) == 0 || out[len(out)-1].Repository != repo {
			out = append(out, ManifestHolder{Repository: repo, Tags: []string{}})
		}
		if tag != "" {
			out[len(out)-1].Tags = append(out[len(out)-1].Tags, tag)
		}
	}
	return out, rows.Err()
}

// chunks calls fn with ids in parts small enough for one statement's
// parameters.
func chunks(ids []string, fn func(part []string) error) error {
	const size = 500
	for len(ids) > 0 {
		n := min(size, len(ids))
		if err := fn(ids[:n]); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// ManifestsInEcosystem lists the scanned manifests holding a package of
// the ecosystem or of one of its releases ("Red Hat", "Red Hat:...").
func (db Scans) ManifestsInEcosystem(ctx context.Context, ecosystem string) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT DISTINCT digest FROM manifest_packages WHERE ecosystem = ? OR ecosystem LIKE CAST(? AS TEXT) ORDER BY digest"),
		ecosystem, ecosystem+":%")
	if err != nil {
		return nil, fmt.Errorf("find manifests by ecosystem: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("find manifests by ecosystem: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// CPEsOf returns the CPEs of the named content sets, by content set; a
// content set the mapping does not name is absent.
func (db Scans) CPEsOf(ctx context.Context, contentSets []string) (map[string][]string, error) {
	out := map[string][]string{}
	err := chunks(contentSets, func(part []string) error {
		m, err := readCPEMapping(ctx, db.read, db.q("SELECT content_set, cpe FROM content_set_cpes WHERE content_set IN ("+placeholders(len(part))+")"), anySlice(part)...)
		maps.Copy(out, m)
		return err
	})
	return out, err
}
