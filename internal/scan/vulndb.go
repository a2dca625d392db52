package scan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan/osv"
)

// ImportStats says what an advisory import did.
type ImportStats struct {
	Read      int `json:"read"`      // records read
	Applied   int `json:"applied"`   // new or changed, stored
	Unchanged int `json:"unchanged"` // same id and modified as stored
	Withdrawn int `json:"withdrawn"` // of those applied, withdrawn
	Rejected  int `json:"rejected"`  // records that did not parse
	// Ecosystems are the base ecosystems the records read name.
	Ecosystems []string `json:"ecosystems"`
	// Covered are the ecosystems the import recorded as imported (their
	// record count and update time, which decide whether a report can be
	// complete): the ecosystem of a fetch, of an <Ecosystem>/all.zip, one
	// declared with Cover, and each that a record of that ecosystem alone
	// names. An ecosystem that only records of several ecosystems name (a
	// GHSA advisory in PyPI's all.zip may name Maven too) is matched, but
	// not recorded as imported: a handful of advisories are not its data.
	Covered []string `json:"covered"`
	Errors  []string `json:"errors,omitempty"` // the first rejections
	// ContentSets is the number of content sets of the Red Hat content
	// set mapping (repository-to-cpe.json) imported, if one was.
	ContentSets int `json:"contentSets,omitempty"`
}

// ErrStore marks an import failure of the server (the database), as
// opposed to bad input.
var ErrStore = errors.New("advisory store")

// ErrNoAdvisories marks an import that holds no advisory of an ecosystem
// it declares it covers (Importer.Cover).
var ErrNoAdvisories = errors.New("no advisory of the ecosystem it covers")

// maxReportedErrors bounds ImportStats.Errors.
const maxReportedErrors = 20

// A transaction applies importBatch records, or fewer whose JSON comes to
// importBatchBytes (and one record more, up to osv.MaxRecordSize): a
// batch is held in memory until applied, and 500 advisories of 4 MiB, a
// zip of a few MB, would hold 2 GiB.
const (
	importBatch      = 500
	importBatchBytes = 32 << 20
)

// Importer applies OSV records to the database in batches; each batch
// commits with the job that re-matches the manifests it changes.
type Importer struct {
	db       VulnData
	progress func(ImportStats)
	stats    ImportStats
	batch    []meta.VulnRecord
	size     int             // bytes of the batch's records' JSON
	ecos     map[string]bool // base ecosystems the records name
	covered  map[string]bool // ecosystems held in full (ImportStats.Covered)
	declared map[string]bool // declared with Cover
}

// NewImporter starts an import; progress (optional) is called after each
// batch.
func NewImporter(db VulnData, progress func(ImportStats)) *Importer {
	return &Importer{db: db, progress: progress, ecos: map[string]bool{}, covered: map[string]bool{}, declared: map[string]bool{}}
}

// Cover declares that the import holds every advisory of an ecosystem (a
// base name, "PyPI"), as OSV's <Ecosystem>/all.zip does: Finish records
// it as imported, with its record count and the time, whatever else its
// records name (see ImportStats.Covered). Its records must name it: an
// import that holds none (an empty zip, a zip of no JSON, another
// ecosystem's file) is not its data, and fails with ErrNoAdvisories,
// recording nothing as imported and applying nothing: at Finish, or at
// its first batch when that names it nowhere.
func (im *Importer) Cover(ecosystem string) error {
	name, err := FetchEcosystemName(ecosystem)
	if err != nil {
		return err
	}
	im.declared[name] = true
	return nil
}

// zipEcosystem is the ecosystem a file holds in full by its name: E for
// ".../E/all.zip", OSV's layout; "" for anything else (loose JSON files,
// zips named otherwise, and OSV's all.zip of every ecosystem at the
// bucket's root, which cannot be told by its name from a per-ecosystem
// one saved elsewhere). It counts only if the file's records name E
// (add): a PyPI all.zip saved as Downloads/all.zip covers nothing.
func zipEcosystem(name string) string {
	name = filepath.ToSlash(name)
	dir, file := path.Split(name)
	if !strings.EqualFold(file, "all.zip") {
		return ""
	}
	return strings.TrimSpace(path.Base(strings.TrimRight(dir, "/")))
}

// Path imports a zip, a JSON file or a directory of them (osv.Read).
// Red Hat's content set mapping is recognised among them and imported as
// ImportCPEMapping does: a JSON file named on its own, or a file named
// repository-to-cpe.json in a directory.
func (im *Importer) Path(ctx context.Context, path string) error {
	if done, err := im.cpeMapping(ctx, path); done || err != nil {
		return err
	}
	last, eco := "", ""
	return osv.ReadEach(ctx, path, func(file string, r *osv.Record) error {
		if file != last {
			last = file
			if abs, err := filepath.Abs(file); err == nil {
				file = abs // "all.zip" read inside the PyPI directory
			}
			eco = zipEcosystem(file)
		}
		return im.add(ctx, r, eco)
	}, im.bad)
}

