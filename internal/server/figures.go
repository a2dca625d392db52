package server

import (
	"context"
	"database/sql"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-dev/berth/internal/gate"
	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/meta"
)

// figureSource is what the database collector reads (*meta.DB).
type figureSource interface {
	Figures(ctx context.Context) (meta.Figures, error)
	PoolStats() map[string]sql.DBStats
	WriterWait() (n int64, total time.Duration, ok bool)
	WriterHold() (total time.Duration, ok bool)
	LogFlushes() (flushes, commits int64, ok bool)
}

// knownQueues always have their series, zero when idle.
var knownQueues = []string{meta.NotifyQueue, meta.ScanQueue, meta.MirrorQueue, meta.VulnDBQueue, gate.Queue, graph.Queue}

// figuresTimeout bounds the database queries of one scrape.
const figuresTimeout = 5 * time.Second

// dbCollector reads the job queues, the change feed's lag and the gates'
// live candidates from the database at scrape time (a few indexed
// queries), and the connection pools' statistics from this process. The
// database figures are the same from every replica: aggregate them with
// max(), not sum().
type dbCollector struct {
	src figureSource

	queued, dead, oldest, lag, unsequenced, candidates *prometheus.Desc
	waits, waitSeconds, open, inUse, maxOpen           *prometheus.Desc
	writerWaits, writerWaitSeconds, writerHoldSeconds  *prometheus.Desc
	logFlushes, logFlushCommits                        *prometheus.Desc
}

func newDBCollector(src figureSource) *dbCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &dbCollector{src: src,
		queued: d("registry_jobs_queued", "Live jobs by queue and state (pending: waiting or backing off; running: claimed).", "queue", "state"),
		dead:   d("registry_jobs_dead", "Dead-lettered jobs by queue (kept for gc.retention.deadJobs).", "queue"),
		oldest: d("registry_jobs_oldest_ready_seconds", "How long the oldest job that is due has waited to be claimed, by queue.", "queue"),
		lag:    d("registry_outbox_lag_events", "Events of the change feed a subscriber has not handled yet (feed head minus its cursor).", "subscriber"),
		unsequenced: d("registry_outbox_unsequenced_events",
			"Committed events not yet given their place in the feed (normally 0 or a handful)."),
		candidates:  d("registry_gate_candidates", "Live gate candidates by state (pending, blocked).", "state"),
		waits:       d("registry_database_pool_waits_total", "Times a query waited for a free connection, by pool (on SQLite, write is the single writer).", "pool"),
		waitSeconds: d("registry_database_pool_wait_seconds_total", "Time spent waiting for a free connection, by pool.", "pool"),
		open:        d("registry_database_pool_open_connections", "Open connections by pool.", "pool"),
		inUse:       d("registry_database_pool_in_use_connections", "Connections in use by pool.", "pool"),
		maxOpen:     d("registry_database_pool_max_open_connections", "The pool's maximum of open connections.", "pool"),
		writerWaits: d("registry_database_writer_waits_total",
			"SQLite only: write transactions begun (each waited for the single writer connection and the database's write lock)."),
		writerWaitSeconds: d("registry_database_writer_wait_seconds_total",
			"SQLite only: time write transactions waited to begin (the single writer connection, then the write lock, which another process may hold)."),
		writerHoldSeconds: d("registry_database_writer_hold_seconds_total",
			"SQLite only: time write transactions held the single writer, from their start to their commit (its rate is the fraction of time the writer was busy)."),
		logFlushes: d("registry_database_log_flushes_total",
			"SQLite with storage.filesystem.fsync only: fsyncs of the write-ahead log, each after the commits that waited for it."),
		logFlushCommits: d("registry_database_log_flush_commits_total",
			"SQLite with storage.filesystem.fsync only: durable commits that waited for a flush of the write-ahead log (divided by the flushes: commits per flush)."),
	}
}

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.queued, c.dead, c.oldest, c.lag, c.unsequenced, c.candidates, c.waits, c.waitSeconds, c.open, c.inUse, c.maxOpen,
		c.writerWaits, c.writerWaitSeconds, c.writerHoldSeconds, c.logFlushes, c.logFlushCommits} {
		ch <- d
	}
}

func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	for pool, st := range c.src.PoolStats() {
		ch <- prometheus.MustNewConstMetric(c.waits, prometheus.CounterValue, float64(st.WaitCount), pool)
		ch <- prometheus.MustNewConstMetric(c.waitSeconds, prometheus.CounterValue, st.WaitDuration.Seconds(), pool)
		ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(st.OpenConnections), pool)
		ch <- prometheus.MustNewConstMetric(c.inUse, prometheus.GaugeValue, float64(st.InUse), pool)
		ch <- prometheus.MustNewConstMetric(c.maxOpen, prometheus.GaugeValue, float64(st.MaxOpenConnections), pool)
	}
	if n, total, ok := c.src.WriterWait(); ok {
		ch <- prometheus.MustNewConstMetric(c.writerWaits, prometheus.CounterValue, float64(n))
		ch <- prometheus.MustNewConstMetric(c.writerWaitSeconds, prometheus.CounterValue, total.Seconds())
	}
	if total, ok := c.src.WriterHold(); ok {
		ch <- prometheus.MustNewConstMetric(c.writerHoldSeconds, prometheus.CounterValue, total.Seconds())
	}
	if flushes, commits, ok := c.src.LogFlushes(); ok {
		ch <- prometheus.MustNewConstMetric(c.logFlushes, prometheus.CounterValue, float64(flushes))
		ch <- prometheus.MustNewConstMetric(c.logFlushCommits, prometheus.CounterValue, float64(commits))
	}
	ctx, cancel := context.WithTimeout(context.Background(), figuresTimeout)
	defer cancel()
	f, err := c.src.Figures(ctx)
	if err != nil {
		// The scrape logs it and serves the rest (promhttp.ContinueOnError).
		ch <- prometheus.NewInvalidMetric(c.queued, err)
		return
	}
	for _, q := range knownQueues {
		if _, ok := f.Queues[q]; !ok {
			f.Queues[q] = meta.QueueFigures{}
		}
	}
	for q, v := range f.Queues {
		ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(v.Pending), q, "pending")
		ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(v.Running), q, "running")
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(v.Dead), q)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, v.OldestReady.Seconds(), q)
	}
	for sub, n := range f.FeedLag {
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(n), sub)
	}
	ch <- prometheus.MustNewConstMetric(c.unsequenced, prometheus.GaugeValue, float64(f.Unsequenced))
	for _, st := range []string{"pending", "blocked"} {
		ch <- prometheus.MustNewConstMetric(c.candidates, prometheus.GaugeValue, float64(f.GateCandidates[st]), st)
	}
}
