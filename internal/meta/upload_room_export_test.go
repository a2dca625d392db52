package meta

import (
	"context"
	"database/sql"
	"strings"
)

// UploadRoomPlan is the plan of UploadRoom's read for namespace ns, one
// step a line: SQLite's EXPLAIN QUERY PLAN, or PostgreSQL's EXPLAIN with
// sequential scans off (a test's tables are too small for the planner to
// prefer an index otherwise).
func (db *DB) UploadRoomPlan(ctx context.Context, ns string) (string, error) {
	tx, err := db.read.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	explain := "EXPLAIN QUERY PLAN "
	if db.dialect == postgres {
		explain = "EXPLAIN "
		if _, err := tx.ExecContext(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
			return "", err
		}
	}
	rows, err := tx.QueryContext(ctx, explain+db.q(db.uploadRoomQuery()), ns, ns)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", err
	}
	var steps []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return "", err
		}
		steps = append(steps, vals[len(vals)-1].String)
	}
	return strings.Join(steps, "\n"), rows.Err()
}
