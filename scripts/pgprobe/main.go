// Command pgprobe reports whether a PostgreSQL DSN accepts a connection
// and a query: scripts/test runs the store suite on PostgreSQL only when
// it does. A server that merely listens (a distribution's PostgreSQL,
// asking for a password, with no database "test") would fail every
// PostgreSQL test instead.
//
// Usage: go run ./scripts/pgprobe DSN
//
// It exits 0 when `SELECT 1` answers, 1 (saying why on standard error)
// when it does not within 10 seconds, 2 on a usage error.
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run ./scripts/pgprobe DSN")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := probe(ctx, os.Args[1])
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgprobe:", err)
		os.Exit(1)
	}
}

// probe connects to dsn and runs SELECT 1.
func probe(ctx context.Context, dsn string) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer db.Close()
	var one int
	if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("SELECT 1: %w", err)
	}
	if one != 1 {
		return errors.New("SELECT 1 did not answer 1")
	}
	return nil
}
