package mirror_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// hostile is an upstream (HTTPS, anonymous) serving lib/app from an
// in-memory registry, except what intercept answers itself; read counts
// the bytes Berth read from the bodies of its answers, by kind
// ("manifests", "tags", "other"), under Berth's own limits.
type hostile struct {
	host      string
	transport http.RoundTripper // trusts the server, counts what is read
	base      http.RoundTripper
	intercept atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
	read      map[string]*atomic.Int64
}

func newHostile(t *testing.T) *hostile {
	t.Helper()
	h := &hostile{read: map[string]*atomic.Int64{"manifests": {}, "tags": {}, "other": {}}}
	inner := ggcrregistry.New(ggcrregistry.Logger(stdlog.New(io.Discard, "", 0)))
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := h.intercept.Load(); f != nil && (*f)(w, r) {
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	h.host = strings.TrimPrefix(srv.URL, "https://")
	h.base = srv.Client().Transport
	h.transport = countingTransport{next: h.base, read: h.read}
	return h
}

func (h *hostile) on(f func(w http.ResponseWriter, r *http.Request) bool) { h.intercept.Store(&f) }

func (h *hostile) push(t *testing.T, tag string) string {
	t.Helper()
	img := randomImage(t)
	r, _ := name.ParseReference(h.host + "/lib/app:" + tag)
	if err := remote.Write(r, img, remote.WithTransport(h.base)); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d.String()
}

// countingTransport counts the body bytes read, by kind of request.
type countingTransport struct {
	next http.RoundTripper
	read map[string]*atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	kind := "other"
	switch {
	case strings.Contains(r.URL.Path, "/manifests/"):
		kind = "manifests"
	case strings.HasSuffix(r.URL.Path, "/tags/list"):
		kind = "tags"
	}
	resp.Body = countingBody{ReadCloser: resp.Body, n: c.read[kind]}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// service is a mirror service reaching h, with the robot check's store
// (mirror.ServiceStores.Users) and the given limits.
func (h *hostile) service(t *testing.T, f *mfix, opts mirror.MirrorOptions) *mirror.MirrorService {
	t.Helper()
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	copier := mirror.NewCopier(wire.CopierStores(f.db), driver, policy, 0, log)
	opts.Transport, opts.Tries, opts.RetryBase, opts.Logger = h.transport, 1, time.Millisecond, log
	stores := wire.MirrorStores(f.db)
	stores.Users = f.db.Users()
	return mirror.NewMirrorService(stores, copier, f.sealer, opts)
}

func (h *hostile) mirror(t *testing.T, f *mfix) {
	t.Helper()
	m := meta.Mirror{Repository: mrepo, Enabled: true, ExternalReference: h.host + "/lib/app", VerifyTLS: true, SyncInterval: time.Hour,
		SyncStartDate: time.Now().Add(time.Hour), RootRule: meta.MirrorRule{Kind: "tag_glob_csv", Value: []string{"*"}},
		RobotUsername: "acme+mirror"}
	if err := f.db.Mirrors().CreateMirror(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// tagPage answers a tag list page, with a Link to next unless it is "".
func tagPage(w http.ResponseWriter, tags []string, next string) {
	if next != "" {
		w.Header().Set("Link", fmt.Sprintf(`<%s>; rel="next"`, next))
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"name": "lib/app", "tags": tags})
}

// TestMirrorTagListingIsBounded: an upstream's tag listing costs a sync
// bounded memory and time, whatever the upstream answers. A Link chain
// without end, more tags than a mirror takes, and a page over 8 MiB each
// end the sync FAIL with last_error saying which limit, after reading no
// more than the limit; a normal paginated listing mirrors every tag.
func TestMirrorTagListingIsBounded(t *testing.T) {
	ctx := context.Background()
	const pageLimit, tagLimit = 20, 100
	for _, c := range []struct {
		name   string
		answer func(w http.ResponseWriter, r *http.Request, page int)
		want   string
	}{
		{"endless Link chain", func(w http.ResponseWriter, r *http.Request, page int) {
			next := fmt.Sprintf("/v2/lib/app/tags/list?last=t%d", page)
			if page > 1000 { // a test bound: "endless" to any limit below it
				next = ""
			}
			tagPage(w, []string{fmt.Sprintf("t%d", page)}, next)
		}, fmt.Sprintf("tag list goes on past %d pages", pageLimit)},
		{"too many tags", func(w http.ResponseWriter, r *http.Request, page int) {
			var tags []string
			for i := range 60 {
				tags = append(tags, fmt.Sprintf("p%d-%d", page, i))
			}
			next := fmt.Sprintf("/v2/lib/app/tags/list?last=p%d", page)
			if page == 3 {
				next = ""
			}
			tagPage(w, tags, next)
		}, fmt.Sprintf("lists more than %d tags", tagLimit)},
		{"oversized page", func(w http.ResponseWriter, r *http.Request, page int) {
			// 16 MiB of tags, streamed without a Content-Length.
			io.WriteString(w, `{"name":"lib/app","tags":["a"`)
			chunk := strings.Repeat(`,"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"`, 1024) // 64 KiB
			for range 256 {
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
			io.WriteString(w, `]}`)
		}, "tag list page exceeds the limit of 8388608 bytes"},
		{"oversized page declared", func(w http.ResponseWriter, r *http.Request, page int) {
			w.Header().Set("Content-Length", fmt.Sprint(16<<20))
			w.Write(make([]byte, 16<<20))
		}, "tag list page of 16777216 bytes exceeds the limit of 8388608 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newMirrorFixture(t)
			h := newHostile(t)
			h.push(t, "t1")
			var pages atomic.Int64
			h.on(func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path != "/v2/lib/app/tags/list" {
					return false
				}
				c.answer(w, r, int(pages.Add(1)))
				return true
			})
			h.mirror(t, f)
			svc := h.service(t, f, mirror.MirrorOptions{MaxTags: tagLimit, MaxTagPages: pageLimit})
			if err := svc.Sync(ctx, mrepo); err != nil {
				t.Fatal(err)
			}
			st := f.status(t)
			if st.Status != meta.MirrorFail || !strings.Contains(st.LastError, c.want) {
				t.Fatalf("sync: %s %q, want FAIL saying %q", st.Status, st.LastError, c.want)
			}
			t.Logf("last_error: %s", st.LastError)
			if n := pages.Load(); n > pageLimit {
				t.Errorf("%d tag list pages read, limit %d", n, pageLimit)
			}
			if n := h.read["tags"].Load(); n > mirror.MaxTagListBytes+1 {
				t.Errorf("%d bytes of tag list read, limit %d", n, mirror.MaxTagListBytes)
			}
			if tags := f.localTags(t); len(tags) != 0 {
				t.Errorf("a failed listing synced tags %v", tags)
			}
		})
	}
	t.Run("paginated", func(t *testing.T) {
		f := newMirrorFixture(t)
		h := newHostile(t)
		want := map[string]string{}
		var all []string
		for i := range 5 {
			tag := fmt.Sprintf("v%d", i)
			want[tag] = h.push(t, tag)
			all = append(all, tag)
		}
		h.on(func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/v2/lib/app/tags/list" {
				return false
			}
			// Two tags a page, after "last".
			from := 0
			if last := r.URL.Query().Get("last"); last != "" {
				fmt.Sscanf(last, "v%d", &from)
				from++
			}
			to, next := min(from+2, len(all)), ""
			if to < len(all) {
				next = "/v2/lib/app/tags/list?last=" + all[to-1]
			}
			tagPage(w, all[from:to], next)
			return true
		})
		h.mirror(t, f)
		svc := h.service(t, f, mirror.MirrorOptions{MaxTags: tagLimit, MaxTagPages: pageLimit})
		if err := svc.Sync(ctx, mrepo); err != nil {
			t.Fatal(err)
		}
		if st := f.status(t); st.Status != meta.MirrorSuccess {
			t.Fatalf("paginated sync: %s %q", st.Status, st.LastError)
		}
		got := f.localTags(t)
		for tag, d := range want {
			if got[tag] != d {
				t.Errorf("tag %s: %q, want %s (all: %v)", tag, got[tag], d, got)
			}
		}
	})
}

