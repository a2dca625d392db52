package graph

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage"
)

// ManifestStore reads stored manifests (meta.Manifests).
type ManifestStore interface {
	GetManifest(ctx context.Context, repo, tag string, d digest.Digest, withContent bool) (meta.Manifest, error)
}

// Store is the graph's table as the indexer reads and writes it
// (meta.Graph).
type Store interface {
	IndexImage(ctx context.Context, img meta.GraphImage, bases []meta.BaseLink) error
	Indexed(ctx context.Context, repo string, d digest.Digest) (bool, error)
	BestWithChainsAt(ctx context.Context, dependent string, stored time.Time, chains []digest.Digest) ([]meta.GraphNode, error)
	BestByDigestAt(ctx context.Context, d digest.Digest, dependent string, stored time.Time, name string) (meta.GraphNode, bool, error)
	ChildFor(ctx context.Context, repoID int64, index digest.Digest, platform string) (meta.GraphNode, bool, error)
}

// Blobs reads stored blobs' bytes (a storage.Driver).
type Blobs interface {
	Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error)
}

// Limits bound the work of indexing one image: what is read whole.
const (
	maxConfigBytes    = 4 << 20
	maxStatementBytes = 4 << 20
	// maxLayers bounds the layers of an image the graph indexes (Docker
	// refuses more than 127); a config listing more is not an image the
	// graph reads.
	maxLayers = 1000
	// maxIndexChildren bounds the images of an index the graph indexes
	// (as a gate's scan input does): an index's entries may repeat, and
	// each distinct image is read, its configuration hashed and its rows
	// written once.
	maxIndexChildren = 256
	// maxStatements bounds the SLSA provenance statements of one
	// attestation manifest read (each once, however often it is listed).
	maxStatements = 16
	// maxMaterials bounds the distinct material digests of an image's
	// provenance looked up (BuildKit lists a handful: the frontend, the
	// bases of its stages).
	maxMaterials = 100
	// maxIndexStatements bounds the provenance statements read, and
	// maxIndexLookups the distinct provenance materials looked up, for
	// one manifest indexed (an index: all its images, however many
	// attestations they name).
	maxIndexStatements = 64
	maxIndexLookups    = 256
)

// indexRun is what one Index call has read, so that what its images
// share (an attestation manifest, a configuration, a material) is read
// once: an index's 256 images naming one attestation read its statements
// once, not 256 times.
type indexRun struct {
	provenance map[digest.Digest]provenanceRead
	configs    map[digest.Digest]configRead
	lookups    map[lookupKey]lookupRead
	// statements is how many statements were read (maxIndexStatements).
	statements int
}

type provenanceRead struct {
	refs []Ref
	err  error
}

type configRead struct {
	cfg ImageConfig
	err error
}

type lookupKey struct {
	d    digest.Digest
	name string
	// stored is when the image looking the base up was stored (its
	// images may have been stored at different times).
	stored int64
}

type lookupRead struct {
	node meta.GraphNode
	ok   bool
	err  error
}

func newIndexRun() *indexRun {
	return &indexRun{provenance: map[digest.Digest]provenanceRead{}, configs: map[digest.Digest]configRead{}, lookups: map[lookupKey]lookupRead{}}
}

// Indexer records what an image is built on.
type Indexer struct {
	manifests ManifestStore
	graph     Store
	blobs     Blobs
	log       *slog.Logger
}

// NewIndexer returns an indexer.
func NewIndexer(manifests ManifestStore, graph Store, blobs Blobs, log *slog.Logger) *Indexer {
	if log == nil {
		log = slog.Default()
	}
	return &Indexer{manifests: manifests, graph: graph, blobs: blobs, log: log}
}

