package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/ingest"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
)

const repo = "org/app"

// env is an ingester over a fresh store of one dialect, with "upstream"
// content (blobs and manifests by digest) that tests put into repositories.
type env struct {
	t     testing.TB
	db    *meta.DB
	store storage.Driver
	in    *ingest.Ingester
	// upstream holds bodies by digest, for the Fetch tests.
	upstream map[digest.Digest][]byte
}

func newEnv(t testing.TB, dialect string, opts ingest.Options) *env {
	t.Helper()
	db := metatest.Open(t, dialect)
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if opts.Policy.Allowed == nil {
		opts.Policy = oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	}
	e := &env{t: t, db: db, store: driver, upstream: map[digest.Digest][]byte{}}
	e.in = ingest.New(e.stores(), driver, opts)
	return e
}

func (e *env) stores() ingest.Stores {
	return ingest.Stores{Manifests: e.db.Manifests(), Cache: e.db.ProxyCaches(), Blobs: e.db.Blobs()}
}

// blob records content as upstream's and returns its descriptor.
func (e *env) blob(mediaType, content string) map[string]any {
	d := digest.FromString(content)
	e.upstream[d] = []byte(content)
	return map[string]any{"mediaType": mediaType, "digest": d, "size": len(content)}
}

// link stores an upstream blob and links it to the repository.
func (e *env) link(r string, d digest.Digest) error {
	content, ok := e.upstream[d]
	if !ok {
		e.t.Fatalf("no upstream content for %s", d)
	}
	_, err := e.db.Blobs().StoreBlob(context.Background(), r, meta.Blob{Digest: d, Size: int64(len(content))}, meta.UploadClaim{}, meta.Writer{},
		storage.Content(e.store, content, d))
	return err
}

func (e *env) mustLink(r string, descs ...map[string]any) {
	e.t.Helper()
	for _, d := range descs {
		if err := e.link(r, d["digest"].(digest.Digest)); err != nil {
			e.t.Fatal(err)
		}
	}
}

func body(t testing.TB, m map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func image(config map[string]any, layers ...map[string]any) map[string]any {
	if layers == nil {
		layers = []map[string]any{}
	}
	return map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageManifest, "config": config, "layers": layers}
}

func index(children ...map[string]any) map[string]any {
	return map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageIndex, "manifests": children}
}

