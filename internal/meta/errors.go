package meta

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/opencontainers/go-digest"
	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// errRetry is returned by a transaction's body when a concurrent change
// it could not lock made it start over (a row it found vanished before it
// could be locked); db.tx runs the transaction again.
var errRetry = errors.New("a concurrent change: retry the transaction")

// ErrInvalidText is returned (wrapped) when a value cannot be stored as
// text: a NUL byte or invalid UTF-8, which PostgreSQL refuses.
var ErrInvalidText = errors.New("text holds a NUL byte or invalid UTF-8")

// ValidText reports whether s can be stored in a text column of either
// database: valid UTF-8 without NUL bytes.
func ValidText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// PostgreSQL error classes that a concurrent transaction, not the request,
// caused, and that running the transaction again resolves.
const (
	pgSerializationFailure = "40001"
	pgDeadlockDetected     = "40P01"
	pgLockNotAvailable     = "55P03"
	pgCharNotInRepertoire  = "22021"
	pgUntranslatableChar   = "22P05"
)

// pgDiskFull is PostgreSQL's disk_full.
const pgDiskFull = "53100"

// pgForeignKeyViolation is PostgreSQL's foreign_key_violation.
const pgForeignKeyViolation = "23503"

// StorageFull reports whether err is a refusal for want of space: a file
// system's ENOSPC or EDQUOT, SQLite's SQLITE_FULL or PostgreSQL's
// disk_full. Nothing was stored; the same request succeeds once space is
// freed, so callers answer it as such, not as an internal error.
func StorageFull(err error) bool {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	var se *msqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL {
		return true
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == pgDiskFull
}

// retryable reports whether a failed transaction lost a race and may be
// run again.
func retryable(err error) bool {
	if errors.Is(err, errRetry) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case pgSerializationFailure, pgDeadlockDetected, pgLockNotAvailable:
			return true
		}
	}
	return false
}

// foreignKeyViolation reports the refusal of a change that a foreign key
// forbids: PostgreSQL's foreign_key_violation, or SQLite's
// SQLITE_CONSTRAINT_FOREIGNKEY (its extended result code, 787).
func foreignKeyViolation(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == pgForeignKeyViolation
	}
	var se *msqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// invalidText maps PostgreSQL's refusal of a NUL byte or invalid UTF-8 in
// a text value to ErrInvalidText, so callers can answer 400 rather than
// 500 if such input slipped past their own validation.
func invalidText(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == pgCharNotInRepertoire || pe.Code == pgUntranslatableChar) {
		return fmt.Errorf("%w: %w", ErrInvalidText, err)
	}
	return err
}

// InUseError is returned when a delete would remove something that
// manifests of the repository still reference.
type InUseError struct {
	What       string          // "blob sha256:..." or "manifest sha256:..."
	References []digest.Digest // the first few manifests that reference it
	Count      int             // how many manifests reference it
}

func (e *InUseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s is referenced by ", e.What)
	if e.Count == 1 {
		b.WriteString("manifest ")
	} else {
		fmt.Fprintf(&b, "%d manifests: ", e.Count)
	}
	for i, d := range e.References {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.String())
	}
	if e.Count > len(e.References) {
		fmt.Fprintf(&b, " and %d more", e.Count-len(e.References))
	}
	b.WriteString(" in this repository; delete those first")
	return b.String()
}

// ErrExists is returned when a name is already taken.
var ErrExists = errors.New("already exists")

func isUnique(err error) bool {
	s := err.Error()
	return strings.Contains(s, "UNIQUE constraint") || strings.Contains(s, "SQLSTATE 23505") || strings.Contains(s, "duplicate key")
}

// Errors of organization and robot management.
var (
	// ErrNamespaceNotEmpty is returned when deleting a namespace that still
	// has repositories.
	ErrNamespaceNotEmpty = errors.New("namespace still has repositories")
	// ErrLastOwner is returned when a removal would leave an organization's
	// owners team without an enabled user to administer it.
	ErrLastOwner = errors.New("the last owner of an organization cannot be removed")
	// ErrRobotInUse is returned when deleting a robot that a repository
	// mirror writes as.
	ErrRobotInUse = errors.New("robot is used by a repository mirror")
)

// ErrSchemaBehind is returned by Open with NoUpgrade for a database at an
// older schema version than the binary's.
var ErrSchemaBehind = errors.New("the database's schema is older than this binary's")

// isDeadlock reports whether PostgreSQL ended a transaction as deadlocked.
func isDeadlock(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == pgDeadlockDetected
}
