package gc

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
)

// Verdict says whether garbage collection keeps a manifest, and why: the
// reasons Keppel's GC status gives (protected by a tag, a parent, a
// subject, or its recent upload).
type Verdict struct {
	Digest    digest.Digest `json:"digest"`
	Kept      bool          `json:"kept"`
	Reasons   []string      `json:"reasons"`
	Tags      []string      `json:"tags"`
	Parents   []string      `json:"parents"`
	Subject   string        `json:"subject,omitempty"`
	CreatedAt time.Time     `json:"created_at"`
	// ConfirmedAt is when a client last confirmed it (pushed it again,
	// or asked for it by digest), if ever.
	ConfirmedAt time.Time `json:"confirmed_at,omitzero"`
	ProtectedTo time.Time `json:"protected_until"` // end of the delay after its push or confirmation
	Delay       string    `json:"delay"`
	// CachedUntil is when the pull-through cache stops keeping it (zero:
	// it does not).
	CachedUntil time.Time `json:"cached_until,omitzero"`
	// NextPass is when the next pass of this replica is due (zero when
	// it runs none, or has not run one yet).
	NextPass time.Time `json:"next_pass,omitzero"`
}

// Explain says why a manifest with these keepers is kept, or that the next
// pass collects it; on a replica that runs no passes (NoPasses) it
// says collection_disabled too, and kept is still what a pass would
// decide. seeHeld is whether the caller may see what a gate
// holds (a checker): for anyone else the verdict names no held parent and
// counts no candidacy, and says only that a gate keeps it.
func (c *Collector) Explain(d digest.Digest, k meta.ManifestKeepers, seeHeld bool) Verdict {
	v := Verdict{Digest: d, Tags: k.Tags, Parents: []string{}, CreatedAt: k.CreatedAt, ConfirmedAt: k.ConfirmedAt,
		ProtectedTo: k.CreatedAt.Add(c.opts.Delay), Delay: c.opts.Delay.String(), Reasons: []string{}}
	if k.ConfirmedAt.After(k.CreatedAt) {
		v.ProtectedTo = k.ConfirmedAt.Add(c.opts.Delay)
	}
	if v.Tags == nil {
		v.Tags = []string{}
	}
	parents := k.Parents
	if seeHeld {
		parents = slices.Concat(k.Parents, k.HeldParents)
		slices.Sort(parents)
	}
	for _, p := range parents {
		v.Parents = append(v.Parents, p.String())
	}
	if len(k.Tags) > 0 {
		v.Reasons = append(v.Reasons, fmt.Sprintf("protected_by_tag: %d tag(s) point at it", len(k.Tags)))
	}
	if len(parents) > 0 {
		v.Reasons = append(v.Reasons, fmt.Sprintf("protected_by_parent: %d index(es) of the repository list it", len(parents)))
	}
	if k.Subject != "" {
		v.Subject = k.Subject.String()
		if k.SubjectStored {
			v.Reasons = append(v.Reasons, "protected_by_subject: it refers to "+k.Subject.String()+", which is stored")
		}
	}
	if !k.RestorableUntil.IsZero() {
		v.Reasons = append(v.Reasons, "protected_by_time_machine: a tag left it; restorable until "+k.RestorableUntil.UTC().Format(time.RFC3339))
	}
	if seeHeld && len(k.Candidates) > 0 {
		v.Reasons = append(v.Reasons, fmt.Sprintf("protected_by_gate: a live candidate for %d guarded tag(s)", len(k.Candidates)))
	}
	if !k.CachedUntil.IsZero() {
		v.CachedUntil = k.CachedUntil
		v.Reasons = append(v.Reasons, "protected_by_proxy_cache: kept by the pull-through cache until "+k.CachedUntil.UTC().Format(time.RFC3339))
	}
	if c.opts.Delay <= 0 {
		v.Reasons = append(v.Reasons, "collection_disabled: gc is off on this server")
	} else if c.now().Before(v.ProtectedTo) {
		v.Reasons = append(v.Reasons, "protected_by_recent_upload: pushed or confirmed less than gc.delay ago")
	}
	if len(v.Reasons) == 0 && !seeHeld && (len(k.Candidates) > 0 || len(k.HeldParents) > 0) {
		// Held indexes that list it, its own candidacy: a checker's to
		// see. A reader learns only that a gate keeps it, and only when
		// nothing else does.
		v.Reasons = append(v.Reasons, "protected_by_gate: a gate holds content that keeps it")
	}
	v.Kept = len(v.Reasons) > 0
	if c.noPasses {
		// Kept stays what a pass would decide: another replica, or
		// `berth admin gc`, may run one.
		v.Reasons = append(v.Reasons, "collection_disabled: gc.enabled is off on this replica, which runs no passes (another replica or berth admin gc may)")
	}
	if next := c.nextPass(); !next.IsZero() {
		v.NextPass = next
	}
	return v
}

// Status is the collector's state as the superuser API shows it.
type Status struct {
	// Enabled is whether this replica runs passes (gc.enabled); what a
	// pass would collect is counted either way.
	Enabled  bool   `json:"enabled"`
	Delay    string `json:"delay"`
	Interval string `json:"interval"`
	// Collectable is what a pass would remove now (a dry run).
	Collectable Collected `json:"collectable"`
	// PendingDeletes are condemned blobs whose bytes are still to go.
	PendingDeletes int `json:"pending_deletes"`
	// LastPass is this replica's last pass (nil before the first).
	LastPass *PassRecord `json:"last_pass"`
}

// PassRecord is a finished pass.
type PassRecord struct {
	Finished time.Time `json:"finished"`
	Report   Report    `json:"report"`
	Error    string    `json:"error,omitempty"`
}

// Status reports the collector's state; it counts what is collectable now
// (one read of each candidate query).
func (c *Collector) Status(ctx context.Context) (Status, error) {
	st := Status{Enabled: c.opts.Delay > 0 && !c.noPasses, Delay: c.opts.Delay.String(), Interval: c.opts.Interval.String()}
	if c.opts.Delay > 0 {
		got, err := c.collect(ctx, c.cutoffsAt(c.now()), true)
		if err != nil {
			return st, err
		}
		st.Collectable = got
	}
	pending, err := c.gc.PendingBlobDeletes(ctx, 100000)
	if err != nil {
		return st, err
	}
	st.PendingDeletes = len(pending)
	c.mu.Lock()
	if c.last != nil {
		rec := *c.last
		st.LastPass = &rec
	}
	c.mu.Unlock()
	return st, nil
}

// record keeps the last pass of this replica.
func (c *Collector) record(rep Report, err error) {
	rec := &PassRecord{Finished: c.now(), Report: rep}
	if err != nil {
		rec.Error = err.Error()
	}
	c.mu.Lock()
	c.last = rec
	c.mu.Unlock()
}

// nextPass is when the next pass of this replica is due.
func (c *Collector) nextPass() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil || c.opts.Interval <= 0 {
		return time.Time{}
	}
	return c.last.Finished.Add(c.opts.Interval)
}

// passState is the collector's record of its passes (see Status).
type passState struct {
	mu   sync.Mutex
	last *PassRecord
	// noPasses: this replica runs no passes (NoPasses).
	noPasses bool
}

// NoPasses marks the collector of a replica that runs no passes
// (gc.enabled false: its Run is not started) but answers the reports:
// Explain says collection_disabled, Status says enabled false. Call it
// before the collector is used; it returns c.
func (c *Collector) NoPasses() *Collector {
	c.noPasses = true
	return c
}