func with(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// manifest records a manifest body as upstream's and returns its
// descriptor.
func (e *env) manifest(m map[string]any) map[string]any {
	b := body(e.t, m)
	d := digest.FromBytes(b)
	e.upstream[d] = b
	return map[string]any{"mediaType": m["mediaType"], "digest": d, "size": len(b)}
}

var emptyConfig = map[string]any{"mediaType": oci.MediaTypeEmptyJSON, "digest": oci.EmptyJSONDigest, "size": 2}

// stored reports whether the repository has the manifest.
func (e *env) stored(r string, d digest.Digest) bool {
	_, err := e.db.Manifests().GetManifest(context.Background(), r, "", d, false)
	if err != nil && !errors.Is(err, meta.ErrManifestNotFound) {
		e.t.Fatal(err)
	}
	return err == nil
}

func (e *env) repositories() []string {
	rs, err := e.db.Repositories().ListRepositories(context.Background(), "", 100)
	if err != nil {
		e.t.Fatal(err)
	}
	return rs
}

// TestRefusals: every refusal is its own error type, and a refused
// manifest leaves nothing behind, not even its repository.
func TestRefusals(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, ingest.Options{MaxBytes: 1024})
			ctx := context.Background()
			cfg := e.blob(oci.MediaTypeImageConfig, `{"architecture":"amd64"}`)
			layer := e.blob(oci.MediaTypeLayerGzip, "layer")
			e.mustLink("elsewhere", cfg, layer)
			good := body(t, image(cfg, layer))
			big := body(t, with(image(cfg, layer), "annotations", map[string]string{"pad": strings.Repeat("x", 1024)}))
			platform := e.manifest(image(cfg, layer))
			// linked are blobs a case's repository has before its push.
			linked := map[string][]map[string]any{"one digest as a blob and as a manifest": {platform}}
			tests := []struct {
				name  string
				req   ingest.Request
				check func(error) bool
			}{
				{"over the cap", ingest.Request{Body: big}, func(err error) bool {
					var te *ingest.TooLargeError
					return errors.As(err, &te) && te.Size == int64(len(big)) && te.Limit == 1024
				}},
				{"digest mismatch", ingest.Request{Body: good, Digest: digest.FromString("other")}, func(err error) bool {
					var de *ingest.DigestError
					return errors.As(err, &de) && de.Got == digest.FromBytes(good) && errors.Is(err, ingest.ErrDigestMismatch)
				}},
				{"sha512 mismatch", ingest.Request{Body: good, Digest: digest.SHA512.FromString("other")}, func(err error) bool {
					var de *ingest.DigestError
					return errors.As(err, &de) && de.Got == digest.SHA512.FromBytes(good)
				}},
				{"unusable expected digest", ingest.Request{Body: good, Digest: "md5:" + digest.Digest(strings.Repeat("a", 32))}, func(err error) bool {
					var de *ingest.DigestError
					return errors.As(err, &de) && errors.Is(err, oci.ErrInvalidDigest) && !errors.Is(err, ingest.ErrDigestMismatch)
				}},
				{"not JSON", ingest.Request{Body: []byte("not json")}, func(err error) bool {
					var ie *ingest.InvalidError
					return errors.As(err, &ie) && errors.Is(err, oci.ErrInvalidManifest)
				}},
				{"Content-Type disagrees", ingest.Request{Body: good, ContentType: oci.MediaTypeDockerManifest}, func(err error) bool {
					var ie *ingest.InvalidError
					return errors.As(err, &ie)
				}},
				{"schema 1", ingest.Request{Body: []byte(`{"schemaVersion":1,"name":"a","tag":"b","fsLayers":[]}`), ContentType: oci.MediaTypeDockerSchema1Signed}, func(err error) bool {
					var ie *ingest.InvalidError
					return errors.As(err, &ie) && strings.Contains(err.Error(), "schema 1")
				}},
				{"artifact policy", ingest.Request{Body: body(t, image(e.blob("application/vnd.example.weird+json", "{}"), layer))}, func(err error) bool {
					var pe *ingest.PolicyError
					return errors.As(err, &pe) && strings.Contains(err.Error(), "application/vnd.example.weird+json")
				}},
				{"layer the repository lacks", ingest.Request{Body: good}, func(err error) bool {
					var me *meta.MissingRefsError
					return errors.As(err, &me) && me.Count == 2
				}},
				{"child the repository lacks", ingest.Request{Body: body(t, index(e.manifest(image(cfg, layer))))}, func(err error) bool {
					var me *meta.MissingRefsError
					return errors.As(err, &me) && me.Count == 1 && me.Missing[0].IsManifest
				}},
				{"index entry of another media type, as a blob", ingest.Request{Body: body(t, index(e.blob("application/vnd.example.thing", "thing")))}, func(err error) bool {
					var me *meta.MissingRefsError
					return errors.As(err, &me) && me.Count == 1 && !me.Missing[0].IsManifest && strings.Contains(err.Error(), "blob ")
				}},
				// The platform's manifest is in the repository only as a
				// blob: checked as its first kind only, the index was stored
				// and tagged with a platform that cannot be pulled.
				{"one digest as a blob and as a manifest", ingest.Request{Body: body(t, index(
					with(platform, "mediaType", "application/octet-stream"),
					with(platform, "platform", map[string]any{"architecture": "arm64", "os": "linux"})))}, func(err error) bool {
					var ie *ingest.InvalidError
					return errors.As(err, &ie) && errors.Is(err, oci.ErrInvalidManifest) && strings.Contains(err.Error(), "manifests[1]") &&
						strings.Contains(err.Error(), string(platform["digest"].(digest.Digest)))
				}},
				{"empty config supplied, layer still missing", ingest.Request{Body: body(t, with(image(emptyConfig, layer), "artifactType", "application/vnd.example"))}, func(err error) bool {
					var me *meta.MissingRefsError
					return errors.As(err, &me) && me.Count == 1 && me.Missing[0].Digest == layer["digest"]
				}},
				{"Fetch cannot bring it", ingest.Request{Body: good}, nil},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					tt.req.Repository, tt.req.Tags = "refused/"+strings.ReplaceAll(strings.ToLower(tt.name), " ", "-"), []string{"v1"}
					var opts []ingest.Option
					want := tt.check
					if want == nil {
						boom := errors.New("upstream gone")
						opts = append(opts, ingest.Fetch(func(context.Context, oci.Ref) error { return boom }))
						want = func(err error) bool { return err == boom }
					}
					l := linked[tt.name]
					if l != nil {
						e.mustLink(tt.req.Repository, l...)
					}
					_, err := e.in.Ingest(ctx, tt.req, opts...)
					if err == nil || !want(err) {
						t.Fatalf("got %T %v", err, err)
					}
					if rs := e.repositories(); !slices.Contains(rs, "elsewhere") || slices.Contains(rs, tt.req.Repository) != (l != nil) {
						t.Fatalf("a refused manifest left repositories %v", rs)
					}
					if e.stored(tt.req.Repository, digest.FromBytes(tt.req.Body)) {
						t.Fatal("the refused manifest is stored")
					}
				})
			}
		})
	}
}

