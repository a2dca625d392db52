package meta

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/oci"
)

// TagRow is a tag as the web UI's tags table shows it.
type TagRow struct {
	TagInfo
	// Platforms are os/arch[/variant] of an index's children (the first
	// maxPlatforms of them), or of an image the base-image graph indexed.
	Platforms []string
	// MorePlatforms counts the index's platforms Platforms leaves out.
	MorePlatforms int
	// Scanned is true when the image (or a child of the index) has a scan
	// report; Vulns counts distinct vulnerabilities by severity.
	Scanned bool
	Vulns   map[string]int
	// Signed is true when a signature names the manifest: a cosign
	// sha256-<hex>.sig tag or a signature referrer.
	Signed bool
	// Base is the immediate base image ("repo:tag", or "repo@digest"
	// when no tag named it) and BaseStale whether that tag has moved on.
	Base      string
	BaseStale bool
	// PlatformBases are the bases of an index's platforms, in platform
	// order (Base is the first's; at most maxPlatforms); one entry for a
	// single image.
	PlatformBases []PlatformBase
	// Aliases are the other tags on the same manifest (at most
	// maxAliases, by name).
	Aliases []string
	// Promotion is the state of the tag's latest gate candidate.
	Promotion string
	// Immutable is why the tag may not be moved or deleted ("": it may).
	Immutable string
}

// PlatformBase is the immediate base of one platform of an image.
type PlatformBase struct {
	Platform, Base string
	// Repository is the base's repository (who may see it is the
	// caller's to decide).
	Repository string
	Stale      bool
}

// maxAliases caps the aliases a tag row lists.
const maxAliases = 10

// maxPlatforms caps the platforms (and platform bases) a tag row lists:
// an index may have thousands of entries, and a page repeats them on
// every row that names it.
const maxPlatforms = 16

// maxTagFilter is the longest TagRowQuery.Filter that may match: a
// sha512 digest (a tag is at most oci.MaxTagLength, 128).
const maxTagFilter = len("sha512:") + 128

// TagRowQuery selects the tags of TagRows.
type TagRowQuery struct {
	Filter  string // a substring of the tag name, any case, or a digest prefix ("sha256:…", "sha512:…"); longer than a digest: none
	Sort    string // SortPushed (default: latest first), SortName, SortSize (largest first)
	Reverse bool
	Offset  int
	Limit   int
}

