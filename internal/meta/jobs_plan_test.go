package meta

import (
	"context"
	"database/sql"
	"strings"
	"testing"
)

// TestClaimWalksReadyIndex: SQLite plans the claim's search for a ready
// job (the poll's read and the claim's subquery) on jobs_ready, the index
// that leaves out the jobs behind an older job of their key; a plan on
// another index walks a key's whole backlog at every poll.
func TestClaimWalksReadyIndex(t *testing.T) {
	db := backlogDB(t, Job{Queue: "q", OrderingKey: "busy"})
	for _, q := range []string{claimPoll, "SELECT j.id FROM jobs j WHERE " + readyJob + " ORDER BY j.id LIMIT 1"} {
		if p := queryPlan(t, db, q, "q", 1, 1); !strings.Contains(p, "SEARCH j USING INDEX jobs_ready") {
			t.Errorf("plan of\n%s\n=\n%s\nwant a search of jobs_ready", q, p)
		}
	}
}

// queryPlan is SQLite's EXPLAIN QUERY PLAN of a query, one step a line.
func queryPlan(t *testing.T, db *DB, query string, args ...any) string {
	t.Helper()
	rows, err := db.read.QueryContext(context.Background(), "EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var steps []string
	for rows.Next() {
		var id, parent, unused int
		var detail sql.NullString
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		steps = append(steps, detail.String)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(steps, "\n")
}

// backlogDB is a SQLite store holding 50 jobs like j, one key's backlog.
func backlogDB(t *testing.T, j Job) *DB {
	t.Helper()
	ctx := context.Background()
	db, err := Open(ctx, t.TempDir()+"/meta.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for range 50 {
		if _, err := db.Jobs().EnqueueJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	return db
}