// Index indexes a stored manifest: an image's layers and bases, or each
// platform of an index (with the provenance its attestations carry).
// Images already indexed are skipped; indexing again is harmless. A
// manifest with nothing to index (an artifact, an image the graph does
// not read) and an index, once its platforms are, are recorded as looked
// at (meta.Graph's IndexImage without a chain), in the same write as its
// platforms: a gate waits for that (gate.BaseReader's Indexed).
func (x *Indexer) Index(ctx context.Context, repo string, d digest.Digest) error {
	m, err := x.manifests.GetManifest(ctx, repo, "", d, true)
	if errors.Is(err, meta.ErrManifestNotFound) {
		return nil // deleted since
	}
	if err != nil {
		return err
	}
	parsed, err := oci.ParseManifest(m.Content, m.MediaType)
	if err != nil {
		// Stored manifests parsed once: nothing to index.
		return x.lookedAt(ctx, repo, d)
	}
	run := newIndexRun()
	if !oci.IsIndex(m.MediaType) {
		return x.indexImage(ctx, run, repo, d, m.CreatedAt, parsed, nil, nil)
	}
	attests := map[digest.Digest]digest.Digest{}
	for _, c := range parsed.Manifests {
		if of, ok := Attestation(c.Annotations); ok {
			if _, dup := attests[of]; !dup {
				attests[of] = c.Digest
			}
		}
	}
	// Each image once, however often the index lists it, and at most
	// maxIndexChildren of them.
	seen := map[digest.Digest]bool{}
	for _, c := range parsed.Manifests {
		if _, ok := Attestation(c.Annotations); ok || oci.IsIndex(c.MediaType) || seen[c.Digest] {
			continue
		}
		if len(seen) == maxIndexChildren {
			x.log.Warn("graph: index lists too many images; the others are not indexed", "repository", repo, "digest", d, "max", maxIndexChildren)
			break
		}
		seen[c.Digest] = true
		child, err := x.manifests.GetManifest(ctx, repo, "", c.Digest, true)
		if errors.Is(err, meta.ErrManifestNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		cm, err := oci.ParseManifest(child.Content, child.MediaType)
		if err != nil {
			continue
		}
		var materials []Ref
		if a, ok := attests[c.Digest]; ok {
			if materials, err = x.provenance(ctx, run, repo, a); err != nil {
				x.log.Warn("graph: unreadable provenance", "repository", repo, "attestation", a, "err", err)
			}
		}
		ann := parsed.Annotations
		if ann == nil {
			ann = map[string]string{}
		}
		if err := x.indexImage(ctx, run, repo, c.Digest, child.CreatedAt, cm, ann, materials); err != nil {
			return err
		}
	}
	return x.lookedAt(ctx, repo, d)
}

// lookedAt records a manifest with nothing (more) to index as looked at.
func (x *Indexer) lookedAt(ctx context.Context, repo string, d digest.Digest) error {
	return x.record(ctx, meta.GraphImage{Repository: repo, Digest: d}, nil)
}

// provenance reads the build materials of a BuildKit attestation
// manifest, once per Index call (run), however many images name it.
func (x *Indexer) provenance(ctx context.Context, run *indexRun, repo string, d digest.Digest) ([]Ref, error) {
	if p, ok := run.provenance[d]; ok {
		return p.refs, p.err
	}
	refs, err := x.readProvenance(ctx, run, repo, d)
	run.provenance[d] = provenanceRead{refs, err}
	return refs, err
}

// readProvenance reads the build materials of an attestation manifest
// (provenance).
func (x *Indexer) readProvenance(ctx context.Context, run *indexRun, repo string, d digest.Digest) ([]Ref, error) {
	am, err := x.manifests.GetManifest(ctx, repo, "", d, true)
	if err != nil {
		return nil, err
	}
	parsed, err := oci.ParseManifest(am.Content, am.MediaType)
	if err != nil {
		return nil, err
	}
	// Each statement read once, however often it is listed, and at most
	// maxStatements of them; each material digest kept once (the first
	// reference naming it), and at most maxMaterials of them: each is
	// looked up in the database (resolve).
	var out []Ref
	statements := map[digest.Digest]bool{}
	materials := map[digest.Digest]bool{}
	for _, l := range parsed.Layers {
		if !strings.HasPrefix(l.Annotations["in-toto.io/predicate-type"], predicateSLSAProvenance) || statements[l.Digest] {
			continue
		}
		if len(statements) == maxStatements {
			break
		}
		if run.statements == maxIndexStatements {
			x.log.Warn("graph: an index's attestations list too many provenance statements; the others are not read",
				"repository", repo, "attestation", d, "max", maxIndexStatements)
			break
		}
		statements[l.Digest] = true
		run.statements++
		b, err := x.read(ctx, l.Digest, maxStatementBytes)
		if err != nil {
			return nil, err
		}
		refs, err := ProvenanceMaterials(b)
		if err != nil {
			return nil, err
		}
		for _, r := range refs {
			if materials[r.Digest] {
				continue
			}
			if len(materials) == maxMaterials {
				return out, nil
			}
			materials[r.Digest] = true
			out = append(out, r)
		}
	}
	return out, nil
}

// read reads a small blob whole, checking its digest.
func (x *Indexer) read(ctx context.Context, d digest.Digest, max int64) ([]byte, error) {
	r, err := x.blobs.Reader(ctx, storage.BlobPath(d), 0)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", d, err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", d, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("blob %s is over %d bytes", d, max)
	}
	if d.Algorithm().Available() && d.Algorithm().FromBytes(b) != d {
		return nil, fmt.Errorf("blob %s: stored bytes do not match their digest", d)
	}
	return b, nil
}

