package scan

import (
	"context"
	"log/slog"
	"time"

	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan/osv"
)

// UpdaterOptions tune an Updater. Zero values mean the defaults.
type UpdaterOptions struct {
	// Every is the time between two fetches (required).
	Every time.Duration
	// RetryMissing is the shorter wait while a stored image has packages
	// of an ecosystem with no data (15m, never more than Every): an image
	// of a new ecosystem does not wait a whole interval for its data.
	RetryMissing time.Duration
	// Tick is how often each replica looks whether a fetch is due (1m).
	Tick   time.Duration
	Logger *slog.Logger
}

// Updater runs `berth admin vulndb fetch` on a schedule
// (scan.vulndb.updateInterval), as a job of meta.VulnDBQueue: every
// replica schedules and works the queue, and the database lets one job
// run at a time.
type Updater struct {
	db      VulnData
	fetcher *Fetcher
	opts    UpdaterOptions
	log     *slog.Logger
	worker  *jobs.Worker
}

// NewUpdater returns an updater; Run starts it.
func NewUpdater(db VulnData, queue jobs.Store, f *Fetcher, opts UpdaterOptions) *Updater {
	if opts.RetryMissing <= 0 {
		opts.RetryMissing = 15 * time.Minute
	}
	opts.RetryMissing = min(opts.RetryMissing, opts.Every)
	if opts.Tick <= 0 {
		opts.Tick = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	u := &Updater{db: db, fetcher: f, opts: opts, log: opts.Logger.With("component", "vulndb")}
	u.worker = jobs.New(queue, meta.VulnDBQueue, u.handle, jobs.Options{Concurrency: 1, PollInterval: min(opts.Tick, 5*time.Second),
		Logger: opts.Logger})
	return u
}

// Run schedules and runs fetches until ctx is cancelled. At its start
// and hourly, it also removes the temporary files of scans and uploads
// killed midway (removeTempLeftovers).
func (u *Updater) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() { defer close(done); u.worker.Run(ctx) }()
	t := time.NewTicker(u.opts.Tick)
	defer t.Stop()
	var swept time.Time
	for start := true; ; start = false {
		// Hourly, the spools of scans and uploads killed midway.
		if now := time.Now(); now.Sub(swept) >= leftoverAge {
			removeTempLeftovers(u.log, now)
			swept = now
		}
		if queued, err := u.schedule(ctx, time.Now(), start); err != nil && ctx.Err() == nil {
			u.log.Warn("schedule a vulnerability database update", "err", err)
		} else if queued {
			u.worker.Wake()
		}
		select {
		case <-ctx.Done():
			<-done
			return
		case <-t.C:
		}
	}
}

// schedule enqueues a fetch when one is due: Every after the last ended,
// or RetryMissing after it while data is missing for a stored image (at
// once at a start: the settings may have changed). It only reads unless a
// fetch is due.
func (u *Updater) schedule(ctx context.Context, now time.Time, start bool) (bool, error) {
	live, ended, err := u.db.VulnDBFetchState(ctx)
	if err != nil || live {
		return false, err
	}
	since := now.Add(-u.opts.Every)
	if !ended.IsZero() && ended.After(since) {
		missing, err := u.missing(ctx)
		if err != nil {
			return false, err
		}
		if !missing {
			return false, nil
		}
		if since = now.Add(-u.opts.RetryMissing); start {
			since = now
		}
		if ended.After(since) {
			return false, nil
		}
	}
	return u.db.EnqueueVulnDBFetch(ctx, since)
}

// missing reports whether a stored image has packages of an ecosystem
// with no data.
func (u *Updater) missing(ctx context.Context) (bool, error) {
	ecos, err := u.db.PackageEcosystems(ctx)
	if err != nil || len(ecos) == 0 {
		return false, err
	}
	srcs, err := u.db.VulnSources(ctx)
	if err != nil {
		return false, err
	}
	have := map[string]bool{}
	for _, s := range srcs {
		have[s.Ecosystem] = s.Records > 0
	}
	for _, e := range ecos {
		if !have[osv.BaseEcosystem(e)] {
			return true, nil
		}
	}
	return false, nil
}

// handle runs one scheduled fetch. A failure of any file fails the job,
// which is retried (files that did not change answer 304 again).
func (u *Updater) handle(ctx context.Context, _ meta.Job) error {
	start := time.Now()
	results, err := u.fetcher.Fetch(ctx, FetchRequest{})
	for _, r := range results {
		if r.Status == FetchFailed {
			u.log.Warn("vulnerability database update: " + FetchSummary(r))
		} else {
			u.log.Info("vulnerability database update: " + FetchSummary(r))
		}
	}
	if len(results) == 0 && err == nil {
		u.log.Info("vulnerability database update: nothing to fetch (no stored image has packages yet, and nothing was imported)")
	}
	u.log.Debug("vulnerability database update done", "took", time.Since(start), "err", err)
	return err
}
