package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// RepositoryAuditLog returns up to n audit entries of one repository
// before id "before" (0: newest), newest first.
func (db Access) RepositoryAuditLog(ctx context.Context, repo string, before int64, n int) ([]AuditEntry, error) {
	ns, _, _ := strings.Cut(repo, "/")
	return db.auditLog(ctx, ns, repo, before, n)
}

// AppendAudit records an audit entry.
func (db Access) AppendAudit(ctx context.Context, e AuditEntry) error {
	if e.Metadata == nil {
		e.Metadata = json.RawMessage("{}")
	}
	_, err := db.write.ExecContext(ctx, db.q(`INSERT INTO audit_log (kind, actor, ip, namespace, repository, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		e.Kind, e.Actor, e.IP, e.Namespace, e.Repository, string(e.Metadata), now())
	if err != nil {
		return fmt.Errorf("append audit entry: %w", err)
	}
	return nil
}

// AuditLog returns up to n entries before id "before" (0: newest), newest
// first, optionally of one namespace.
func (db Access) AuditLog(ctx context.Context, namespace string, before int64, n int) ([]AuditEntry, error) {
	return db.auditLog(ctx, namespace, "", before, n)
}