func TestReadBody(t *testing.T) {
	in := ingest.New(ingest.Stores{}, nil, ingest.Options{MaxBytes: 10})
	var te *ingest.TooLargeError
	if _, err := in.ReadBody(strings.NewReader("x"), 11); !errors.As(err, &te) || te.Size != 11 || te.Error() != "manifest of 11 bytes exceeds the limit of 10 bytes" {
		t.Fatalf("declared over the cap: %v", err)
	}
	if _, err := in.ReadBody(strings.NewReader(strings.Repeat("x", 11)), -1); !errors.As(err, &te) || te.Size != -1 || te.Error() != "manifest exceeds the limit of 10 bytes" {
		t.Fatalf("read over the cap: %v", err)
	}
	if b, err := in.ReadBody(strings.NewReader(strings.Repeat("x", 10)), 10); err != nil || len(b) != 10 {
		t.Fatalf("at the cap: %d bytes, %v", len(b), err)
	}
	// Ingest applies the cap too (bodies not read by ReadBody), by
	// default 4 MiB.
	_, err := ingest.New(ingest.Stores{}, nil, ingest.Options{}).Ingest(context.Background(), ingest.Request{Body: make([]byte, ingest.DefaultMaxBytes+1)})
	if !errors.As(err, &te) || te.Size != ingest.DefaultMaxBytes+1 {
		t.Fatalf("default cap: %v", err)
	}
}