// TestMirrorSyncDeadline: a sync has an end whatever its upstream does:
// one whose upstream never answers its tag listing fails when its time is
// up, saying so, and its job ends.
func TestMirrorSyncDeadline(t *testing.T) {
	f := newMirrorFixture(t)
	h := newHostile(t)
	h.push(t, "v1")
	h.on(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/lib/app/tags/list" {
			return false
		}
		select { // accepts, never answers (a test bound of 20s)
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
			tagPage(w, []string{"v1"}, "")
		}
		return true
	})
	h.mirror(t, f)
	svc := h.service(t, f, mirror.MirrorOptions{SyncTimeout: 500 * time.Millisecond})
	if err := svc.Sync(context.Background(), mrepo); err != nil {
		t.Fatal(err)
	}
	st := f.status(t)
	if st.Status != meta.MirrorFail || !strings.Contains(st.LastError, "did not finish within 500ms") {
		t.Fatalf("sync past its deadline: %s %q, want FAIL saying it did not finish", st.Status, st.LastError)
	}
}

// TestMirrorManifestOverCapIsNotRead: an upstream manifest over
// registry.maxManifestBytes (4 MiB by default) is refused as it is read,
// not after go-containerregistry read up to 100 MiB of it, having read no
// more than the limit and a byte: the sync skips the tag, its message
// saying the manifest exceeds the limit, and an import fails saying so.
func TestMirrorManifestOverCapIsNotRead(t *testing.T) {
	const size = 10 << 20
	body := make([]byte, size)
	d := digest.FromBytes(body)
	for _, declared := range []bool{false, true} {
		t.Run(fmt.Sprintf("content-length %v", declared), func(t *testing.T) {
			ctx := context.Background()
			f := newMirrorFixture(t)
			h := newHostile(t)
			h.on(func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == "/v2/lib/app/tags/list" {
					tagPage(w, []string{"big"}, "")
					return true
				}
				if !strings.HasPrefix(r.URL.Path, "/v2/lib/app/manifests/") {
					return false
				}
				w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
				w.Header().Set("Docker-Content-Digest", d.String())
				if declared || r.Method == http.MethodHead {
					w.Header().Set("Content-Length", fmt.Sprint(size))
				}
				if r.Method == http.MethodHead {
					return true
				}
				for off := 0; off < size; off += 64 << 10 {
					if _, err := w.Write(body[off : off+64<<10]); err != nil {
						return true
					}
				}
				return true
			})
			h.mirror(t, f)
			svc := h.service(t, f, mirror.MirrorOptions{})
			if err := svc.Sync(ctx, mrepo); err != nil {
				t.Fatal(err)
			}
			// Refused as every sync would refuse it: the tag is skipped,
			// and the sync's message says why.
			st := f.status(t)
			ev := f.events(t, meta.EventMirrorSyncSuccess)
			var data map[string]string
			if len(ev) == 1 {
				json.Unmarshal(ev[0].Data, &data)
			}
			if st.Status != meta.MirrorSuccess || !strings.Contains(data["message"], "big (") ||
				!strings.Contains(data["message"], "exceeds the limit of 4194304 bytes") || f.localTags(t)["big"] != "" {
				t.Fatalf("sync of a 10 MiB manifest: %s %q, want SUCCESS skipping big as over the limit", st.Status, data["message"])
			}
			t.Logf("message: %s", data["message"])
			if n := h.read["manifests"].Load(); n > 4<<20+1 {
				t.Errorf("the sync read %d bytes of the manifest, past the 4 MiB limit", n)
			}
			// An import goes the same way.
			h.read["manifests"].Store(0)
			driver, _ := fs.New(t.TempDir(), fs.Options{})
			policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
			copier := mirror.NewCopier(wire.CopierStores(f.db), driver, policy, 0, nil)
			_, _, err := copier.Import(ctx, mirror.ImportRequest{Source: h.host + "/lib/app:big", Repo: "acme/imported", Tags: []string{"big"},
				Transport: h.transport, Actor: "acme"})
			if err == nil || !strings.Contains(err.Error(), "exceeds the limit of 4194304 bytes") {
				t.Errorf("import of a 10 MiB manifest: %v, want it refused as over the limit", err)
			}
			if n := h.read["manifests"].Load(); n > 4<<20+1 {
				t.Errorf("the import read %d bytes of the manifest, past the 4 MiB limit", n)
			}
		})
	}
}

