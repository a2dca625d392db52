package meta

import (
	"strings"
	"testing"
)

// TestFairClaimPlan: SQLite plans each of the claim's three searches on
// jobs_ready (the fair keys' turns must not make it walk the jobs held
// behind their ordering key), the fair keys at or over their share on
// jobs_fair (the queue's running jobs, not its backlog), and the update
// itself as a lookup of one row.
func TestFairClaimPlan(t *testing.T) {
	db := backlogDB(t, Job{Queue: "q", OrderingKey: "busy", FairKey: "acme"})
	q := db.claimReadyStatement()
	args := []any{"e", 1, "w", 1, "q", 1, "q", 1, 1, "q", 1, "q", 1, 1, "q", 1, 1}
	if n := strings.Count(q, "?"); n != len(args) {
		t.Fatalf("the claim has %d placeholders, the test %d arguments", n, len(args))
	}
	plan := queryPlan(t, db, q, args...)
	if n := strings.Count(plan, "SEARCH j USING INDEX jobs_ready"); n != 3 {
		t.Errorf("%d searches of jobs_ready, want 3:\n%s", n, plan)
	}
	if n := strings.Count(plan, "USING COVERING INDEX jobs_fair") + strings.Count(plan, "USING INDEX jobs_fair"); n != 2 {
		t.Errorf("%d searches of jobs_fair, want 2:\n%s", n, plan)
	}
	if !strings.Contains(plan, "SEARCH jobs USING INTEGER PRIMARY KEY") {
		t.Errorf("the update is not a lookup of one row:\n%s", plan)
	}
}
