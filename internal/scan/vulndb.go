package scan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan/osv"
)

// ImportStats says what an advisory import did.
type ImportStats struct {
	Read       int      `json:"read"`      // records read
	Applied    int      `json:"applied"`   // new or changed, stored
	Unchanged  int      `json:"unchanged"` // same id and modified as stored
	Withdrawn  int      `json:"withdrawn"` // of those applied, withdrawn
	Rejected   int      `json:"rejected"`  // records that did not parse
	Ecosystems []string `json:"ecosystems"`
	Errors     []string `json:"errors,omitempty"` // the first rejections
	// ContentSets is the number of content sets of the Red Hat content
	// set mapping (repository-to-cpe.json) imported, if one was.
	ContentSets int `json:"contentSets,omitempty"`
}

// ErrStore marks an import failure of the server (the database), as
// opposed to bad input.
var ErrStore = errors.New("advisory store")

// maxReportedErrors bounds ImportStats.Errors.
const maxReportedErrors = 20

// importBatch is how many records one transaction applies.
const importBatch = 500

// Importer applies OSV records to the database in batches; each batch
// commits with the job that re-matches the manifests it changes.
type Importer struct {
	db       VulnData
	progress func(ImportStats)
	stats    ImportStats
	batch    []meta.VulnRecord
	ecos     map[string]bool
}

// NewImporter starts an import; progress (optional) is called after each
// batch.
func NewImporter(db VulnData, progress func(ImportStats)) *Importer {
	return &Importer{db: db, progress: progress, ecos: map[string]bool{}}
}

// Path imports a zip, a JSON file or a directory of them (osv.Read).
// Red Hat's content set mapping is recognised among them and imported as
// ImportCPEMapping does: a JSON file named on its own, or a file named
// repository-to-cpe.json in a directory.
func (im *Importer) Path(ctx context.Context, path string) error {
	if done, err := im.cpeMapping(ctx, path); done || err != nil {
		return err
	}
	return osv.Read(ctx, path, func(r *osv.Record) error { return im.add(ctx, r) }, im.bad)
}

// Zip imports an osv.dev all.zip in hand.
func (im *Importer) Zip(ctx context.Context, r io.ReaderAt, size int64, name string) error {
	return osv.ReadZip(ctx, r, size, name, func(rec *osv.Record) error { return im.add(ctx, rec) }, im.bad)
}

// JSON imports one record or an array of records.
func (im *Importer) JSON(ctx context.Context, r io.Reader, name string) error {
	return osv.ReadJSON(ctx, r, name, func(rec *osv.Record) error { return im.add(ctx, rec) }, im.bad)
}

func (im *Importer) bad(where string, err error) {
	im.stats.Rejected++
	if len(im.stats.Errors) < maxReportedErrors {
		im.stats.Errors = append(im.stats.Errors, fmt.Sprintf("%s: %v", where, err))
	}
}

func (im *Importer) add(ctx context.Context, r *osv.Record) error {
	im.stats.Read++
	vr := meta.VulnRecord{ID: r.ID, Modified: r.Modified, Withdrawn: r.IsWithdrawn(), Data: r.Raw}
	for _, k := range r.Keys() {
		vr.Keys = append(vr.Keys, meta.VulnKey{Ecosystem: k.Ecosystem, Name: k.Name})
		base, _, _ := strings.Cut(k.Ecosystem, ":")
		im.ecos[base] = true
	}
	im.batch = append(im.batch, vr)
	if len(im.batch) >= importBatch {
		return im.flush(ctx)
	}
	return nil
}

func (im *Importer) flush(ctx context.Context) error {
	if len(im.batch) == 0 {
		return nil
	}
	applied, err := im.db.ImportVulns(ctx, im.batch)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStore, err)
	}
	ids := map[string]bool{}
	for _, id := range applied {
		ids[id] = true
	}
	for _, r := range im.batch {
		switch {
		case !ids[r.ID]:
			im.stats.Unchanged++
		case r.Withdrawn:
			im.stats.Applied++
			im.stats.Withdrawn++
		default:
			im.stats.Applied++
		}
	}
	im.batch = im.batch[:0]
	if im.progress != nil {
		im.progress(im.stats)
	}
	return nil
}

// Finish applies the last batch, records when each ecosystem was updated,
// and returns what the import did.
func (im *Importer) Finish(ctx context.Context) (ImportStats, error) {
	if err := im.flush(ctx); err != nil {
		return im.stats, err
	}
	im.stats.Ecosystems = make([]string, 0, len(im.ecos))
	for e := range im.ecos {
		im.stats.Ecosystems = append(im.stats.Ecosystems, e)
	}
	sort.Strings(im.stats.Ecosystems)
	for _, e := range im.stats.Ecosystems {
		if err := im.db.TouchVulnSource(ctx, e); err != nil {
			return im.stats, fmt.Errorf("%w: %w", ErrStore, err)
		}
	}
	return im.stats, nil
}
