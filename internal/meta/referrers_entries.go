package meta

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// ReferrerQuery selects a subject's referrers in listing order (when
// stored, then digest).
type ReferrerQuery struct {
	Repository string
	Subject    digest.Digest
	// ArtifactType keeps only referrers of this artifact type ("": all).
	ArtifactType string
	// After is the place the listing starts after (zero: the start).
	After ReferrerKey
	// N is the most referrers answered (0: all).
	N int
	// Readable leaves out, in the query, the referrers a gate holds.
	Readable bool
}

// referrersWhere is the FROM, WHERE, ORDER BY and LIMIT of a query of
// q's referrers (manifests m).
func referrersWhere(q ReferrerQuery) (string, []any) {
	var b strings.Builder
	b.WriteString(` FROM repositories r JOIN manifests m ON m.repository_id = r.id WHERE r.name = ? AND m.subject = ?`)
	args := []any{q.Repository, q.Subject.String()}
	if q.Readable {
		b.WriteString(" AND m.held = 0")
	}
	if q.ArtifactType != "" {
		b.WriteString(" AND m.artifact_type = ?")
		args = append(args, q.ArtifactType)
	}
	if q.After.Digest != "" {
		b.WriteString(" AND (m.created_at > ? OR (m.created_at = ? AND m.digest > ?))")
		args = append(args, q.After.CreatedAt, q.After.CreatedAt, q.After.Digest)
	}
	b.WriteString(" ORDER BY m.created_at, m.digest")
	if q.N > 0 {
		b.WriteString(" LIMIT CAST(? AS BIGINT)")
		args = append(args, q.N)
	}
	return b.String(), args
}

// ReferrerEntry is a referrer as a listing finds it, without reading its
// annotations (each may be up to a manifest's size, and whoever may push
// may attach thousands): their stored length, and the one fact of them
// the web UI shows.
type ReferrerEntry struct {
	Key          ReferrerKey
	Digest       digest.Digest
	MediaType    string
	ArtifactType string
	Size         int64
	Held         bool
	// AnnotationsLen is the length in bytes of the stored annotations,
	// the JSON object a descriptor of the referrer carries as they are
	// (ReferrerAnnotations); 0: it has none.
	AnnotationsLen int64
	// BerthSBOM says it is an SBOM Berth's scanner attached (stored
	// to go with its subject: PutManifest.DeletedWithSubject).
	BerthSBOM bool
}

// ReferrerEntries lists q's referrers without their annotations: the
// database reads their length only, and nothing of them is sent.
func (db Manifests) ReferrerEntries(ctx context.Context, q ReferrerQuery) ([]ReferrerEntry, error) {
	// Berth's SBOM is the referrer its scanner stored to go with its
	// subject (deleted_with_subject), read from the row, not from the
	// annotations: a client's push of dev.berth.sbom is not Berth's, and
	// no request parses every referrer's annotations (up to 4 MiB each).
	isSBOM := `m.deleted_with_subject = 1`
	where, args := referrersWhere(q)
	query := `SELECT m.digest, m.media_type, m.artifact_type, m.size, m.held, m.created_at, COALESCE(octet_length(m.annotations), 0),
		CASE WHEN ` + isSBOM + ` THEN 1 ELSE 0 END` + where
	rows, err := db.read.QueryContext(ctx, db.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("list referrers: %w", err)
	}
	defer rows.Close()
	out := []ReferrerEntry{}
	for rows.Next() {
		var e ReferrerEntry
		var dg string
		var held, sbom int
		if err := rows.Scan(&dg, &e.MediaType, &e.ArtifactType, &e.Size, &held, &e.Key.CreatedAt, &e.AnnotationsLen, &sbom); err != nil {
			return nil, fmt.Errorf("scan referrer: %w", err)
		}
		e.Digest, e.Key.Digest, e.Held, e.BerthSBOM = digest.Digest(dg), dg, held == 1, sbom == 1
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list referrers: %w", err)
	}
	return out, nil
}

// annotationsChunk is how many manifests ReferrerAnnotations asks for in
// one query (well below either database's limit of parameters).
const annotationsChunk = 500

// ReferrerAnnotations returns the stored annotations of manifests of
// repo, by digest, as stored: the JSON object of a non-empty string map,
// as encoding/json writes it (PutManifest), which a descriptor carries as
// it is. A manifest without annotations, or gone, is left out.
func (db Manifests) ReferrerAnnotations(ctx context.Context, repo string, digests []digest.Digest) (map[digest.Digest]string, error) {
	out := make(map[digest.Digest]string, len(digests))
	for len(digests) > 0 {
		chunk := digests[:min(len(digests), annotationsChunk)]
		digests = digests[len(chunk):]
		args := make([]any, 0, len(chunk)+1)
		args = append(args, repo)
		for _, d := range chunk {
			args = append(args, d.String())
		}
		query := `SELECT m.digest, m.annotations FROM repositories r JOIN manifests m ON m.repository_id = r.id
			WHERE r.name = ? AND m.annotations IS NOT NULL AND m.digest IN (?` + strings.Repeat(", ?", len(chunk)-1) + `)`
		if err := db.readAnnotations(ctx, query, args, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (db Manifests) readAnnotations(ctx context.Context, query string, args []any, out map[digest.Digest]string) error {
	rows, err := db.read.QueryContext(ctx, db.q(query), args...)
	if err != nil {
		return fmt.Errorf("read referrers' annotations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var dg string
		var ann sql.NullString
		if err := rows.Scan(&dg, &ann); err != nil {
			return fmt.Errorf("scan referrer annotations: %w", err)
		}
		if ann.Valid && ann.String != "" {
			out[digest.Digest(dg)] = ann.String
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read referrers' annotations: %w", err)
	}
	return nil
}
