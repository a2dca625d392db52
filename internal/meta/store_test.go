package meta_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

func blobOf(s string) meta.Blob {
	return meta.Blob{Digest: digest.FromString(s), Size: int64(len(s))}
}

func manifestOf(s string) meta.Manifest {
	return meta.Manifest{Digest: digest.FromString(s), MediaType: "application/vnd.oci.image.manifest.v1+json",
		ArtifactType: "application/vnd.oci.image.config.v1+json", Content: []byte(s)}
}

func kinds(t *testing.T, db *meta.DB) []string {
	t.Helper()
	evs, err := db.Outbox().EventsAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, e := range evs {
		out = append(out, e.Kind)
	}
	return out
}

func TestStore(t *testing.T) {
	tests := []struct {
		name string
		fn   func(t *testing.T, db *meta.DB)
	}{
		{"Blobs", testBlobs},
		{"Uploads", testUploads},
		{"ManifestMissingRefs", testMissingRefs},
		{"ManifestAndTags", testManifestTags},
		{"Ordering", testOrdering},
		{"Deletes", testDeletes},
		{"Referrers", testReferrers},
		{"ConcurrentPushes", testConcurrent},
	}
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, metatest.Open(t, d)) })
			}
		})
	}
}

func testBlobs(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	b := blobOf("layer")
	if _, err := db.Blobs().RepositoryBlob(ctx, "org/app", b.Digest); !errors.Is(err, meta.ErrBlobNotFound) {
		t.Fatalf("before link: %v", err)
	}
	if _, err := db.Blobs().StoreBlob(ctx, "org/app", b, meta.UploadClaim{}, meta.Writer{Actor: "alice"}, metatest.NoBytes); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Blobs().StoreBlob(ctx, "org/app", b, meta.UploadClaim{}, meta.Writer{Actor: "alice"}, metatest.NoBytes); err != nil {
		t.Fatalf("linking twice: %v", err)
	}
	got, err := db.Blobs().RepositoryBlob(ctx, "org/app", b.Digest)
	if err != nil || got.Digest != b.Digest || got.Size != b.Size || time.Since(got.LinkedAt) > time.Minute {
		t.Fatalf("RepositoryBlob = %+v, %v", got, err)
	}
	if _, err := db.Blobs().RepositoryBlob(ctx, "org/other", b.Digest); !errors.Is(err, meta.ErrBlobNotFound) {
		t.Fatalf("blob visible from an unlinked repository: %v", err)
	}
	if _, err := db.Blobs().StoredBlob(ctx, b.Digest); err != nil {
		t.Fatal(err)
	}
	db.Blobs().StoreBlob(ctx, "org/other", b, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes)
	repos, _ := db.Blobs().RepositoriesWithBlob(ctx, b.Digest, 10)
	if !reflect.DeepEqual(repos, []string{"org/app", "org/other"}) {
		t.Fatalf("RepositoriesWithBlob = %v", repos)
	}
	if err := db.Blobs().UnlinkBlob(ctx, "org/app", b.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Blobs().RepositoryBlob(ctx, "org/app", b.Digest); !errors.Is(err, meta.ErrBlobNotFound) {
		t.Fatalf("after unlink: %v", err)
	}
	if err := db.Blobs().UnlinkBlob(ctx, "org/app", b.Digest); !errors.Is(err, meta.ErrBlobNotFound) {
		t.Fatalf("second unlink: %v", err)
	}
	if got := kinds(t, db); !reflect.DeepEqual(got, []string{"repo_created", "repo_created"}) {
		t.Fatalf("events = %v", got)
	}
}

func testUploads(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	u := meta.Upload{ID: "0b6a7a4e-7d0c-4a53-a1a6-111111111111", Repository: "app", HashState: []byte{1}}
	if err := db.Uploads().CreateUpload(ctx, u, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Uploads().GetUpload(ctx, "other", u.ID); !errors.Is(err, meta.ErrUploadNotFound) {
		t.Fatalf("upload visible from another repository: %v", err)
	}
	claimed, err := db.Uploads().ClaimUpload(ctx, "app", u.ID, time.Minute)
	if err != nil || claimed.Size != 0 || claimed.Claim == 0 {
		t.Fatalf("ClaimUpload = %+v, %v", claimed, err)
	}
	if _, err := db.Uploads().ClaimUpload(ctx, "app", u.ID, time.Minute); !errors.Is(err, meta.ErrUploadBusy) {
		t.Fatalf("second claim: %v, want ErrUploadBusy", err)
	}
	if _, err := db.Uploads().ClaimUpload(ctx, "other", u.ID, time.Minute); !errors.Is(err, meta.ErrUploadNotFound) {
		t.Fatalf("claim from another repository: %v, want ErrUploadNotFound", err)
	}
	renewed, err := db.Uploads().RenewUpload(ctx, u.ID, claimed.Claim, time.Minute)
	if err != nil || renewed <= claimed.Claim {
		t.Fatalf("RenewUpload = %d, %v", renewed, err)
	}
	if _, err := db.Uploads().RenewUpload(ctx, u.ID, claimed.Claim, time.Minute); !errors.Is(err, meta.ErrUploadClaimLost) {
		t.Fatalf("renew with a stale claim: %v, want ErrUploadClaimLost", err)
	}
	if err := db.Uploads().AdvanceUpload(ctx, u.ID, claimed.Claim, 0, 100, []byte{2}, nil); !errors.Is(err, meta.ErrUploadConflict) {
		t.Fatalf("advance with a stale claim: %v, want ErrUploadConflict", err)
	}
	if err := db.Uploads().AdvanceUpload(ctx, u.ID, renewed, 0, 100, []byte{2}, []byte(`{"uploadId":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if err := db.Uploads().AdvanceUpload(ctx, u.ID, renewed, 0, 50, []byte{3}, nil); !errors.Is(err, meta.ErrUploadConflict) {
		t.Fatalf("stale advance: %v, want ErrUploadConflict", err)
	}
	// Advancing ends the claim; a claim whose lease ran out is free (a
	// writer that died), and its holder can no longer advance.
	dead, err := db.Uploads().ClaimUpload(ctx, "app", u.ID, time.Microsecond)
	if err != nil {
		t.Fatalf("claim after advance: %v", err)
	}
	time.Sleep(2 * time.Millisecond)
	taken, err := db.Uploads().ClaimUpload(ctx, "app", u.ID, time.Minute)
	if err != nil {
		t.Fatalf("claim after an expired lease: %v", err)
	}
	if string(taken.StorageState) != `{"uploadId":"x"}` {
		t.Fatalf("claimed upload's storage state = %q, want the one advanced to", taken.StorageState)
	}
	if err := db.Uploads().AdvanceUpload(ctx, u.ID, dead.Claim, 100, 200, []byte{4}, nil); !errors.Is(err, meta.ErrUploadConflict) {
		t.Fatalf("advance by the dead claim: %v, want ErrUploadConflict", err)
	}
	if err := db.Uploads().ReleaseUpload(ctx, u.ID, dead.Claim); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Uploads().ClaimUpload(ctx, "app", u.ID, time.Minute); !errors.Is(err, meta.ErrUploadBusy) {
		t.Fatalf("a stale release freed the live claim: %v", err)
	}
	if err := db.Uploads().ReleaseUpload(ctx, u.ID, taken.Claim); err != nil {
		t.Fatal(err)
	}
	got, err := db.Uploads().GetUpload(ctx, "app", u.ID)
	if err != nil || got.Size != 100 || !reflect.DeepEqual(got.HashState, []byte{2}) || string(got.StorageState) != `{"uploadId":"x"}` {
		t.Fatalf("GetUpload = %+v, %v", got, err)
	}
	// The blob is recorded, and the session removed, only by the
	// session's claim holder: a claim that ran out and was taken over
	// may have lost the session to bytes written since.
	stale, err := db.Uploads().ClaimUpload(ctx, "app", u.ID, time.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	finisher, err := db.Uploads().ClaimUpload(ctx, "app", u.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Blobs().StoreBlob(ctx, "app", blobOf("x"), meta.UploadClaim{ID: u.ID, Claim: stale.Claim}, meta.Writer{}, metatest.NoBytes); !errors.Is(err, meta.ErrUploadClaimLost) {
		t.Fatalf("a lost claim finished the upload: %v", err)
	}
	if _, err := db.Blobs().StoredBlob(ctx, blobOf("x").Digest); !errors.Is(err, meta.ErrBlobNotFound) {
		t.Fatalf("the lost claim's blob was recorded: %v", err)
	}
	if _, err := db.Blobs().StoreBlob(ctx, "app", blobOf("x"), meta.UploadClaim{ID: u.ID, Claim: finisher.Claim}, meta.Writer{}, metatest.NoBytes); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Uploads().GetUpload(ctx, "app", u.ID); !errors.Is(err, meta.ErrUploadNotFound) {
		t.Fatalf("upload survived its blob's link: %v", err)
	}
	if err := db.Uploads().DeleteUpload(ctx, u.ID, 0); !errors.Is(err, meta.ErrUploadNotFound) {
		t.Fatalf("delete of finished upload: %v", err)
	}
}

func testMissingRefs(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	cfg, layer := blobOf("cfg"), blobOf("layer")
	db.Blobs().StoreBlob(ctx, "app", cfg, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes)
	m := manifestOf("m1")
	err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "app", Manifest: m, Tag: "v1",
		Refs: []meta.Ref{{Digest: cfg.Digest}, {Digest: layer.Digest}, {Digest: digest.FromString("child"), IsManifest: true}}})
	var missing *meta.MissingRefsError
	if !errors.As(err, &missing) || len(missing.Missing) != 2 {
		t.Fatalf("PutManifest = %v, want 2 missing refs", err)
	}
	if _, err := db.Manifests().GetManifest(ctx, "app", "v1", "", true); !errors.Is(err, meta.ErrManifestNotFound) {
		t.Fatalf("tag exists after a refused push: %v", err)
	}
	if _, err := db.Manifests().GetManifest(ctx, "app", "", m.Digest, true); !errors.Is(err, meta.ErrManifestNotFound) {
		t.Fatalf("manifest exists after a refused push: %v", err)
	}
	for _, k := range kinds(t, db) {
		if k == meta.EventRepoPush {
			t.Fatal("repo_push event for a refused push")
		}
	}
}

func testManifestTags(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	cfg := blobOf("cfg")
	db.Blobs().StoreBlob(ctx, "app", cfg, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes)
	m1, m2 := manifestOf("m1"), manifestOf("m2")
	refs := []meta.Ref{{Digest: cfg.Digest}}
	for _, p := range []meta.PutManifest{
		{Repository: "app", Manifest: m1, Refs: refs, Tag: "latest", Actor: "alice"},
		{Repository: "app", Manifest: m1, Refs: refs, Tag: "latest"}, // no change
		{Repository: "app", Manifest: m2, Refs: refs, Tag: "latest"}, // tag moves
	} {
		if err := db.Manifests().PutManifest(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.Manifests().GetManifest(ctx, "app", "latest", "", true)
	if err != nil || got.Digest != m2.Digest || string(got.Content) != "m2" || got.Size != 2 {
		t.Fatalf("GetManifest(latest) = %+v, %v", got, err)
	}
	head, err := db.Manifests().GetManifest(ctx, "app", "", m1.Digest, false)
	if err != nil || head.Content != nil || head.MediaType != m1.MediaType {
		t.Fatalf("GetManifest(digest, no content) = %+v, %v", head, err)
	}
	evs, _ := db.Outbox().EventsAfter(ctx, 0, 100)
	var pushes []string
	for _, e := range evs {
		if e.Kind == meta.EventRepoPush {
			var d struct {
				Digest      string   `json:"digest"`
				UpdatedTags []string `json:"updated_tags"`
			}
			json.Unmarshal(e.Data, &d)
			pushes = append(pushes, fmt.Sprintf("%s:%v", d.Digest[7:11], d.UpdatedTags))
		}
	}
	want := []string{m1.Digest.Encoded()[:4] + ":[latest]", m2.Digest.Encoded()[:4] + ":[latest]"}
	if !reflect.DeepEqual(pushes, want) {
		t.Fatalf("repo_push events = %v, want %v (one per observable change)", pushes, want)
	}
	if evs[1].Actor != "alice" {
		t.Fatalf("actor = %q", evs[1].Actor)
	}
	audit, _ := db.Access().AuditLog(ctx, "app", 0, 10)
	if len(audit) != 3 || audit[2].Kind != meta.EventRepoCreated || audit[1].Kind != meta.EventRepoPush || audit[1].Actor != "alice" {
		t.Fatalf("audit log = %+v, want the repository creation and both pushes with their actor", audit)
	}
}

func testOrdering(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	cfg := blobOf("cfg")
	tags := []string{"v1.9", "v1.10", "Latest", "latest", "_x", "0"}
	for i, tag := range tags {
		repo := fmt.Sprintf("r%d/app", i)
		db.Blobs().StoreBlob(ctx, repo, cfg, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes)
		db.Blobs().LinkBlob(ctx, "app", cfg, meta.UploadClaim{}, meta.Writer{})
		m := manifestOf("m" + tag)
		if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "app", Manifest: m, Refs: []meta.Ref{{Digest: cfg.Digest}}, Tag: tag}); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := db.Manifests().ListTags(ctx, "app", "", 100)
	want := []string{"0", "Latest", "_x", "latest", "v1.10", "v1.9"} // bytewise
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ListTags = %v, want %v", got, want)
	}
	page, _ := db.Manifests().ListTags(ctx, "app", "_x", 2)
	if !reflect.DeepEqual(page, []string{"latest", "v1.10"}) {
		t.Fatalf("page after _x = %v", page)
	}
	if _, err := db.Manifests().ListTags(ctx, "nope", "", 10); !errors.Is(err, meta.ErrRepositoryNotFound) {
		t.Fatalf("ListTags unknown repo: %v", err)
	}
	repos, _ := db.Repositories().ListRepositories(ctx, "r2/app", 3)
	if !reflect.DeepEqual(repos, []string{"r3/app", "r4/app", "r5/app"}) {
		t.Fatalf("ListRepositories = %v", repos)
	}
}

func testDeletes(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	cfg := blobOf("cfg")
	db.Blobs().StoreBlob(ctx, "app", cfg, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes)
	m := manifestOf("m")
	refs := []meta.Ref{{Digest: cfg.Digest}}
	db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "app", Manifest: m, Refs: refs, Tag: "a"})
	db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "app", Manifest: m, Refs: refs, Tag: "b"})
	if err := db.Manifests().DeleteTag(ctx, "app", "a", "bob"); err != nil {
		t.Fatal(err)
	}
	if err := db.Manifests().DeleteTag(ctx, "app", "a", "bob"); !errors.Is(err, meta.ErrManifestNotFound) {
		t.Fatalf("second tag delete: %v", err)
	}
	if _, err := db.Manifests().GetManifest(ctx, "app", "", m.Digest, false); err != nil {
		t.Fatalf("manifest gone with its tag: %v", err)
	}
	if err := db.Manifests().DeleteManifest(ctx, "app", m.Digest, "bob"); err != nil {
		t.Fatal(err)
	}
	if tags, _ := db.Manifests().ListTags(ctx, "app", "", 10); len(tags) != 0 {
		t.Fatalf("tags survive their manifest: %v", tags)
	}
	if err := db.Manifests().DeleteManifest(ctx, "app", m.Digest, "bob"); !errors.Is(err, meta.ErrManifestNotFound) {
		t.Fatalf("second manifest delete: %v", err)
	}
	k := kinds(t, db)
	if k[len(k)-2] != meta.EventTagDeleted || k[len(k)-1] != meta.EventManifestDeleted {
		t.Fatalf("events = %v", k)
	}
	// The manifest can be pushed again after its deletion.
	if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "app", Manifest: m, Refs: refs, Tag: "c"}); err != nil {
		t.Fatal(err)
	}
}

func testReferrers(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	cfg := blobOf("cfg")
	db.Blobs().StoreBlob(ctx, "app", cfg, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes)
	subject := digest.FromString("not pushed yet")
	refs := []meta.Ref{{Digest: cfg.Digest}}
	for i, at := range []string{"application/vnd.example.sbom", "application/vnd.example.sig", "application/vnd.example.sbom"} {
		m := manifestOf(fmt.Sprint("ref", i))
		m.ArtifactType, m.Subject = at, subject
		m.Annotations = map[string]string{"n": fmt.Sprint(i)}
		if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "app", Manifest: m, Refs: refs}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := db.Manifests().Referrers(ctx, "app", subject, "")
	if err != nil || len(all) != 3 {
		t.Fatalf("Referrers = %d, %v", len(all), err)
	}
	sboms, _ := db.Manifests().Referrers(ctx, "app", subject, "application/vnd.example.sbom")
	if len(sboms) != 2 || sboms[0].Annotations["n"] == "" {
		t.Fatalf("filtered referrers = %+v", sboms)
	}
	if none, _ := db.Manifests().Referrers(ctx, "other", subject, ""); len(none) != 0 {
		t.Fatalf("referrers leak across repositories: %v", none)
	}
}

func testConcurrent(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	cfg := blobOf("cfg")
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := db.Blobs().StoreBlob(ctx, "race/app", cfg, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
				errs <- fmt.Errorf("link: %w", err)
				return
			}
			m := manifestOf(fmt.Sprint("m", i))
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "race/app", Manifest: m, Refs: []meta.Ref{{Digest: cfg.Digest}}, Tag: "latest"}); err != nil {
				errs <- fmt.Errorf("put: %w", err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := db.Manifests().GetManifest(ctx, "race/app", "latest", "", true)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != digest.FromBytes(got.Content) {
		t.Fatal("tag points at a manifest whose content does not match")
	}
	repos, _ := db.Repositories().ListRepositories(ctx, "", 10)
	if !reflect.DeepEqual(repos, []string{"race/app"}) {
		t.Fatalf("repositories = %v (exactly one expected)", repos)
	}
	created := 0
	for _, k := range kinds(t, db) {
		if k == meta.EventRepoCreated {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("%d repo_created events, want 1", created)
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	ctx := context.Background()
	dsn := t.TempDir() + "/m.db"
	for i := 0; i < 2; i++ {
		db, err := meta.Open(ctx, dsn)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if _, err := db.Blobs().StoreBlob(ctx, "app", blobOf(fmt.Sprint(i)), meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
}

func TestDeletedUserLosesTokens(t *testing.T) {
	ctx := context.Background()
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			db := metatest.Open(t, d)
			if _, err := db.Users().CreateUser(ctx, meta.User{Username: "bob", SecretHash: "x"}); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: "bobs", SecretHash: "h", Scopes: json.RawMessage(`[]`), CreatedBy: "bob"}); err != nil {
				t.Fatal(err)
			}
			if err := db.Users().DeleteUser(ctx, "bob"); err != nil {
				t.Fatal(err)
			}
			tok, err := db.Access().AccessTokenByName(ctx, "bobs")
			if err != nil || tok.RevokedAt.IsZero() || tok.CreatedBy == "bob" {
				t.Fatalf("token of a deleted user: %+v, %v", tok, err)
			}
			// A new bob does not inherit it.
			db.Users().CreateUser(ctx, meta.User{Username: "bob", SecretHash: "y"})
			if tok, _ := db.Access().AccessTokenByName(ctx, "bobs"); tok.CreatedBy == "bob" {
				t.Fatal("a new user of the same name owns the old token")
			}
		})
	}
}