// Zip imports an osv.dev all.zip in hand. Named "<Ecosystem>/all.zip", it
// covers that ecosystem (ImportStats.Covered); any zip covers each
// ecosystem a record of that ecosystem alone names.
func (im *Importer) Zip(ctx context.Context, r io.ReaderAt, size int64, name string) error {
	eco := zipEcosystem(name)
	return osv.ReadZip(ctx, r, size, name, func(rec *osv.Record) error { return im.add(ctx, rec, eco) }, im.bad)
}

// JSON imports one record or an array of records. It covers each
// ecosystem a record of that ecosystem alone names (ImportStats.Covered).
func (im *Importer) JSON(ctx context.Context, r io.Reader, name string) error {
	return osv.ReadJSON(ctx, r, name, func(rec *osv.Record) error { return im.add(ctx, rec, "") }, im.bad)
}

func (im *Importer) bad(where string, err error) {
	im.stats.Rejected++
	if len(im.stats.Errors) < maxReportedErrors {
		im.stats.Errors = append(im.stats.Errors, fmt.Sprintf("%s: %v", where, err))
	}
}

// add imports a record read from a file that holds ecosystem cover in
// full ("" when none): the record's own spelling of it is recorded.
func (im *Importer) add(ctx context.Context, r *osv.Record, cover string) error {
	im.stats.Read++
	vr := meta.VulnRecord{ID: r.ID, Modified: r.Modified, Withdrawn: r.IsWithdrawn(), Data: r.Raw}
	sole := ""
	for i, k := range r.Keys() {
		vr.Keys = append(vr.Keys, meta.VulnKey{Ecosystem: k.Ecosystem, Name: k.Name})
		base, _, _ := strings.Cut(k.Ecosystem, ":")
		im.ecos[base] = true
		if cover != "" && strings.EqualFold(base, cover) {
			im.covered[base] = true
		}
		if i == 0 {
			sole = base
		} else if base != sole {
			sole = "-" // more than one
		}
	}
	if sole != "" && sole != "-" {
		// A record of one ecosystem only: an import of such records is
		// that ecosystem's data as the operator chose it (a directory of
		// Debian advisories, a hand-written record). An ecosystem that
		// only records of several name (a GHSA advisory in PyPI's all.zip
		// naming Maven too) is not: it is matched, not recorded.
		im.covered[sole] = true
	}
	im.batch = append(im.batch, vr)
	im.size += len(vr.Data)
	if len(im.batch) >= importBatch || im.size >= importBatchBytes {
		if err := im.uncovered(); err != nil {
			return err
		}
		return im.flush(ctx)
	}
	return nil
}

// uncovered fails when an ecosystem declared with Cover is named by no
// record read so far.
func (im *Importer) uncovered() error {
	for _, e := range sortedKeys(im.declared) {
		named := false
		for n := range im.ecos {
			named = named || strings.EqualFold(n, e)
		}
		if named {
			continue
		}
		naming := ""
		if names := sortedKeys(im.ecos); len(names) > 5 {
			naming = fmt.Sprintf(": they name %s and %d more", strings.Join(names[:5], ", "), len(names)-5)
		} else if len(names) > 0 {
			naming = ": they name " + strings.Join(names, ", ")
		}
		return fmt.Errorf("%w: none of the %d records read names %s%s (%d rejected)", ErrNoAdvisories, im.stats.Read, e, naming, im.stats.Rejected)
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
	clear(im.batch) // the records' JSON is not held until overwritten
	im.batch, im.size = im.batch[:0], 0
	if im.progress != nil {
		im.progress(im.stats)
	}
	return nil
}

// Finish applies the last batch, records when each ecosystem the import
// covers was updated (ImportStats.Covered), and returns what the import
// did. An ecosystem the records merely name is not recorded: its data is
// not known to be all there, and a report must not call an image clean
// on a handful of advisories. An ecosystem declared with Cover that no
// record names fails the import (ErrNoAdvisories) before anything more is
// applied or recorded.
func (im *Importer) Finish(ctx context.Context) (ImportStats, error) {
	im.stats.Ecosystems = sortedKeys(im.ecos)
	if err := im.uncovered(); err != nil {
		return im.stats, err
	}
	if err := im.flush(ctx); err != nil {
		return im.stats, err
	}
	for e := range im.declared {
		spelled := false // by the records, as their keys are stored
		for c := range im.covered {
			spelled = spelled || strings.EqualFold(c, e)
		}
		if !spelled {
			im.covered[e] = true
		}
	}
	im.stats.Covered = sortedKeys(im.covered)
	for _, e := range im.stats.Covered {
		if err := im.db.TouchVulnSource(ctx, e); err != nil {
			return im.stats, fmt.Errorf("%w: %w", ErrStore, err)
		}
	}
	return im.stats, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
