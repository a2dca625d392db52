package meta_test

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// linkCapEnv is a PostgreSQL store with a repository whose layers were
// linked a year ago, and a session beside it to hold their link rows.
type linkCapEnv struct {
	t   *testing.T
	ctx context.Context
	db  *meta.DB
	h   *lockHolder
}

const linkCapRepo = "acme/app"

func newLinkCapEnv(t *testing.T) *linkCapEnv {
	db, dsn := openPostgres(t)
	ctx := context.Background()
	return &linkCapEnv{t: t, ctx: ctx, db: db, h: newLockHolder(t, ctx, dsn)}
}

// put stores the blobs and p naming them.
func (e *linkCapEnv) put(p meta.PutManifest, bs ...meta.Blob) {
	e.t.Helper()
	for _, b := range bs {
		if _, err := e.db.Blobs().StoreBlob(e.ctx, linkCapRepo, b, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
			e.t.Fatal(err)
		}
		p.Refs = append(p.Refs, meta.Ref{Digest: b.Digest})
	}
	p.Repository = linkCapRepo
	if err := e.db.Manifests().PutManifest(e.ctx, p); err != nil {
		e.t.Fatal(err)
	}
}

// linkedLongAgo dates every link of the repository a year ago.
func (e *linkCapEnv) linkedLongAgo() {
	e.t.Helper()
	year := time.Now().AddDate(-1, 0, 0).UnixMicro()
	if err := e.db.Exec(e.ctx, "UPDATE repository_blobs SET created_at = ?, linked_at = ? WHERE repository_id = ?",
		year, year, repoID(e.t, e.db, linkCapRepo)); err != nil {
		e.t.Fatal(err)
	}
}

// heads holds the links of bs in the session beside the store's, as a
// HEAD of each (a confirmation: TouchBlobLink) holds it until it commits.
func (e *linkCapEnv) heads(bs ...meta.Blob) {
	e.t.Helper()
	var ds []string
	for _, b := range bs {
		ds = append(ds, b.Digest.String())
	}
	e.h.lock("SELECT 1 FROM repository_blobs WHERE digest = ANY($1) FOR UPDATE", ds)
	if _, err := e.h.tx.ExecContext(e.ctx, "UPDATE repository_blobs SET created_at = $1 WHERE digest = ANY($2)", time.Now().UnixMicro(), ds); err != nil {
		e.t.Fatal(err)
	}
}

// collectLinks runs a link collection now with a 24 h cap over bs' links
// and fails the test for each it removes.
func (e *linkCapEnv) collectLinks(bs ...meta.Blob) {
	e.t.Helper()
	now := time.Now()
	var cands []meta.GCCandidate
	for _, b := range bs {
		cands = append(cands, meta.GCCandidate{RepositoryID: repoID(e.t, e.db, linkCapRepo), Repository: linkCapRepo, Digest: b.Digest})
	}
	if _, err := e.db.Collector().CollectLinks(e.ctx, cands, now.Add(-time.Hour), now.Add(-24*time.Hour)); err != nil {
		e.t.Fatal(err)
	}
	for _, b := range bs {
		if _, err := e.db.Blobs().RepositoryBlob(e.ctx, linkCapRepo, b.Digest); err != nil {
			e.t.Errorf("the link of %s, referenced until a moment ago, was collected at once: %v", b.Digest, err)
		}
	}
}

