package meta

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestStaleLinksPlan: with the cap on when a link was first made, SQLite
// still reads the links' table once per StaleLinks (the two conditions
// are read on the same row, not a second pass or a union), finds each
// link's references by manifest_references_ref, and reads the upload
// sessions once per statement, not per link; CollectLinks' delete finds
// its link by the primary key.
func TestStaleLinksPlan(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, t.TempDir()+"/meta.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	p := queryPlan(t, db, staleLinksQuery(), staleLinkArgs(now, now, db.now(), 500)...)
	reads := 0
	for _, step := range strings.Split(p, "\n") {
		if strings.HasPrefix(step, "SCAN rb") || strings.HasPrefix(step, "SEARCH rb") {
			reads++
		}
	}
	if reads != 1 || !strings.Contains(p, "SEARCH x USING COVERING INDEX manifest_references_ref") ||
		!strings.Contains(p, "LIST SUBQUERY") || strings.Contains(p, "CORRELATED LIST SUBQUERY") {
		t.Errorf("plan of StaleLinks:\n%s\nwant one read of repository_blobs, references by manifest_references_ref, uploads read once", p)
	}
	p = queryPlan(t, db, collectLinkStmt(), append([]any{1, "sha256:x"}, staleLinkArgs(now, now, db.now())...)...)
	if !strings.Contains(p, "SEARCH rb USING INDEX sqlite_autoindex_repository_blobs_1 (repository_id=? AND digest=?)") {
		t.Errorf("plan of CollectLinks' delete:\n%s\nwant a search of the primary key", p)
	}
}
