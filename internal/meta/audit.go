package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// RepositoryAuditLog returns up to n audit entries of one repository
// before id "before" (0: newest), newest first: those of the repository
// that now holds the name, not of an earlier one deleted under it (their
// entries stay in the whole log, AuditLog). It returns none for a
// repository that does not exist.
func (db Access) RepositoryAuditLog(ctx context.Context, repo string, before int64, n int) ([]AuditEntry, error) {
	ns, _, _ := strings.Cut(repo, "/")
	return db.auditLog(ctx, auditQuery{namespace: ns, repo: repo, before: before, n: n, current: true})
}

// NamespaceAuditLog returns up to n audit entries of one namespace (a user
// or an organization) before id "before" (0: newest), newest first: those
// recorded since the namespace that now holds the name was created, so
// that whoever creates a name after its deletion does not read the log of
// the one deleted (AuditLog, the superusers' view, keeps it). It returns
// none for a namespace that does not exist.
func (db Access) NamespaceAuditLog(ctx context.Context, namespace string, before int64, n int) ([]AuditEntry, error) {
	return db.auditLog(ctx, auditQuery{namespace: namespace, before: before, n: n, current: true})
}

// AppendAudit records an audit entry.
func (db Access) AppendAudit(ctx context.Context, e AuditEntry) error {
	if e.Metadata == nil {
		e.Metadata = json.RawMessage("{}")
	}
	_, err := db.write.ExecContext(ctx, db.q(`INSERT INTO audit_log (kind, actor, ip, namespace, repository, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		e.Kind, e.Actor, e.IP, e.Namespace, e.Repository, string(e.Metadata), db.now())
	if err != nil {
		return fmt.Errorf("append audit entry: %w", err)
	}
	return nil
}

// AuditLog returns up to n entries before id "before" (0: newest), newest
// first, optionally of one namespace: every entry recorded under the name,
// including those of namespaces and repositories deleted since (the
// superusers' view; NamespaceAuditLog is a namespace's own).
func (db Access) AuditLog(ctx context.Context, namespace string, before int64, n int) ([]AuditEntry, error) {
	return db.auditLog(ctx, auditQuery{namespace: namespace, before: before, n: n})
}