// TestStore: what a push stores, on every database: the digest (the body's
// sha256, or the expected digest's algorithm), the references the store
// records (not the subject, not foreign layers), the tags, one repo_push.
func TestStore(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, ingest.Options{})
			ctx := context.Background()
			cfg := e.blob(oci.MediaTypeImageConfig, `{"architecture":"arm64"}`)
			layer := e.blob(oci.MediaTypeLayerGzip, "layer bytes")
			foreign := e.blob(oci.MediaTypeDockerForeignLayer, "foreign")
			subject := digest.FromString("the subject, never pushed")
			e.mustLink(repo, cfg, layer)
			m := with(image(cfg, layer, foreign), "subject", map[string]any{"mediaType": oci.MediaTypeImageManifest, "digest": subject, "size": 3})
			b := body(t, m)
			res, err := e.in.Ingest(ctx, ingest.Request{Repository: repo, Tags: []string{"v1", "latest"}, Body: b, Actor: "alice"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Manifest.Digest != digest.FromBytes(b) || res.Manifest.Subject != subject || len(res.References) != 4 ||
				res.Parsed.MediaType != oci.MediaTypeImageManifest || !bytes.Equal(res.Manifest.Content, b) {
				t.Fatalf("result %+v", res)
			}
			for _, tag := range []string{"v1", "latest"} {
				got, err := e.db.Manifests().GetManifest(ctx, repo, tag, "", true)
				if err != nil || got.Digest != res.Manifest.Digest || !bytes.Equal(got.Content, b) {
					t.Fatalf("tag %s: %+v %v", tag, got, err)
				}
			}
			for d, want := range map[digest.Digest]bool{cfg["digest"].(digest.Digest): true, layer["digest"].(digest.Digest): true,
				foreign["digest"].(digest.Digest): false, subject: false} {
				size, got, err := e.db.ProxyCaches().ProxyReferenced(ctx, repo, d)
				if err != nil || got != want {
					t.Errorf("reference %s recorded: %v, want %v (%v)", d, got, want, err)
				}
				if desc := map[digest.Digest]map[string]any{cfg["digest"].(digest.Digest): cfg, layer["digest"].(digest.Digest): layer}[d]; desc != nil && fmt.Sprint(size) != fmt.Sprint(desc["size"]) {
					t.Errorf("reference %s: size %d, want the manifest's %v", d, size, desc["size"])
				}
			}
			if refs, err := e.db.Manifests().Referrers(ctx, repo, subject, ""); err != nil || len(refs) != 1 {
				t.Fatalf("referrers of the subject: %v %v", refs, err)
			}
			evs, _ := e.db.Outbox().EventsAfter(ctx, 0, 100)
			var pushes []string
			for _, ev := range evs {
				if ev.Kind == meta.EventRepoPush {
					pushes = append(pushes, ev.Actor+" "+string(ev.Data))
				}
			}
			if len(pushes) != 1 || !strings.HasPrefix(pushes[0], "alice ") || !strings.Contains(pushes[0], `"updated_tags":["v1","latest"]`) {
				t.Fatalf("repo_push events: %v", pushes)
			}
			// The expected digest's algorithm names the manifest.
			b2 := body(t, with(m, "annotations", map[string]string{"n": "2"}))
			want := digest.SHA512.FromBytes(b2)
			if res, err := e.in.Ingest(ctx, ingest.Request{Repository: repo, Body: b2, Digest: want}); err != nil || res.Manifest.Digest != want || !e.stored(repo, want) {
				t.Fatalf("sha512: %+v %v", res.Manifest.Digest, err)
			}
			// An index whose children are in the repository; one entry is
			// not a manifest and is a blob of the repository.
			thing := e.blob("application/vnd.example.thing", "thing")
			e.mustLink(repo, thing)
			idx := body(t, index(map[string]any{"mediaType": oci.MediaTypeImageManifest, "digest": res.Manifest.Digest, "size": len(b)}, thing))
			if res, err := e.in.Ingest(ctx, ingest.Request{Repository: repo, Tags: []string{"multi"}, Body: idx}); err != nil || !e.stored(repo, res.Manifest.Digest) {
				t.Fatalf("index: %v", err)
			}
		})
	}
}

// TestEmptyConfig: the empty descriptor's bytes are supplied by the
// ingest (stored if missing, linked in the manifest's transaction) on
// every way in, and never asked of Fetch.
func TestEmptyConfig(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			for _, way := range []string{"push", "cache", "fetch"} {
				t.Run(way, func(t *testing.T) {
					e := newEnv(t, dialect, ingest.Options{})
					layer := e.blob("text/plain", "report")
					e.mustLink(repo, layer)
					var opts []ingest.Option
					var fetched []digest.Digest
					switch way {
					case "cache":
						opts = append(opts, ingest.Cache(time.Now()))
					case "fetch":
						opts = append(opts, ingest.Fetch(func(_ context.Context, r oci.Ref) error {
							fetched = append(fetched, r.Digest)
							return nil
						}))
					}
					b := body(t, with(image(emptyConfig, layer), "artifactType", "application/vnd.example.report"))
					if _, err := e.in.Ingest(ctx, ingest.Request{Repository: repo, Tags: []string{"r1"}, Body: b}, opts...); err != nil {
						t.Fatal(err)
					}
					if _, err := e.db.Blobs().RepositoryBlob(ctx, repo, oci.EmptyJSONDigest); err != nil {
						t.Fatalf("empty blob not linked: %v", err)
					}
					if got, err := e.store.GetContent(ctx, storage.BlobPath(oci.EmptyJSONDigest)); err != nil || string(got) != "{}" {
						t.Fatalf("empty blob bytes %q %v", got, err)
					}
					if way == "fetch" && (len(fetched) != 1 || fetched[0] != layer["digest"]) {
						t.Fatalf("Fetch asked for %v, want only the layer", fetched)
					}
				})
			}
		})
	}
}

