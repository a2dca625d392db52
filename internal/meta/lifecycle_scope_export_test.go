package meta

import (
	"context"
	"database/sql"

	"github.com/google/uuid"
)

// InsertTagPolicyAt stores p under the namespace and repository ids
// given (repoID nil: the organization's policy), as CreateTagPolicy does
// once policyScope found them (tests: a scope deleted between the lookup
// and the insert).
func (db Policies) InsertTagPolicyAt(ctx context.Context, p TagPolicy, nsID int64, repoID any) error {
	if p.UUID == "" {
		p.UUID = uuid.NewString()
	}
	return db.tx(ctx, func(tx *sql.Tx) error { return db.insertTagPolicy(ctx, tx, p, nsID, repoID) })
}

// PolicyScopeIDs returns the ids policyScope finds for a namespace and a
// repository (empty: nil).
func (db Policies) PolicyScopeIDs(ctx context.Context, namespace, repo string) (nsID int64, repoID any, err error) {
	err = db.tx(ctx, func(tx *sql.Tx) error {
		nsID, repoID, err = db.policyScope(ctx, tx, namespace, repo)
		return err
	})
	return nsID, repoID, err
}
