package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/feed"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/server"
	"github.com/berth-dev/berth/internal/wire"
)

// importCmd copies an image or index from another registry into Berth, in
// the manner of `az acr import`, working on the data directly (no running
// server needed; with one running, the database coordinates).
func importCmd() *cobra.Command {
	var st settings
	var req mirror.ImportRequest
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "import SOURCE --repository REPO [--tag TAG ...]",
		Short: "Copy an image or index (every platform) from another registry",
		Long: `Copy an image or index, with every platform, from another registry into a
repository, and tag it. SOURCE is host[:port]/repo[:tag|@digest]. Without
--force (NoForce), an existing target tag fails the import before anything
is copied. Blobs the target namespace already has are linked, not
downloaded again (except content a gate holds).

The repository is NAMESPACE/NAME in a namespace that exists (a user or an
organization: berth admin org create makes one); a missing repository is
created private, and removed again if the copy fails (or is interrupted
with Ctrl-C or SIGTERM) before storing anything in it. An import killed
outright (SIGKILL, a second Ctrl-C, a crash, a power cut) leaves the
repository it made, empty: delete it in the web UI (the repository's
settings) or with DELETE /api/v1/repository/NAMESPACE/NAME. As with a
push, a proxy cache organization and a repository in state READ_ONLY or
MIRROR take no import.

Progress goes to standard error: redrawn in place on a terminal, one line
at a time (at most one a second) when it is a pipe or a file.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Source = args[0]
			if passwordStdin {
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				req.Password = strings.TrimRight(line, "\r\n")
			}
			// Checked before anything is opened: a name no route can
			// reach, or a repository outside any namespace, is never made.
			if err := checkImportName(req.Repo); err != nil {
				return err
			}
			cfg, err := st.load(cmd)
			if err != nil {
				return err
			}
			db, err := openStore(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer db.Close()
			created, err := prepareImportTarget(cmd.Context(), db, req.Repo)
			if err != nil {
				return err
			}
			// With scanning on, what this stores is queued for scanning
			// before it returns (a running server's scanner picks it up):
			// the scan subscriber of the feed is subscribed before the copy,
			// so that it cannot start after its events, and drained after.
			var scans *feed.Dispatcher
			if cfg.Scan.Enabled {
				scans = feed.New(db.Outbox(), []feed.Subscriber{scan.NewOnPush(db.Scans())}, feed.Options{})
				if err := scans.Subscribe(cmd.Context()); err != nil {
					return err
				}
			}
			driver, err := server.OpenStorage(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			copier := mirror.NewCopier(wire.CopierStores(db), driver, cfg.ArtifactPolicy(), cfg.Registry.MaxManifestBytes, slog.New(slog.NewTextHandler(io.Discard, nil))).WithGCDelay(cfg.GC.Delay)
			p := newProgress(cmd.ErrOrStderr())
			req.Actor = "berth import"
			// The operator, working on the data itself, reads every
			// repository: blobs of the namespace are linked (not those a
			// gate holds, which the copier downloads all the same).
			req.MayLink = func(context.Context, string) bool { return true }
			req.Progress = func(s mirror.Stats) {
				p.Update(fmt.Sprintf("fetched %d blobs, %s", s.BlobsFetched, humanBytes(s.BytesFetched)))
			}
			// Made above, or there already: the copy creates nothing (a
			// deletion during it is not undone by it).
			req.Create = &meta.RepoCreate{MustExist: true}
			d, stats, err := copier.Import(cmd.Context(), req)
			p.End()
			if err != nil && created {
				// The repository made for the copy goes with the failed
				// copy, unless something was stored in it meanwhile.
				if _, derr := db.Repositories().DeleteEmptyRepository(context.WithoutCancel(cmd.Context()), req.Repo, req.Actor); derr != nil &&
					!errors.Is(derr, meta.ErrRepositoryNotFound) {
					err = errors.Join(err, fmt.Errorf("remove the repository made for the import: %w", derr))
				}
			}
			if scans != nil {
				// Also after a failure: what was stored is scanned.
				if derr := scans.Drain(cmd.Context()); derr != nil {
					err = errors.Join(err, fmt.Errorf("queue scans: %w", derr))
				}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported %s as %s@%s (%d manifests; %d blobs fetched, %s; %d already stored)\n",
				req.Source, req.Repo, d, stats.Manifests, stats.BlobsFetched, humanBytes(stats.BytesFetched), stats.BlobsLinked)
			return nil
		},
	}
	st.register(cmd, false)
	f := cmd.Flags()
	f.StringVar(&req.Repo, "repository", "", "target repository (required)")
	f.StringArrayVar(&req.Tags, "tag", nil, "target tag (repeatable)")
	f.StringVar(&req.Username, "username", "", "upstream registry username")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the upstream password from standard input")
	f.BoolVar(&req.Insecure, "insecure", false, "allow plain HTTP to the upstream registry")
	f.BoolVar(&req.Force, "force", false, "overwrite existing target tags (Force mode)")
	cmd.MarkFlagRequired("repository")
	return cmd
}

// checkImportName refuses a target repository name that is not
// NAMESPACE/NAME, as the API's import does.
func checkImportName(repo string) error {
	ns, rest, ok := strings.Cut(repo, "/")
	if !ok || rest == "" {
		return fmt.Errorf("repository %q: want NAMESPACE/NAME, in a namespace that exists", repo)
	}
	if err := validateUsername(ns); err != nil {
		return fmt.Errorf("repository %q: namespace %w", repo, err)
	}
	if err := oci.ValidateName(repo); err != nil {
		return fmt.Errorf("repository name %q: %w", repo, err)
	}
	return nil
}

// prepareImportTarget makes the checks the API's import makes (a push's)
// before anything is copied: the namespace exists (an import creates no
// organization: a typo would make one nobody owns), it is not a proxy
// cache organization (whose content is its upstream's), and an existing
// repository takes pushes (not READ_ONLY, not MIRROR). A missing
// repository is created private, as a push creates it; created says so.
func prepareImportTarget(ctx context.Context, db *meta.DB, repo string) (created bool, err error) {
	ns, _, _ := strings.Cut(repo, "/")
	if _, err := db.Users().NamespaceByName(ctx, ns); errors.Is(err, meta.ErrNamespaceNotFound) {
		return false, fmt.Errorf("namespace %q does not exist (create it: berth admin org create %s --owner USER, or berth admin user create %s)", ns, ns, ns)
	} else if err != nil {
		return false, err
	}
	if _, err := db.ProxyCaches().ProxyCacheOf(ctx, ns); err == nil {
		return false, fmt.Errorf("%s is a proxy cache organization: its content comes from its upstream, so imports into it are refused (as pushes are)", ns)
	} else if !errors.Is(err, meta.ErrNotFound) {
		return false, err
	}
	ri, err := db.Repositories().Repository(ctx, repo)
	if err != nil {
		return false, err
	}
	if ri.Exists {
		if ri.State != auth.StateNormal {
			return false, errors.New(authz.StateRefusal(repo, ri.State, auth.ActionPush))
		}
		return false, nil
	}
	// No owner fields: the store refuses a namespace deleted meanwhile
	// rather than making it again.
	err = db.Repositories().EnsureRepository(ctx, repo, meta.Writer{Actor: "berth import", Create: &meta.RepoCreate{Visibility: "private"}})
	var missing *meta.NamespaceMissingError
	if errors.As(err, &missing) {
		return false, fmt.Errorf("namespace %q does not exist", ns)
	}
	return err == nil, err
}

// progress shows a long-running command's progress: redrawn in place on a
// terminal, and elsewhere (a CI log, a file, a pipe) as whole lines, at
// most one per interval, with no carriage returns.
type progress struct {
	w        io.Writer
	tty      bool
	interval time.Duration
	now      func() time.Time

	last    time.Time
	pending string // the latest update not yet printed (line mode)
	drawn   bool   // a line is drawn in place (terminal mode)
}

// newProgress writes progress to w, redrawing in place when w is a
// terminal.
func newProgress(w io.Writer) *progress {
	return &progress{w: w, tty: isTerminal(w), interval: time.Second, now: time.Now}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Update reports the current state in one line.
func (p *progress) Update(line string) {
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%s", line)
		p.drawn = true
		return
	}
	if t := p.now(); p.last.IsZero() || t.Sub(p.last) >= p.interval {
		fmt.Fprintln(p.w, line)
		p.last, p.pending = t, ""
		return
	}
	p.pending = line
}

// End prints the last update if throttling held it back, and ends the
// line drawn in place.
func (p *progress) End() {
	if p.pending != "" {
		fmt.Fprintln(p.w, p.pending)
		p.pending = ""
	}
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