func platformOf(c ImageConfig) string {
	p := c.OS + "/" + c.Architecture
	if c.Variant != "" {
		p += "/" + c.Variant
	}
	return p
}

// indexImage records an image's layer chain and its bases; stored is when
// the repository first stored it (its manifest's created_at there).
func (x *Indexer) indexImage(ctx context.Context, run *indexRun, repo string, d digest.Digest, stored time.Time, m *oci.Manifest,
	parentAnn map[string]string, materials []Ref) error {
	// An image pushed alone is indexed once; one seen again through its
	// index is looked at again, since the index may carry what the image
	// does not (base annotations, a provenance attestation): clients push
	// an index's children first, each announced on its own.
	if parentAnn == nil && materials == nil {
		if done, err := x.graph.Indexed(ctx, repo, d); err != nil || done {
			return err
		}
	}
	if m.Config == nil || m.Config.Size > maxConfigBytes {
		return x.lookedAt(ctx, repo, d) // not an image the graph reads
	}
	cfg, err := x.config(ctx, run, m.Config.Digest)
	if errors.Is(err, ErrNotImage) || err == nil && (len(cfg.DiffIDs) == 0 || len(cfg.DiffIDs) > maxLayers) {
		return x.lookedAt(ctx, repo, d) // an artifact, or not an image the graph reads
	}
	if err != nil {
		return err
	}
	chain := ChainIDs(cfg.DiffIDs)
	platform := platformOf(cfg)
	links, err := x.bases(ctx, run, repo, d, stored, m.Annotations, parentAnn, materials, chain, platform)
	if err != nil {
		return err
	}
	// The image and its bases in one write: a failure leaves neither, and
	// the retry, which would skip an image already indexed, does both. Run
	// by a job, that write is the job's completion (jobs.OnComplete): a
	// graph job then costs one write transaction, not two, and a failure
	// of the write leaves the job to run again once its lease expires.
	//
	// A repository deleted since the manifest was read took its graph rows
	// with it: there is nothing to record, and failing the write would
	// hold the job, and its key's next ones, until its lease runs out.
	return x.record(ctx, meta.GraphImage{Repository: repo, Digest: d, Platform: platform, Chain: chain}, links)
}

// config reads and parses an image's configuration, once per Index call
// (run), however many images share it. An error reading it is not kept:
// the job fails, and its retry reads it again.
func (x *Indexer) config(ctx context.Context, run *indexRun, d digest.Digest) (ImageConfig, error) {
	if c, ok := run.configs[d]; ok {
		return c.cfg, c.err
	}
	raw, err := x.read(ctx, d, maxConfigBytes)
	if err != nil {
		return ImageConfig{}, err
	}
	cfg, err := ParseConfig(raw)
	run.configs[d] = configRead{cfg, err}
	return cfg, err
}

// record writes an image's rows: in the transaction that completes the
// job running the indexer (jobs.OnComplete, in the order given), else at
// once.
func (x *Indexer) record(ctx context.Context, img meta.GraphImage, links []meta.BaseLink) error {
	if in, ok := x.graph.(txIndexer); ok && jobs.OnComplete(ctx, func(ctx context.Context, tx meta.Tx) error {
		return repositoryGone(in.IndexImageIn(ctx, tx, img, links))
	}) {
		return nil
	}
	return repositoryGone(x.graph.IndexImage(ctx, img, links))
}

// repositoryGone is err, except that a repository that is gone is not an
// error for the graph.
func repositoryGone(err error) error {
	if errors.Is(err, meta.ErrRepositoryNotFound) {
		return nil
	}
	return err
}

// txIndexer is what a Store may do besides (meta.Graph does): index an
// image in a transaction of the caller's, the job's completion.
type txIndexer interface {
	IndexImageIn(ctx context.Context, tx meta.Tx, img meta.GraphImage, bases []meta.BaseLink) error
}

