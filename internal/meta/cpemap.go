package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// ScanJobRemap is the scan job kind that matches again the images whose
// content sets' CPEs changed (RemapJob).
const ScanJobRemap = "remap"

// RemapJob is the payload of a ScanJobRemap job: the content sets whose
// CPEs changed; none means every image with content sets.
type RemapJob struct {
	Kind        string   `json:"kind"`
	ContentSets []string `json:"contentSets,omitempty"`
}

// maxRemapSets bounds the content sets a remap job names; a larger change
// (the first import) remaps every image with content sets.
const maxRemapSets = 1000

// ReplaceCPEMapping stores Red Hat's mapping from content sets (repository
// ids such as "rhel-8-for-x86_64-baseos-rpms") to CPEs in place of the one
// stored, in one transaction with the job that matches again the images
// whose content sets changed. It returns the content sets whose CPEs
// changed (added, removed or different). Imports of the mapping and of
// advisories run one at a time (lockVulnData).
func (db VulnDB) ReplaceCPEMapping(ctx context.Context, mapping map[string][]string) ([]string, error) {
	var changed []string
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.lockVulnData(ctx, tx); err != nil {
			return err
		}
		old, err := readCPEMapping(ctx, tx, db.q("SELECT content_set, cpe FROM content_set_cpes"))
		if err != nil {
			return err
		}
		want := normalizeMapping(mapping)
		changed = changed[:0]
		for set, cpes := range want {
			if !slices.Equal(old[set], cpes) {
				changed = append(changed, set)
			}
		}
		for set := range old {
			if _, ok := want[set]; !ok {
				changed = append(changed, set)
			}
		}
		slices.Sort(changed)
		if len(changed) == 0 {
			_, err := tx.ExecContext(ctx, db.q("UPDATE cpe_mapping_source SET checked_at = ? WHERE id = 1"), db.now())
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM content_set_cpes"); err != nil {
			return fmt.Errorf("replace content set mapping: %w", err)
		}
		var rows [][]any
		for _, set := range slices.Sorted(maps.Keys(want)) {
			for _, cpe := range want[set] {
				rows = append(rows, []any{set, cpe})
			}
		}
		if err := db.insertRows(ctx, tx, "content_set_cpes (content_set, cpe)", rows); err != nil {
			return fmt.Errorf("store content set mapping: %w", err)
		}
		ts := db.now()
		_, err = tx.ExecContext(ctx, db.q(`INSERT INTO cpe_mapping_source (id, content_sets, updated_at, checked_at) VALUES (1, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET content_sets = excluded.content_sets, updated_at = excluded.updated_at, checked_at = excluded.checked_at`),
			len(want), ts, ts)
		if err != nil {
			return fmt.Errorf("record content set mapping: %w", err)
		}
		job := RemapJob{Kind: ScanJobRemap}
		if len(changed) <= maxRemapSets {
			job.ContentSets = changed
		}
		payload, _ := json.Marshal(job)
		// The ordering key of re-matches: one writes an image's matches at
		// a time.
		_, err = db.enqueueJob(ctx, tx, Job{Queue: ScanQueue, OrderingKey: "rematch", Payload: payload})
		return err
	})
	return changed, err
}

// normalizeMapping drops empty names and duplicate CPEs and sorts each
// content set's CPEs.
func normalizeMapping(m map[string][]string) map[string][]string {
	out := make(map[string][]string, len(m))
	for set, cpes := range m {
		if set == "" {
			continue
		}
		var cs []string
		for _, c := range cpes {
			if c != "" {
				cs = append(cs, c)
			}
		}
		slices.Sort(cs)
		cs = slices.Compact(cs)
		if len(cs) > 0 {
			out[set] = cs
		}
	}
	return out
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func readCPEMapping(ctx context.Context, q querier, query string, args ...any) (map[string][]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read content set mapping: %w", err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var set, cpe string
		if err := rows.Scan(&set, &cpe); err != nil {
			return nil, fmt.Errorf("read content set mapping: %w", err)
		}
		out[set] = append(out[set], cpe)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read content set mapping: %w", err)
	}
	for _, cs := range out {
		slices.Sort(cs)
	}
	return out, nil
}

// CPEMappingSource is the state of the stored content set mapping.
type CPEMappingSource struct {
	ContentSets int       `json:"content_sets"`
	UpdatedAt   time.Time `json:"updated_at"`
	CheckedAt   time.Time `json:"checked_at"`
}

// CPEMappingState returns the state of the stored mapping; ok is false
// when none was ever imported.
func (db VulnDB) CPEMappingState(ctx context.Context) (CPEMappingSource, bool, error) {
	var s CPEMappingSource
	var updated, checked int64
	err := db.read.QueryRowContext(ctx, "SELECT content_sets, updated_at, checked_at FROM cpe_mapping_source WHERE id = 1").Scan(&s.ContentSets, &updated, &checked)
	if err == sql.ErrNoRows {
		return s, false, nil
	}
	if err != nil {
		return s, false, fmt.Errorf("read content set mapping: %w", err)
	}
	s.UpdatedAt, s.CheckedAt = fromMicros(updated), fromMicros(checked)
	return s, true, nil
}

// cpeMappingSchema is migration 9: Red Hat's mapping from content sets to
// CPEs (repository-to-cpe.json), which names the OSV ecosystems of the
// RPM packages of an image that lists its content sets
// (/root/buildinfo/content_manifests/*.json), and when it was imported
// (one row, id 1).
const cpeMappingSchema = `
CREATE TABLE content_set_cpes (
	content_set TEXT NOT NULL,
	cpe TEXT NOT NULL,
	PRIMARY KEY (content_set, cpe)
);
CREATE TABLE cpe_mapping_source (
	id INTEGER PRIMARY KEY,
	content_sets BIGINT NOT NULL,
	updated_at BIGINT NOT NULL,
	checked_at BIGINT NOT NULL
);
`