// TestMirrorRobotMustBeActive: a sync writes as the mirror's robot, so
// it syncs nothing when the robot may not act: the user owning it is
// disabled (docs/access.md: a disabled user's robots are refused from
// their next request on), or the robot is gone. The sync ends FAIL saying
// why; enabled again, the next sync copies.
func TestMirrorRobotMustBeActive(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	h := newHostile(t)
	d := h.push(t, "v1")
	h.mirror(t, f)
	svc := h.service(t, f, mirror.MirrorOptions{})
	off, on := false, true
	if _, err := f.db.Users().UpdateUser(ctx, "acme", meta.UserChange{Enabled: &off}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	st := f.status(t)
	if st.Status != meta.MirrorFail || !strings.Contains(st.LastError, "acme+mirror is disabled") {
		t.Errorf("sync as a disabled user's robot: %s %q, want FAIL saying the robot is disabled", st.Status, st.LastError)
	}
	if tags := f.localTags(t); len(tags) != 0 {
		t.Fatalf("a disabled user's robot synced %v", tags)
	}
	if _, err := f.db.Users().UpdateUser(ctx, "acme", meta.UserChange{Enabled: &on}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	if st := f.status(t); st.Status != meta.MirrorSuccess || f.localTags(t)["v1"] != d {
		t.Fatalf("sync once enabled again: %s %q, tags %v", st.Status, st.LastError, f.localTags(t))
	}
	// A robot that does not exist: nothing more is synced.
	h.push(t, "v2")
	m := f.status(t)
	m.RobotUsername = "acme+gone"
	if err := f.db.Mirrors().UpdateMirror(ctx, m, false); err != nil {
		t.Fatal(err)
	}
	if err := svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	if st := f.status(t); st.Status != meta.MirrorFail || !strings.Contains(st.LastError, "does not exist") || f.localTags(t)["v2"] != "" {
		t.Fatalf("sync as a deleted robot: %s %q, tags %v", st.Status, st.LastError, f.localTags(t))
	}
}

// TestMirrorSyncStopsWhenItsRobotIsDisabled: a sync in flight when its
// robot's owner is disabled stops before its next write and fails saying
// why; before, it went on writing as the disabled account until it ended.
func TestMirrorSyncStopsWhenItsRobotIsDisabled(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	h := newHostile(t)
	h.push(t, "v1")
	listing := make(chan struct{})
	var once sync.Once
	h.on(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/lib/app/tags/list" {
			return false
		}
		once.Do(func() { close(listing) })
		select { // answers only once the sync was stopped (a test bound of 20s)
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
			tagPage(w, []string{"v1"}, "")
		}
		return true
	})
	h.mirror(t, f)
	svc := h.service(t, f, mirror.MirrorOptions{CancelPoll: 50 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- svc.Sync(ctx, mrepo) }()
	<-listing
	off := false
	if _, err := f.db.Users().UpdateUser(ctx, "acme", meta.UserChange{Enabled: &off}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the sync went on after its robot's owner was disabled")
	}
	if st := f.status(t); st.Status != meta.MirrorFail || !strings.Contains(st.LastError, "is disabled") {
		t.Fatalf("sync stopped by a disabled robot: %s %q, want FAIL saying the robot is disabled", st.Status, st.LastError)
	}
	if tags := f.localTags(t); len(tags) != 0 {
		t.Fatalf("the stopped sync wrote %v", tags)
	}
}