// bases finds an image's bases, strongest signal first: its base
// annotations, its provenance, then its layers. The immediate base is
// level 1; the bases below it (found by layers) follow. A base stored in
// several repositories (copies) is recorded once, in the repository the
// store ranks best for the image (meta.Graph's BestWithChainsAt and
// BestByDigestAt): the one its annotation names, else one of its own
// namespace, else the copy stored first. A copy another namespace stored
// after the image (stored) is none: however often the image is looked at
// again (each time an index listing it is pushed), and however late the
// graph first gets to it, another tenant's later copy never becomes its
// base.
func (x *Indexer) bases(ctx context.Context, run *indexRun, repo string, d digest.Digest, stored time.Time, ann, parentAnn map[string]string,
	materials []Ref, chain []digest.Digest, platform string) ([]meta.BaseLink, error) {
	// Images that are a prefix of this one, deepest first: the best copy
	// of each depth.
	var prefixes []meta.GraphNode
	if len(chain) > 1 {
		var err error
		if prefixes, err = x.graph.BestWithChainsAt(ctx, repo, stored, chain[:len(chain)-1]); err != nil {
			return nil, err
		}
	}
	var immediate *meta.BaseLink
	if ref, ok := BaseAnnotations(ann); ok {
		immediate = x.resolve(ctx, run, repo, stored, ref, platform, MethodAnnotation, chain)
	} else if ref, ok := BaseAnnotations(parentAnn); ok {
		immediate = x.resolve(ctx, run, repo, stored, ref, platform, MethodAnnotation, chain)
	}
	if immediate == nil {
		// The deepest material that is a prefix of the image: BuildKit
		// lists the frontend and other inputs too.
		for _, ref := range materials {
			l := x.resolve(ctx, run, repo, stored, ref, platform, MethodProvenance, chain)
			if l != nil && l.Layers > 0 && (immediate == nil || l.Layers > immediate.Layers) {
				immediate = l
			}
		}
	}
	var links []meta.BaseLink
	below := len(chain)
	if immediate != nil {
		links = append(links, *immediate)
		if immediate.Layers > 0 {
			below = immediate.Layers
		} else {
			below = 0 // a base the graph has not indexed: its own chain is unknown
		}
	}
	// The chain by layers: each depth is a level.
	level := len(links)
	for _, p := range prefixes {
		if p.Layers >= below || p.Repository == repo && p.Digest == d {
			continue
		}
		level++
		links = append(links, meta.BaseLink{RepositoryID: p.RepositoryID, Digest: p.Digest, Method: MethodLayers, Level: level, Layers: p.Layers})
	}
	return links, nil
}

// bestByDigest looks a named base up (the store's BestByDigestAt), once
// per Index call (run), name and time the image was stored; provenance
// materials are looked up at most maxIndexLookups times per call.
func (x *Indexer) bestByDigest(ctx context.Context, run *indexRun, repo string, stored time.Time, ref Ref, method string) (meta.GraphNode, bool, error) {
	k := lookupKey{ref.Digest, ref.Repository, stored.UnixMicro()}
	if l, ok := run.lookups[k]; ok {
		return l.node, l.ok, l.err
	}
	if method == MethodProvenance && len(run.lookups) >= maxIndexLookups {
		return meta.GraphNode{}, false, nil
	}
	node, ok, err := x.graph.BestByDigestAt(ctx, ref.Digest, repo, stored, ref.Repository)
	run.lookups[k] = lookupRead{node, ok, err}
	return node, ok, err
}

// startsChain reports whether an indexed image's layers start chain
// (and are not all of it).
func startsChain(n meta.GraphNode, chain []digest.Digest) bool {
	return n.Layers > 0 && n.Layers < len(chain) && chain[n.Layers-1] == n.TopChain
}

// resolve finds a named base among stored manifests: by digest (the copy
// the store ranks best for the dependent repository, the repository the
// reference names first, of those stored by when the image was: stored),
// for the image's platform when the digest is an index's.
func (x *Indexer) resolve(ctx context.Context, run *indexRun, repo string, stored time.Time, ref Ref, platform, method string,
	chain []digest.Digest) *meta.BaseLink {
	if ref.Digest == "" {
		return nil
	}
	best, ok, err := x.bestByDigest(ctx, run, repo, stored, ref, method)
	if err != nil || !ok {
		return nil
	}
	if best.Layers == 0 {
		if child, ok, err := x.graph.ChildFor(ctx, best.RepositoryID, best.Digest, platform); err == nil && ok {
			best.Digest = child.Digest
			if startsChain(child, chain) {
				best.Layers = child.Layers
			}
		}
	} else if method == MethodProvenance && !startsChain(best, chain) {
		// A material counts only if its layers start the image's.
		return nil
	}
	if method == MethodProvenance && best.Layers == 0 {
		return nil
	}
	// The tag the image was built from: recorded through it if it ever
	// reached the digest here (a mirror keeps upstream's tag names).
	return &meta.BaseLink{RepositoryID: best.RepositoryID, Digest: best.Digest, Method: method, Level: 1, Layers: best.Layers, Tag: ref.Tag}
}