// vanishingBlobs says the empty blob is stored the first time it is asked
// (as if garbage collection took it right after): the link then fails and
// the ingest stores it again, once.
type vanishingBlobs struct {
	meta.Blobs
	lied bool
}

func (v *vanishingBlobs) StoredBlob(ctx context.Context, d digest.Digest) (meta.Blob, error) {
	if !v.lied {
		v.lied = true
		return meta.Blob{Digest: d, Size: 2}, nil
	}
	return v.Blobs.StoredBlob(ctx, d)
}

func TestEmptyConfigCollectedMeanwhile(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, ingest.Options{})
			vb := &vanishingBlobs{Blobs: e.db.Blobs()}
			st := e.stores()
			st.Blobs = vb
			in := ingest.New(st, e.store, ingest.Options{Policy: oci.ArtifactPolicy{AllowV11Artifacts: true}})
			b := body(t, with(image(emptyConfig), "artifactType", "application/vnd.example.empty"))
			if _, err := in.Ingest(ctx, ingest.Request{Repository: repo, Tags: []string{"e"}, Body: b}); err != nil || !vb.lied {
				t.Fatalf("%v (lied: %v)", err, vb.lied)
			}
			if _, err := e.db.Blobs().RepositoryBlob(ctx, repo, oci.EmptyJSONDigest); err != nil {
				t.Fatalf("empty blob not linked: %v", err)
			}
		})
	}
}

// TestCache: the pull-through cache's option stores a manifest before its
// references arrive, records them (the cache serves only what they name)
// and records the tag as checked upstream.
func TestCache(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, ingest.Options{})
			cfg := e.blob(oci.MediaTypeImageConfig, "{}")
			layer := e.blob(oci.MediaTypeLayerGzip, "not here yet")
			child := e.manifest(image(cfg, layer))
			at := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
			for _, tc := range []struct {
				tag  string
				m    map[string]any
				refs []digest.Digest
			}{
				{"img", image(cfg, layer), []digest.Digest{cfg["digest"].(digest.Digest), layer["digest"].(digest.Digest)}},
				{"idx", index(child), []digest.Digest{child["digest"].(digest.Digest)}},
			} {
				b := body(t, tc.m)
				res, err := e.in.Ingest(ctx, ingest.Request{Repository: "hub/app", Tags: []string{tc.tag}, Body: b, Digest: digest.FromBytes(b)}, ingest.Cache(at))
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range tc.refs {
					if _, ok, err := e.db.ProxyCaches().ProxyReferenced(ctx, "hub/app", d); err != nil || !ok {
						t.Fatalf("%s: reference %s not recorded: %v", tc.tag, d, err)
					}
				}
				d, checked, err := e.db.ProxyCaches().ProxyTagChecked(ctx, "hub/app", tc.tag)
				if err != nil || d != res.Manifest.Digest || !checked.Equal(at) {
					t.Fatalf("%s checked: %s at %v (%v), want %s at %v", tc.tag, d, checked, err, res.Manifest.Digest, at)
				}
			}
			// The same ways in refuse as the push does.
			if _, err := e.in.Ingest(ctx, ingest.Request{Repository: "hub/app", Body: []byte("{}"), Digest: digest.FromString("x")}, ingest.Cache(at)); !errors.Is(err, ingest.ErrDigestMismatch) {
				t.Fatalf("digest mismatch through the cache: %v", err)
			}
			// Without a CacheStore the option fails rather than storing
			// unchecked through the push's store.
			in := ingest.New(ingest.Stores{Manifests: e.db.Manifests(), Blobs: e.db.Blobs()}, e.store, ingest.Options{Policy: oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts()}})
			if _, err := in.Ingest(ctx, ingest.Request{Repository: "hub/other", Body: body(t, image(cfg, layer))}, ingest.Cache(at)); err == nil {
				t.Fatal("Cache without a CacheStore stored")
			}
		})
	}
}

