package scan

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/storage"
)

// Scans that fail: one waits for a layer a pull-through cache has not
// stored yet, fails past a day, keeps an earlier report, and is queued
// again once the layer is stored.

// A pull-through cache stores a manifest before its layers, and a layer
// only when a client pulls it (never, for a client that has it, or one
// that only asks whether the manifest is there). A scan whose layer blob
// is not stored waits for it, looking again every layerRetry, for up to
// layerWait after the manifest was stored; then it fails, saying why.
const (
	layerWait  = 24 * time.Hour
	layerRetry = time.Minute
)

// layerNotStoredError is the error of a scan that read a layer whose
// blob is not stored.
type layerNotStoredError struct {
	layer digest.Digest
	// stored is when the manifest was stored in the repository scanned
	// (zero: not known).
	stored time.Time
	err    error
}

func (e *layerNotStoredError) Error() string {
	return fmt.Sprintf("layer %s is not stored: %v", e.layer, e.err)
}

func (e *layerNotStoredError) Unwrap() error { return e.err }

// waitForLayer turns the error of a scan attempt of job j that found a
// layer not stored into a deferral (wait: no attempt is spent) while the
// layer may still come, and past layerWait into a failure that says why.
// Any other error is returned as it is.
func waitForLayer(err error, j meta.Job, now time.Time) (wait bool, _ error) {
	var nl *layerNotStoredError
	if !errors.As(err, &nl) {
		return false, err
	}
	since := nl.stored
	if since.IsZero() {
		since = j.CreatedAt
	}
	if horizon := since.Add(layerWait); !since.IsZero() && now.Before(horizon) {
		until := now.Add(layerRetry)
		if until.After(horizon) {
			until = horizon
		}
		return true, jobs.Defer(until, err)
	}
	return false, fmt.Errorf("%w, %s after the manifest was stored (a pull-through cache stores a layer when a client pulls it; "+
		"once it is stored, a request for the image's security report %s or more after this failure queues the scan again)", err, roundAge(now.Sub(since)), failedRescanAfter)
}

// keepScanned reports whether the manifest has a scanned report, which a
// scan that failed for good (a rescan, a re-index by a new indexer, an
// outage) must not replace: the report, its packages and vulnerabilities
// (what re-matching reads) stay, and the failure is logged.
func (s *Service) keepScanned(ctx context.Context, repo, dgst, reason string) (bool, error) {
	st, err := s.stores.Results.ManifestScan(ctx, dgst)
	if errors.Is(err, meta.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err // not known: nothing is written over it
	}
	if st.Status != meta.ScanScanned {
		return false, nil
	}
	s.log.Warn("a scan of an image scanned before failed for good: its earlier report is kept", "repository", repo, "digest", dgst,
		"report_indexer", st.IndexerVersion, "report_updated", st.UpdatedAt, "err", reason)
	return true, nil
}

// failedRescanAfter is how long after a scan failed for good a request
// for the image's security report may queue it again: when it failed for
// a layer a pull-through cache had not stored (layerNotStoredError), and
// that layer is stored now.
const failedRescanAfter = 10 * time.Minute

// missingLayer finds, in a failed scan's reason, the layer whose blob
// was not stored (layerNotStoredError's words).
var missingLayer = regexp.MustCompile(`layer (sha256:[0-9a-f]{64}) is not stored`)

// failedRequeuer queues a failed scan again if it failed long enough ago,
// once however many requests ask at the same time (meta.Scans).
type failedRequeuer interface {
	RequeueFailedScan(ctx context.Context, repo, digest string, age time.Duration) (bool, error)
}

// rescanFailed queues again, in repo, the scan of a manifest that failed
// (st) at least failedRescanAfter ago for want of a layer that is stored
// now, and reports whether it did. Any other failure (which would fail
// again, announcing it again) waits for a rescan on request. Reading
// the report costs, for a failed scan, a look at the one layer; of
// concurrent requests one queues the scan (failedRequeuer). held, if
// set, says whether repo holds the manifest; it is asked last, only of
// a scan that would be queued.
func (s *Service) rescanFailed(ctx context.Context, repo string, st meta.ManifestScan, held func(context.Context) (bool, error)) (bool, error) {
	q, ok := s.stores.Results.(failedRequeuer)
	if !ok || st.Status != meta.ScanFailed || time.Since(st.UpdatedAt) < failedRescanAfter {
		return false, nil
	}
	m := missingLayer.FindStringSubmatch(st.Reason)
	if m == nil {
		return false, nil
	}
	if _, err := s.driver.Stat(ctx, storage.BlobPath(digest.Digest(m[1]))); errors.Is(err, storage.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("look for the layer the scan of %s lacked: %w", st.Digest, err)
	}
	if held != nil {
		if ok, err := held(ctx); err != nil || !ok {
			return false, err
		}
	}
	queued, err := q.RequeueFailedScan(ctx, repo, st.Digest, failedRescanAfter)
	if err != nil {
		return false, fmt.Errorf("queue the failed scan of %s again: %w", st.Digest, err)
	}
	if queued {
		s.log.Info("a scan that failed for want of a layer is queued again: the layer is stored now", "repository", repo, "digest", st.Digest, "layer", m[1])
	}
	return queued, nil
}