// TagRows returns a page of a repository's tags with their summaries and
// the number of tags the filter matches, or ErrRepositoryNotFound. It
// costs thirteen indexed queries whatever the number of tags: the
// repository, the count, the page, then one query per summary over the
// page's digests (an index's content is read and decoded once per page,
// however many of its tags the page shows) and one of the repository's
// immutability policies.
func (db Manifests) TagRows(ctx context.Context, repo string, q TagRowQuery) ([]TagRow, int, error) {
	var repoID int64
	if err := db.read.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), repo).Scan(&repoID); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, 0, ErrRepositoryNotFound
		}
		return nil, 0, fmt.Errorf("look up repository: %w", err)
	}
	if len(q.Filter) > maxTagFilter {
		// No tag or digest is that long (and its LIKE pattern could pass
		// SQLite's limit of 50,000 bytes).
		return []TagRow{}, 0, nil
	}
	// An expired tag is gone (liveTag), as for a pull.
	where, args := " WHERE t.repository_id = ? AND "+liveTag("t"), []any{repoID, db.now()}
	if f := strings.ToLower(q.Filter); strings.HasPrefix(f, "sha256:") || strings.HasPrefix(f, "sha512:") {
		where += ` AND t.manifest_digest LIKE CAST(? AS TEXT) ESCAPE '\'`
		args = append(args, likePrefix(f))
	} else if f != "" {
		where += ` AND lower(t.name) LIKE CAST(? AS TEXT) ESCAPE '\'`
		args = append(args, "%"+likePrefix(f))
	}
	var total int
	if err := db.read.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM tags t"+where), args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count tags: %w", err)
	}
	order := map[string]string{SortName: "t.name", SortSize: "bytes DESC, t.name", SortPushed: "t.updated_at DESC, t.name"}[q.Sort]
	if order == "" {
		order = "t.updated_at DESC, t.name"
	}
	if q.Reverse {
		order = map[string]string{"t.name": "t.name DESC", "bytes DESC, t.name": "bytes, t.name DESC", "t.updated_at DESC, t.name": "t.updated_at, t.name DESC"}[order]
	}
	// The size of the page's manifests; sorted by size, of every manifest
	// of the repository once (not once per tag).
	size, join := `COALESCE((SELECT SUM(b.size) FROM manifest_references mr JOIN blobs b ON b.digest = mr.ref_digest
			WHERE mr.repository_id = t.repository_id AND mr.manifest_digest = t.manifest_digest AND mr.is_manifest = 0), 0)`, ""
	var pageArgs []any
	if q.Sort == SortSize {
		size, join = "COALESCE(sz.bytes, 0)", ` LEFT JOIN (SELECT mr.manifest_digest AS d, SUM(b.size) AS bytes FROM manifest_references mr
			JOIN blobs b ON b.digest = mr.ref_digest WHERE mr.repository_id = ? AND mr.is_manifest = 0 GROUP BY mr.manifest_digest) sz
			ON sz.d = t.manifest_digest`
		pageArgs = append(pageArgs, repoID)
	}
	query := `SELECT t.name, t.manifest_digest, m.media_type, t.updated_at, t.expires_at, ` + size + ` AS bytes
		FROM tags t JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest` + join + where +
		" ORDER BY " + order + " LIMIT CAST(? AS BIGINT) OFFSET CAST(? AS BIGINT)"
	pageArgs = append(pageArgs, args...)
	rows, err := db.read.QueryContext(ctx, db.q(query), append(pageArgs, q.Limit, q.Offset)...)
	if err != nil {
		return nil, 0, fmt.Errorf("list tags: %w", err)
	}
	defer rows.Close()
	out := []TagRow{}
	for rows.Next() {
		var tr TagRow
		var dg string
		var updated, expires int64
		if err := rows.Scan(&tr.Name, &dg, &tr.MediaType, &updated, &expires, &tr.Size); err != nil {
			return nil, 0, err
		}
		tr.Digest, tr.UpdatedAt, tr.ExpiresAt = digest.Digest(dg), fromMicros(updated), timeOrZero(expires)
		out = append(out, tr)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	rows.Close()
	if len(out) > 0 {
		if err := db.tagSummaries(ctx, repoID, out); err != nil {
			return nil, 0, err
		}
	}
	return out, total, nil
}

// indexPlatforms lists the platforms of an index's children, the first
// maxPlatforms of them, and counts the others. It reads the entries one
// at a time rather than decoding the whole index.
func indexPlatforms(content []byte) (shown []string, more int) {
	dec := json.NewDecoder(bytes.NewReader(content))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, 0
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return shown, more
		}
		// encoding/json's own match of a field (the ingest refused keys
		// that differ only in case).
		if key, _ := k.(string); !strings.EqualFold(key, "manifests") {
			if skipValue(dec) != nil {
				return shown, more
			}
			continue
		}
		if t, err := dec.Token(); err != nil || t != json.Delim('[') {
			return shown, more
		}
		for dec.More() {
			var c struct {
				Platform *oci.Platform `json:"platform"`
			}
			if dec.Decode(&c) != nil {
				return shown, more
			}
			switch p := c.Platform; {
			case p == nil || p.OS == "unknown":
			case len(shown) < maxPlatforms:
				shown = append(shown, platformString(p.OS, p.Architecture, p.Variant))
			default:
				more++
			}
		}
		return shown, more
	}
	return shown, more
}

// skipValue reads past the decoder's next value without keeping it.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

func platformString(os, arch, variant string) string {
	s := clip(os) + "/" + clip(arch)
	if variant != "" {
		s += "/" + clip(variant)
	}
	return s
}

// clip cuts a platform field stored before the ingest bounded them
// (oci.MaxPlatformField) to that bound.
func clip(s string) string {
	if len(s) <= oci.MaxPlatformField {
		return s
	}
	return strings.ToValidUTF8(s[:oci.MaxPlatformField], "") + "…"
}