// TestFetch: the copier's option asks for every required reference, in
// order, only after every check passed, and the store still checks them.
func TestFetch(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, ingest.Options{})
			cfg := e.blob(oci.MediaTypeImageConfig, `{"os":"linux"}`)
			l1, l2 := e.blob(oci.MediaTypeLayerGzip, "one"), e.blob(oci.MediaTypeLayerGzip, "two")
			foreign := e.blob(oci.MediaTypeDockerForeignLayer, "far away")
			img := image(cfg, l1, l2, l1, foreign)
			child := e.manifest(img)
			thing := e.blob("application/vnd.example.thing", "thing")
			idx := body(t, with(index(child, thing), "subject", child))
			// The fetcher copies like the mirror: children through the
			// ingest, depth first, blobs by linking.
			var asked []string
			var fetch ingest.Option
			fetch = ingest.Fetch(func(ctx context.Context, r oci.Ref) error {
				asked = append(asked, r.Kind.String()+" "+string(e.upstream[r.Digest]))
				if r.IsManifest() {
					_, err := e.in.Ingest(ctx, ingest.Request{Repository: repo, Body: e.upstream[r.Digest], Digest: r.Digest}, fetch)
					return err
				}
				return e.link(repo, r.Digest)
			})
			res, err := e.in.Ingest(ctx, ingest.Request{Repository: repo, Tags: []string{"v1"}, Body: idx, Digest: digest.FromBytes(idx)}, fetch)
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"child " + string(e.upstream[child["digest"].(digest.Digest)]), `config {"os":"linux"}`, "layer one", "layer two", "child thing"}
			if strings.Join(asked, "|") != strings.Join(want, "|") {
				t.Fatalf("Fetch asked for\n%q\nwant\n%q", asked, want)
			}
			if !e.stored(repo, res.Manifest.Digest) || !e.stored(repo, child["digest"].(digest.Digest)) {
				t.Fatal("index or child not stored")
			}
			// Nothing is fetched for a manifest that fails a check.
			asked = nil
			weird := body(t, image(e.blob("application/vnd.example.weird", "w"), l1))
			if _, err := e.in.Ingest(ctx, ingest.Request{Repository: repo, Body: weird}, fetch); err == nil || len(asked) != 0 {
				t.Fatalf("refused manifest: %v, fetched %q", err, asked)
			}
			// A fetcher that does not bring a reference: the store refuses.
			lazy := ingest.Fetch(func(context.Context, oci.Ref) error { return nil })
			missing := e.blob(oci.MediaTypeLayerGzip, "never fetched")
			var me *meta.MissingRefsError
			if _, err := e.in.Ingest(ctx, ingest.Request{Repository: repo, Body: body(t, image(cfg, missing))}, lazy); !errors.As(err, &me) || me.Count != 1 {
				t.Fatalf("unfetched layer: %v", err)
			}
		})
	}
}

// nopManifests stores nothing (the checks' own cost).
type nopManifests struct{}

func (nopManifests) PutManifest(context.Context, meta.PutManifest) error { return nil }

// BenchmarkIngest: an image manifest (config and two layers, linked)
// stored with a tag on SQLite, each iteration a new manifest; and the
// same through a store that does nothing, which is what the checks
// (cap, digest, parse, policy, references) cost.
func BenchmarkIngest(b *testing.B) {
	for _, name := range []string{"sqlite", "checks-only"} {
		b.Run(name, func(b *testing.B) {
			e := newEnv(b, "sqlite", ingest.Options{})
			in := e.in
			if name == "checks-only" {
				in = ingest.New(ingest.Stores{Manifests: nopManifests{}}, e.store,
					ingest.Options{Policy: oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts()}})
			}
			ctx := context.Background()
			cfg := e.blob(oci.MediaTypeImageConfig, `{"architecture":"amd64","os":"linux"}`)
			l1, l2 := e.blob(oci.MediaTypeLayerGzip, "one"), e.blob(oci.MediaTypeLayerGzip, "two")
			e.mustLink(repo, cfg, l1, l2)
			bodies := make([][]byte, b.N)
			for i := range bodies {
				bodies[i] = body(b, with(image(cfg, l1, l2), "annotations", map[string]string{"n": strconv.Itoa(i)}))
			}
			b.ResetTimer()
			for i := range b.N {
				if _, err := in.Ingest(ctx, ingest.Request{Repository: repo, Tags: []string{"latest"}, Body: bodies[i]}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