// TestCollectedManifestKeptWhileItsLinkIsHeld: on PostgreSQL, collecting
// a manifest dates anew the links of the blobs it referenced; a link row
// another transaction holds at that moment (a HEAD confirming it, the
// blob uploaded again, a push that rolls back) cannot be dated, so the
// manifest is kept for the next pass. Before, the held row was skipped
// and kept its year-old date, and the same pass took the link under the
// cap: the client's push of an image naming the layer failed with
// MANIFEST_BLOB_UNKNOWN.
func TestCollectedManifestKeptWhileItsLinkIsHeld(t *testing.T) {
	e := newLinkCapEnv(t)
	layer := blobOf("a layer linked a year ago")
	m := manifestOf("an untagged image of it")
	e.put(meta.PutManifest{Manifest: m}, layer)
	e.linkedLongAgo()
	cands := []meta.GCCandidate{{RepositoryID: repoID(t, e.db, linkCapRepo), Repository: linkCapRepo, Digest: m.Digest}}

	e.heads(layer)
	collected := make(chan error, 1)
	var n int
	go func() {
		var err error
		n, err = e.db.Collector().CollectManifests(e.ctx, cands, time.Now().Add(time.Minute))
		collected <- err
	}()
	done, err := returnsOrWaits(t, e.h, collected, 1)
	if !done {
		// It holds the manifest: a push of it, holding the link, would
		// wait for it.
		t.Error("the collection waited for the held link")
	}
	if err := e.h.tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if !done {
		err = <-collected
	}
	if err != nil {
		t.Fatal(err)
	}
	e.collectLinks(layer)

	// Kept (or collected after the holder's commit, with its links
	// dated): the next collection, nothing held, dates the link now.
	if n == 0 {
		if n, err := e.db.Collector().CollectManifests(e.ctx, cands, time.Now().Add(time.Minute)); err != nil || n != 1 {
			t.Fatalf("the manifest, its link no longer held: collected %d, %v; want 1", n, err)
		}
	}
	if _, linked, err := e.db.LinkTimes(e.ctx, linkCapRepo, layer.Digest); err != nil || time.Since(linked) > time.Hour {
		t.Fatalf("the link's first link time after its manifest was collected: %s, %v; want now", linked, err)
	}
	e.collectLinks(layer)
}

// TestDeletedManifestDatesHeldLinks: on PostgreSQL, deleting a manifest
// (and the SBOM stored to go with it) dates anew the links of the blobs
// they referenced even when another transaction holds the link rows at
// that moment: the delete waits for them. Before, the held rows were
// skipped, kept their year-old date, and the next pass took them at once.
func TestDeletedManifestDatesHeldLinks(t *testing.T) {
	e := newLinkCapEnv(t)
	layer, sbomLayer := blobOf("a layer linked a year ago"), blobOf("an SBOM of a year ago")
	m := manifestOf("an image of a year ago")
	e.put(meta.PutManifest{Manifest: m, Tag: "v1"}, layer)
	sbom := manifestOf("its SBOM")
	sbom.Subject = m.Digest
	e.put(meta.PutManifest{Manifest: sbom, Generated: true, DeletedWithSubject: true}, sbomLayer)
	e.linkedLongAgo()

	e.heads(layer, sbomLayer)
	deleted := make(chan error, 1)
	go func() { deleted <- e.db.Manifests().DeleteManifest(e.ctx, linkCapRepo, m.Digest, "alice") }()
	done, err := returnsOrWaits(t, e.h, deleted, 1)
	if err := e.h.tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if !done {
		err = <-deleted
	}
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := e.db.Manifests().GetManifest(e.ctx, linkCapRepo, "", sbom.Digest, false); err == nil {
		t.Fatal("the SBOM did not go with its image")
	}
	e.collectLinks(layer, sbomLayer)
}

// TestDeleteManifestRacesPushOfItsLayer: on PostgreSQL, a delete of a
// manifest and a push of another image naming one of its layers do not
// deadlock. The push holds the layer's link (FOR SHARE) and then waits to
// count its references (the namespace's usage row, held here); the
// delete dates the links of what the manifest referenced before it
// counts, so it waits for the push rather than holding the usage row the
// push waits for.
func TestDeleteManifestRacesPushOfItsLayer(t *testing.T) {
	e := newLinkCapEnv(t)
	layer := blobOf("a shared base layer")
	m := manifestOf("the image to delete")
	e.put(meta.PutManifest{Manifest: m, Tag: "old"}, layer)

	e.h.lock("SELECT 1 FROM quota_usage WHERE namespace = $1 FOR UPDATE", "acme")
	pushed := make(chan error, 1)
	next, refs := image("the next image", layer)
	go func() {
		pushed <- e.db.Manifests().PutManifest(e.ctx, meta.PutManifest{Repository: linkCapRepo, Manifest: next, Refs: refs, Tag: "new"})
	}()
	e.h.waitBlocked(1) // the push, holding the layer's link, waits to count it
	deleted := make(chan error, 1)
	go func() { deleted <- e.db.Manifests().DeleteManifest(e.ctx, linkCapRepo, m.Digest, "alice") }()
	e.h.waitBlocked(2)
	e.h.release()
	if err := <-pushed; err != nil {
		t.Errorf("push: %v", err)
	}
	if err := <-deleted; err != nil {
		t.Errorf("delete: %v", err)
	}
	if n := e.db.Deadlocks(); n != 0 {
		t.Errorf("%d transactions ended as deadlocked", n)
	}
}
