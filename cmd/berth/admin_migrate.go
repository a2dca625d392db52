package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/meta"
)

// migrateCmd applies the metadata database's pending migrations and exits:
// a deployment can run it as a step of its own before it rolls out the
// new binary (docs/deployment.md). Every replica also migrates at start,
// so the command is never required; on PostgreSQL the migrations run in
// one transaction under an advisory lock, so any number of replicas and
// migrate commands may start at once: one applies them, the others wait
// and find nothing left to do.
func migrateCmd(open func(*cobra.Command) (*meta.DB, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply the metadata database's pending migrations and exit",
		Long: `Apply the metadata database's pending migrations and exit.

berth serve migrates at start too; this command lets a deployment do it as
a step of its own (a Kubernetes Job, a CI stage) before new replicas start.
On PostgreSQL the migrations run in one transaction under an advisory lock:
replicas and migrate commands started together apply them once. A replica
of an older version reports not ready (/readyz) once the schema has moved
past its own. On PostgreSQL, given a secretKey (or a key file in the data
directory) other than the one the database recorded, it refuses with
"secret key mismatch" before it migrates, as berth serve does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := open(cmd)
			if err != nil {
				return fmt.Errorf("migrate: %w", err)
			}
			defer db.Close()
			if err := db.CheckSchema(cmd.Context()); err != nil {
				return fmt.Errorf("migrate: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "the %s database is at this binary's schema version\n", db.Dialect())
			return nil
		},
	}
}
