package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/scan"
)

// vulndbCmd imports and fetches advisories into the database directly.
func vulndbCmd(open opener) *cobra.Command {
	vulndb := &cobra.Command{Use: "vulndb", Short: "Fetch or import OSV vulnerability data"}
	imp := &cobra.Command{
		Use:   "import PATH...",
		Short: "Import OSV advisories: osv.dev all.zip files, JSON files, or directories of them",
		Long: `Import OSV advisories as osv.dev publishes them: the per-ecosystem all.zip
(https://osv-vulnerabilities.storage.googleapis.com/<Ecosystem>/all.zip),
a directory laid out as <dir>/<Ecosystem>/all.zip, or loose OSV JSON files.
Only records that are new or whose "modified" changed are applied; the
scanner then re-matches exactly the images whose packages they name.
Records that do not parse are reported and skipped. Progress goes to
standard error, one line at a time when it is not a terminal.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			out := cmd.ErrOrStderr()
			start := time.Now()
			p := newProgress(out)
			im := scan.NewImporter(db.VulnDB(), func(s scan.ImportStats) {
				p.Update(fmt.Sprintf("read %d records: %d applied, %d unchanged, %d rejected", s.Read, s.Applied, s.Unchanged, s.Rejected))
			})
			for _, path := range args {
				if err := im.Path(cmd.Context(), path); err != nil {
					p.End()
					return err
				}
			}
			st, err := im.Finish(cmd.Context())
			p.End()
			if err != nil {
				return err
			}
			for _, e := range st.Errors {
				fmt.Fprintf(out, "rejected: %s\n", e)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported %d records in %s: %d applied (%d withdrawn), %d unchanged, %d rejected; ecosystems: %s\n",
				st.Read, time.Since(start).Round(time.Millisecond), st.Applied, st.Withdrawn, st.Unchanged, st.Rejected, strings.Join(st.Ecosystems, ", "))
			if named := len(st.Ecosystems) - len(st.Covered); named > 0 {
				// Matched, but not the ecosystem's data (docs/scanning.md).
				fmt.Fprintf(cmd.OutOrStdout(), "recorded as imported: %s (the others only appear in advisories of several ecosystems: fetch or import their own data)\n",
					strings.Join(st.Covered, ", "))
			}
			if st.ContentSets > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "imported Red Hat's content-set mapping: %d content sets\n", st.ContentSets)
			}
			return nil
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "List the imported ecosystems and when each was last updated",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			srcs, err := db.VulnDB().VulnSources(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ECOSYSTEM\tRECORDS\tUPDATED")
			for _, s := range srcs {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", s.Ecosystem, s.Records, s.UpdatedAt.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	vulndb.AddCommand(imp, status, fetchCmd(open))
	return vulndb
}

// fetchCmd downloads OSV's all.zip files (and Red Hat's content-set
// mapping) and imports them.
func fetchCmd(open opener) *cobra.Command {
	var baseURL, cpeURL string
	var cpeMapping, force bool
	cmd := &cobra.Command{
		Use:   "fetch [ECOSYSTEM...]",
		Short: "Download OSV advisories (and Red Hat's content-set mapping) and import them",
		Long: `Download <base URL>/<Ecosystem>/all.zip for each ECOSYSTEM (OSV's base
names: Debian, Alpine, Ubuntu, "Red Hat", Go, PyPI, npm, Maven, ...) and
import it as "vulndb import" does. With no ECOSYSTEM, fetch those of the
packages of the stored images and those imported before (with only
--cpe-mapping, the mapping alone).

The base URL is scan.vulndb.baseURL (OSV's public bucket,
https://osv-vulnerabilities.storage.googleapis.com, by default); point it
at an internal mirror on an air-gapped site. Requests are conditional
(ETag, Last-Modified, remembered in <dataDir>/vulndb/): a file that has
not changed since the last fetch is not downloaded or imported again.

Red Hat's repository-to-cpe.json (scan.vulndb.cpeMappingURL), which maps
the content sets of UBI and RHEL images to the ecosystems of Red Hat's
advisories, is fetched too when "Red Hat" is fetched, or with --cpe-mapping.

Progress goes to standard error, one line at a time when it is not a
terminal; one line per file goes to standard output. The command fails if
any file failed (the others are still imported).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("base-url") {
				cfg.Scan.VulnDB.BaseURL = baseURL
			}
			if cmd.Flags().Changed("cpe-mapping-url") {
				cfg.Scan.VulnDB.CPEMappingURL = cpeURL
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			for i, a := range args {
				if args[i], err = scan.FetchEcosystemName(a); err != nil {
					return err
				}
			}
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			if len(args) == 0 && !cpeMapping {
				ecos, err := scan.DefaultEcosystems(cmd.Context(), db.VulnDB())
				if err != nil {
					return err
				}
				if len(ecos) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "nothing to fetch: no stored image has packages yet and nothing was imported;"+
						" name the ecosystems to fetch (berth admin vulndb fetch Debian Alpine PyPI)")
					return nil
				}
			}
			p := newProgress(cmd.ErrOrStderr())
			f := scan.NewFetcher(db.VulnDB(), scan.FetchOptions{BaseURL: cfg.Scan.VulnDB.BaseURL, CPEMappingURL: cfg.Scan.VulnDB.CPEMappingURL,
				StateDir: filepath.Join(cfg.DataDir, "vulndb"), UserAgent: "berth (vulndb fetch)",
				Progress: func(ev scan.FetchProgress) {
					switch ev.Phase {
					case scan.PhaseRequest:
						p.Update(ev.Name + ": requesting")
					case scan.PhaseDownload:
						if ev.Total > 0 {
							p.Update(fmt.Sprintf("%s: downloaded %s of %s (%d%%)", ev.Name, humanBytes(ev.Bytes), humanBytes(ev.Total), ev.Bytes*100/ev.Total))
						} else {
							p.Update(fmt.Sprintf("%s: downloaded %s", ev.Name, humanBytes(ev.Bytes)))
						}
					case scan.PhaseImport:
						p.Update(fmt.Sprintf("%s: importing: read %d records: %d applied, %d unchanged, %d rejected", ev.Name,
							ev.Import.Read, ev.Import.Applied, ev.Import.Unchanged, ev.Import.Rejected))
					case scan.PhaseDone:
						p.End()
						fmt.Fprintln(cmd.OutOrStdout(), scan.FetchSummary(*ev.Result))
					}
				}})
			_, err = f.Fetch(cmd.Context(), scan.FetchRequest{Ecosystems: args, CPEMapping: cpeMapping, Force: force})
			p.End()
			if err != nil {
				return fmt.Errorf("fetch failed for %s", strings.ReplaceAll(err.Error(), "\n", "; "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&baseURL, "base-url", "", "where <Ecosystem>/all.zip files are served (default scan.vulndb.baseURL)")
	f.StringVar(&cpeURL, "cpe-mapping-url", "", "where repository-to-cpe.json is served (default scan.vulndb.cpeMappingURL)")
	f.BoolVar(&cpeMapping, "cpe-mapping", false, "fetch Red Hat's content-set mapping even when \"Red Hat\" is not fetched")
	f.BoolVar(&force, "force", false, "download even files the server says have not changed")
	return cmd
}

// loadConfig is the configuration an admin subcommand runs with: the
// --config, --data-dir and --database flags it inherits from "admin".
func loadConfig(cmd *cobra.Command) (config.Config, error) {
	var st settings
	get := func(name string) string {
		if f := cmd.Flags().Lookup(name); f != nil {
			return f.Value.String()
		}
		return ""
	}
	st.configFile, st.dataDir, st.database = get("config"), get("data-dir"), get("database")
	return st.load(cmd)
}
