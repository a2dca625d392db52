package meta

import (
	"context"
	"fmt"
)

// OrgSummary is an organization with the users of its owners team.
type OrgSummary struct {
	Name   string
	Email  string
	Owners []string
}

// Organizations lists every organization in name order, with its owners
// (for `berth admin org list`).
func (db *DB) Organizations(ctx context.Context) ([]OrgSummary, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT n.name, n.email, COALESCE(u.username, '') FROM namespaces n
		LEFT JOIN teams t ON t.namespace_id = n.id AND t.name = ?
		LEFT JOIN team_members m ON m.team_id = t.id
		LEFT JOIN users u ON u.id = m.user_id
		WHERE n.kind = ? ORDER BY n.name, u.username`), OwnersTeam, NamespaceOrg)
	if err != nil {
		return nil, fmt.Errorf("list organizations: %w", err)
	}
	defer rows.Close()
	out := []OrgSummary{}
	for rows.Next() {
		var name, email, owner string
		if err := rows.Scan(&name, &email, &owner); err != nil {
			return nil, fmt.Errorf("list organizations: %w", err)
		}
		if len(out) == 0 || out[len(out)-1].Name != name {
			out = append(out, OrgSummary{Name: name, Email: email, Owners: []string{}})
		}
		if owner != "" {
			last := &out[len(out)-1]
			last.Owners = append(last.Owners, owner)
		}
	}
	return out, rows.Err()
}
