package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/feed"
	"github.com/berth-dev/berth/internal/mirror"
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
is copied. Blobs Berth already stores are linked, not downloaded again.

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
			cfg, err := st.load(cmd)
			if err != nil {
				return err
			}
			db, err := openStore(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer db.Close()
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
			copier := mirror.NewCopier(wire.CopierStores(db), driver, cfg.ArtifactPolicy(), cfg.Registry.MaxManifestBytes, slog.New(slog.NewTextHandler(io.Discard, nil)))
			p := newProgress(cmd.ErrOrStderr())
			req.Actor = "berth import"
			req.Progress = func(s mirror.Stats) {
				p.Update(fmt.Sprintf("fetched %d blobs, %s", s.BlobsFetched, humanBytes(s.BytesFetched)))
			}
			d, stats, err := copier.Import(cmd.Context(), req)
			p.End()
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
