package main

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/gc"
	"github.com/berth-dev/berth/internal/server"
	"github.com/berth-dev/berth/internal/wire"
)

// gcCmd runs one garbage-collection pass now (the pass `berth serve` runs
// every gc.interval).
func gcCmd(st *settings) *cobra.Command {
	var dry, asJSON bool
	cmd := &cobra.Command{
		Use:   "gc [--dry-run]",
		Short: "Collect unreferenced manifests and blobs, expire abandoned uploads and prune old bookkeeping now",
		Long: "Runs one pass of the garbage collection `berth serve` runs every gc.interval and prints what it\n" +
			"removed (or, with --dry-run, would remove). It is safe while servers run.\n\n" +
			"It first prints on standard error the database (without its password) and the storage it works on\n" +
			"(with --json, the report's database and storage). It refuses a database that does not exist, and\n" +
			"does not sweep storage's blobs when the database records none of them.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := st.load(cmd)
			if err != nil {
				return err
			}
			db, err := openStore(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer db.Close()
			driver, err := server.OpenStorage(cmd.Context(), cfg)
			if err != nil {
				return fmt.Errorf("storage: %w", err)
			}
			// What it works on, before it removes anything: a pass run
			// against the wrong database or storage is seen at once.
			// With --json the report carries it, standard output staying
			// one document.
			if !asJSON {
				fmt.Fprintf(cmd.ErrOrStderr(), "database: %s\nstorage: %s\n", cfg.DatabaseLocation(), cfg.StorageLocation())
			}
			opts := server.GCOptions(cfg, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn})))
			opts.Interval = 0 // one pass, not one of a series: the blob sweep lists the whole store
			rep, err := gc.New(wire.GCStores(db, cfg.GC.TimeMachine), driver, opts).Pass(cmd.Context(), dry)
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				doc := struct {
					Database string `json:"database"`
					Storage  string `json:"storage"`
					gc.Report
				}{cfg.DatabaseLocation(), cfg.StorageLocation(), rep}
				if jerr := enc.Encode(doc); jerr != nil {
					return jerr
				}
				return err
			}
			verb := "removed"
			if dry {
				verb = "would remove"
			}
			if dry {
				fmt.Fprintln(out, "tag expiry and auto-prune policies: not run in a dry run (they delete tags a pass finds expired or pruned; run without --dry-run)")
			} else {
				fmt.Fprintf(out, "removed: %d expired tags, %d tags auto-prune policies deleted (%d expiry notices sent)\n", rep.ExpiredTags, rep.PrunedTags, rep.ExpiryNotices)
			}
			fmt.Fprintf(out, "%s: %d manifests, %d blob links, %d blobs (%d bytes) unreferenced for over %s\n", verb,
				rep.Collected.Manifests, rep.Collected.Links, rep.Collected.Blobs, rep.Collected.Bytes, cfg.GC.Delay)
			fmt.Fprintf(out, "%s: %d expired uploads (%d bytes), %d upload leftovers (%d bytes)\n", verb, rep.Uploads, rep.UploadBytes, rep.Leftovers, rep.LeftoverBytes)
			fmt.Fprintf(out, "%s: %d unrecorded blobs (%d bytes) a crash left in storage\n", verb, rep.BlobLeftovers, rep.BlobLeftoverBytes)
			fmt.Fprintf(out, "%s: %d events, %d jobs, %d notification attempts, %d audit entries past their retention, %d ended failed-login counters\n",
				verb, rep.Pruned.Events, rep.Pruned.Jobs, rep.Pruned.Attempts, rep.Pruned.Audit, rep.Pruned.Logins)
			return err
		},
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "report what would be removed, remove nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}
