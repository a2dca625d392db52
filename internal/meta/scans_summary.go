package meta

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// ScanSummary is a manifest's scan status and the summary of its report
// (ScanResult.Summary): what the data coverage of a scanned image is
// computed from without reading the report, which holds every package
// (tens of MB for an image of many).
type ScanSummary struct {
	Status string
	// Summary is nil for a report stored before summaries were (schema
	// version 31), or with none.
	Summary []byte
}

// summaryChunk bounds the digests of one ScanSummaries statement.
const summaryChunk = 300

// ScanSummaries returns the scan status and report summary of the
// manifests among digests that were ever queued, by digest, in one
// statement per few hundred digests. It never reads a report.
func (db Scans) ScanSummaries(ctx context.Context, digests []string) (map[string]ScanSummary, error) {
	out := make(map[string]ScanSummary, len(digests))
	for len(digests) > 0 {
		part := digests[:min(summaryChunk, len(digests))]
		digests = digests[len(part):]
		if err := db.readSummaries(ctx, part, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (db Scans) readSummaries(ctx context.Context, digests []string, out map[string]ScanSummary) error {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT digest, status, coverage_summary FROM manifest_scans WHERE digest IN ("+
		placeholders(len(digests))+")"), anySlice(digests)...)
	if err != nil {
		return fmt.Errorf("read scan summaries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d string
		var s ScanSummary
		if err := rows.Scan(&d, &s.Status, &s.Summary); err != nil {
			return fmt.Errorf("read scan summaries: %w", err)
		}
		out[d] = s
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read scan summaries: %w", err)
	}
	return nil
}

// FillScanSummary stores the summary of a scanned manifest's report
// stored without one (before schema version 31), if the scan is still
// the one last stored at updatedAt (ManifestScan's UpdatedAt): a scan
// stored since brought its own. It reports whether it stored it. It is
// derived data: its commit does not wait for the disk.
func (db Scans) FillScanSummary(ctx context.Context, digest string, updatedAt time.Time, summary []byte) (bool, error) {
	if len(summary) == 0 {
		return false, nil
	}
	var n int64
	err := db.tx(LaxCommits(ctx), func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, db.q(`UPDATE manifest_scans SET coverage_summary = ?
			WHERE digest = ? AND status = ? AND coverage_summary IS NULL AND updated_at = ?`), summary, digest, ScanScanned, updatedAt.UnixMicro())
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("store scan summary: %w", err)
	}
	return n == 1, nil
}

// nilIfEmpty is b, or NULL when it is empty.
func nilIfEmpty(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}
