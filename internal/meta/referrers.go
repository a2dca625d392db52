package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// Referrers returns the manifests of a repository whose subject is d,
// optionally only those of one artifact type, oldest first.
func (db Manifests) Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]Manifest, error) {
	return db.ReferrersAfter(ctx, repo, d, artifactType, ReferrerKey{}, 0)
}

// ReferrerKey is a referrer's place in a listing of referrers: when it was
// stored (Unix microseconds), then its digest.
type ReferrerKey struct {
	CreatedAt int64
	Digest    string
}

// ReferrerKey is a referrer's place in a listing (a Manifest from
// ReferrersAfter).
func (m Manifest) ReferrerKey() ReferrerKey {
	return ReferrerKey{CreatedAt: m.CreatedAt.UnixMicro(), Digest: m.Digest.String()}
}

// ReferrersAfter is Referrers from after a place in the listing (the
// zero key: from the start), at most n of them (0: all). Each has its
// CreatedAt set.
func (db Manifests) ReferrersAfter(ctx context.Context, repo string, d digest.Digest, artifactType string, after ReferrerKey, n int) ([]Manifest, error) {
	return db.referrersAfter(ctx, repo, d, artifactType, after, n, false)
}

// ReadableReferrersAfter is ReferrersAfter less the referrers a gate
// holds, left out by the query: a listing for a caller who may not see
// them reads none of them (their annotations may be up to a manifest's
// size each, and whoever may push may attach thousands).
func (db Manifests) ReadableReferrersAfter(ctx context.Context, repo string, d digest.Digest, artifactType string, after ReferrerKey, n int) ([]Manifest, error) {
	return db.referrersAfter(ctx, repo, d, artifactType, after, n, true)
}

func (db Manifests) referrersAfter(ctx context.Context, repo string, d digest.Digest, artifactType string, after ReferrerKey, n int, readable bool) ([]Manifest, error) {
	where, args := referrersWhere(ReferrerQuery{Repository: repo, Subject: d, ArtifactType: artifactType, After: after, N: n, Readable: readable})
	query := `SELECT m.digest, m.media_type, m.artifact_type, m.size, m.annotations, m.held, m.created_at` + where
	rows, err := db.read.QueryContext(ctx, db.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("list referrers: %w", err)
	}
	defer rows.Close()
	out := []Manifest{}
	for rows.Next() {
		var m Manifest
		var dg string
		var ann sql.NullString
		var held int
		var created int64
		if err := rows.Scan(&dg, &m.MediaType, &m.ArtifactType, &m.Size, &ann, &held, &created); err != nil {
			return nil, fmt.Errorf("scan referrer: %w", err)
		}
		m.Digest, m.Held, m.CreatedAt = digest.Digest(dg), held == 1, fromMicros(created)
		if ann.Valid {
			if err := json.Unmarshal([]byte(ann.String), &m.Annotations); err != nil {
				return nil, fmt.Errorf("referrer %s annotations: %w", dg, err)
			}
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// ReferrerPager reads referrers a page at a time (Manifests).
type ReferrerPager interface {
	ReferrersAfter(ctx context.Context, repo string, d digest.Digest, artifactType string, after ReferrerKey, n int) ([]Manifest, error)
}

// referrersBatch is how many referrers EachReferrer reads at a time: few,
// for each one's annotations may be up to a manifest's size, and whoever
// may push may attach thousands.
const referrersBatch = 16

// EachReferrer calls fn with the referrers of d after a place in the
// listing, oldest first, read a few at a time, until fn says to stop or
// none is left: no caller holds more of them in memory than it keeps.
func EachReferrer(ctx context.Context, p ReferrerPager, repo string, d digest.Digest, artifactType string, after ReferrerKey,
	fn func(Manifest) (more bool, err error)) error {
	for {
		refs, err := p.ReferrersAfter(ctx, repo, d, artifactType, after, referrersBatch)
		if err != nil {
			return err
		}
		for _, m := range refs {
			after = m.ReferrerKey()
			if more, err := fn(m); err != nil || !more {
				return err
			}
		}
		if len(refs) < referrersBatch {
			return nil
		}
	}
}