// tagSummaries fills the summaries of a page of tags: nine queries over
// the page's digests and names, and one of the immutability policies.
func (db Manifests) tagSummaries(ctx context.Context, repoID int64, rows []TagRow) error {
	byDigest := map[string][]int{}
	var digests, names, sigTags []any
	for i, r := range rows {
		d := r.Digest.String()
		if _, ok := byDigest[d]; !ok {
			digests = append(digests, d)
			sigTags = append(sigTags, strings.Replace(d, ":", "-", 1)+".sig")
		}
		byDigest[d] = append(byDigest[d], i)
		names = append(names, r.Name)
	}
	each := func(d string, f func(r *TagRow)) {
		for _, i := range byDigest[d] {
			f(&rows[i])
		}
	}
	// The page's manifests and, for an index, its children: x(d, c).
	marks := placeholders(len(digests))
	family := `(SELECT manifest_digest AS d, ref_digest AS c FROM manifest_references WHERE repository_id = ? AND is_manifest = 1 AND manifest_digest IN (` + marks + `)
		UNION SELECT digest, digest FROM manifests WHERE repository_id = ? AND digest IN (` + marks + `)) x`
	famArgs := append(append(append([]any{repoID}, digests...), repoID), digests...)
	queries := []summaryQuery{
		{"SELECT x.d, v.severity, COUNT(DISTINCT v.vuln_id) FROM " + family + " JOIN manifest_vulns v ON v.digest = x.c GROUP BY x.d, v.severity", famArgs,
			func(s *sql.Rows) error {
				var d, sev string
				var n int
				if err := s.Scan(&d, &sev, &n); err != nil {
					return err
				}
				each(d, func(r *TagRow) {
					if r.Vulns == nil {
						r.Vulns = map[string]int{}
					}
					r.Vulns[sev] += n
				})
				return nil
			}},
		{"SELECT DISTINCT x.d FROM " + family + " JOIN manifest_scans s ON s.digest = x.c AND s.status = '" + ScanScanned + "'", famArgs,
			func(s *sql.Rows) error {
				var d string
				if err := s.Scan(&d); err != nil {
					return err
				}
				each(d, func(r *TagRow) { r.Scanned = true })
				return nil
			}},
		{`SELECT subject FROM manifests WHERE repository_id = ? AND subject IN (` + marks + `)
			AND (artifact_type LIKE '%sig%' OR artifact_type LIKE '%sigstore.bundle%')
			UNION SELECT name FROM tags WHERE repository_id = ? AND ` + liveTag("") + ` AND name IN (` + marks + `)`,
			append(append(append([]any{repoID}, digests...), repoID, db.now()), sigTags...),
			func(s *sql.Rows) error {
				var v string
				if err := s.Scan(&v); err != nil {
					return err
				}
				if d, ok := strings.CutSuffix(v, ".sig"); ok {
					v = strings.Replace(d, "-", ":", 1)
				}
				each(v, func(r *TagRow) { r.Signed = true })
				return nil
			}},
		{`SELECT x.d, COALESCE(gi.platform, ''), r.name, gb.base_tag, gb.base_top, gb.base_digest, COALESCE(t.manifest_digest, '') FROM ` + family + `
			JOIN graph_bases gb ON gb.repository_id = ? AND gb.digest = x.c AND gb.level = 1
			JOIN repositories r ON r.id = gb.base_repository_id
			LEFT JOIN tags t ON t.repository_id = gb.base_repository_id AND t.name = gb.base_tag
			LEFT JOIN graph_images gi ON gi.repository_id = ? AND gi.digest = x.c
			ORDER BY x.d, COALESCE(gi.platform, ''), r.name, gb.base_tag`, append(famArgs, repoID, repoID),
			func(s *sql.Rows) error {
				var d, platform, repo, tag, top, base, current string
				if err := s.Scan(&d, &platform, &repo, &tag, &top, &base, &current); err != nil {
					return err
				}
				pb := PlatformBase{Platform: platform, Base: repo + "@" + base, Repository: repo}
				if tag != "" {
					pb.Base, pb.Stale = repo+":"+tag, current != top
				}
				each(d, func(r *TagRow) {
					if n := len(r.PlatformBases); (n > 0 && r.PlatformBases[n-1].Platform == platform) || n == maxPlatforms {
						return // one base per platform (the first by name), maxPlatforms at most
					}
					r.PlatformBases = append(r.PlatformBases, pb)
					if r.Base == "" {
						r.Base, r.BaseStale = pb.Base, pb.Stale
					}
				})
				return nil
			}},
		{`SELECT manifest_digest, name FROM (SELECT manifest_digest, name, ROW_NUMBER() OVER (PARTITION BY manifest_digest ORDER BY name) AS n
			FROM tags WHERE repository_id = ? AND ` + liveTag("") + ` AND manifest_digest IN (` + marks + `)) a WHERE n <= ` + fmt.Sprint(maxAliases+1) + ` ORDER BY manifest_digest, name`,
			append([]any{repoID, db.now()}, digests...),
			func(s *sql.Rows) error {
				var d, name string
				if err := s.Scan(&d, &name); err != nil {
					return err
				}
				each(d, func(r *TagRow) {
					if name != r.Name && len(r.Aliases) < maxAliases {
						r.Aliases = append(r.Aliases, name)
					}
				})
				return nil
			}},
		// Each distinct index of the page once, however many of its tags
		// the page shows.
		{"SELECT digest, content FROM manifests WHERE repository_id = ? AND media_type IN (?, ?) AND digest IN (" + marks + ")",
			append([]any{repoID, oci.MediaTypeImageIndex, oci.MediaTypeDockerList}, digests...),
			func(s *sql.Rows) error {
				var d string
				var content []byte
				if err := s.Scan(&d, &content); err != nil {
					return err
				}
				shown, more := indexPlatforms(content)
				each(d, func(r *TagRow) { r.Platforms, r.MorePlatforms = slices.Clone(shown), more })
				return nil
			}},
		{"SELECT digest, platform FROM graph_images WHERE repository_id = ? AND platform <> '' AND digest IN (" + marks + ")",
			append([]any{repoID}, digests...),
			func(s *sql.Rows) error {
				var d, p string
				if err := s.Scan(&d, &p); err != nil {
					return err
				}
				each(d, func(r *TagRow) {
					if len(r.Platforms) == 0 {
						r.Platforms = []string{clip(p)}
					}
				})
				return nil
			}},
	}
	tagIdx := map[string]int{}
	for i, r := range rows {
		tagIdx[r.Name] = i
	}
	nameMarks := placeholders(len(names))
	queries = append(queries, summaryQuery{"SELECT tag, state FROM gate_candidates WHERE repository_id = ? AND tag IN (" + nameMarks + ") ORDER BY id", append([]any{repoID}, names...),
		func(s *sql.Rows) error {
			var tag, state string
			if err := s.Scan(&tag, &state); err != nil {
				return err
			}
			rows[tagIdx[tag]].Promotion = state
			return nil
		}}, summaryQuery{"SELECT name, reason FROM immutable_tags WHERE repository_id = ? AND name IN (" + nameMarks + ")", append([]any{repoID}, names...),
		func(s *sql.Rows) error {
			var tag, reason string
			if err := s.Scan(&tag, &reason); err != nil {
				return err
			}
			rows[tagIdx[tag]].Immutable = reason
			return nil
		}})
	for _, qu := range queries {
		if err := db.each(ctx, qu.sql, qu.args, qu.row); err != nil {
			return err
		}
	}
	// The immutability policies (the organization's and the repository's)
	// once, as a move or an expiration reads them (firstImmutable): a tag
	// they cover is immutable as one immutable by name is.
	ps, err := db.repoPolicies(ctx, db.read, PolicyImmutability, repoID)
	if err != nil {
		return err
	}
	for i := range rows {
		sort.Strings(rows[i].Platforms)
		var ie *ImmutableTagError
		if rows[i].Immutable == "" && errors.As(immutableByPolicy(ps, rows[i].Name), &ie) {
			rows[i].Immutable = ie.Reason
		}
	}
	return nil
}

// summaryQuery is one query of tagSummaries and what it does with a row.
type summaryQuery struct {
	sql  string
	args []any
	row  func(s *sql.Rows) error
}

// each runs a read query and calls row for every row.
func (db Manifests) each(ctx context.Context, query string, args []any, row func(*sql.Rows) error) error {
	rows, err := db.read.QueryContext(ctx, db.q(query), args...)
	if err != nil {
		return fmt.Errorf("tag summaries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
