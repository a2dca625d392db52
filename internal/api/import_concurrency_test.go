package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/wire"
)

// hangingUpstream answers /v2/ and holds every other request for a
// repository until the test releases that repository (then 404) or ends.
type hangingUpstream struct {
	mu       sync.Mutex
	release  map[string]chan struct{}
	arrived  map[string]chan struct{}
	stop     chan struct{}
	upstream string
}

func (h *hangingUpstream) chans(repo string) (release, arrived chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.release[repo] == nil {
		h.release[repo], h.arrived[repo] = make(chan struct{}), make(chan struct{})
	}
	return h.release[repo], h.arrived[repo]
}

func (h *hangingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" {
		return
	}
	repo := strings.TrimPrefix(r.URL.Path, "/v2/")
	if i := strings.Index(repo, "/manifests/"); i >= 0 {
		repo = repo[:i]
	}
	release, arrived := h.chans(repo)
	h.mu.Lock()
	select {
	case <-arrived:
	default:
		close(arrived)
	}
	h.mu.Unlock()
	select {
	case <-release:
	case <-h.stop:
	case <-r.Context().Done():
	}
	http.NotFound(w, r)
}

// TestImportConcurrencyLimit: a caller may run 4 imports at once; the 5th,
// while 4 hang on a slow upstream, is refused with 429, a Retry-After and
// a Quay-shaped message, before anything is created; once one of the 4
// ends, a new one is accepted. Another user is not held up by alice's.
func TestImportConcurrencyLimit(t *testing.T) {
	imp := &copierImporter{}
	opts := testenv.Options{}
	opts.API.Importer = imp
	e := newOrgEnvWith(t, opts)
	e.user("alice", false)
	e.user("bob", false)
	h := &hangingUpstream{release: map[string]chan struct{}{}, arrived: map[string]chan struct{}{}, stop: make(chan struct{})}
	up := httptest.NewTLSServer(h)
	t.Cleanup(up.Close)
	h.upstream = strings.TrimPrefix(up.URL, "https://")
	imp.transport = up.Client().Transport
	imp.copier = mirror.NewCopier(wire.CopierStores(e.db), e.env.Storage, oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts()}, 0, nil)
	e.createOrg("alice", "acme")
	e.createOrg("bob", "bobs")

	// Cleanups run last first: the upstream lets go, every import ends,
	// then the upstream closes.
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { close(h.stop) })
	ctx := context.Background()
	type answer struct {
		status int
		header http.Header
		body   map[string]any
	}
	start := func(user, src, target string) chan answer {
		ch := make(chan answer, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _ := json.Marshal(map[string]any{"source": h.upstream + "/" + src + ":latest", "repository": target})
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/api/v1/import", strings.NewReader(string(b)))
			req.Header.Set("Content-Type", "application/json")
			req.SetBasicAuth(user, e.env.Secret(user))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				ch <- answer{}
				return
			}
			defer res.Body.Close()
			var out map[string]any
			json.NewDecoder(res.Body).Decode(&out)
			ch <- answer{res.StatusCode, res.Header, out}
		}()
		return ch
	}
	// waitArrived waits until the upstream holds a request of src's
	// import, or fails if its import was answered first.
	waitArrived := func(src string, ch chan answer) {
		t.Helper()
		_, arrived := h.chans(src)
		select {
		case <-arrived:
		case a := <-ch:
			t.Fatalf("import of %s answered %d %v; want it running", src, a.status, a.body)
		}
	}
	var running []chan answer
	for i := range 4 {
		src := "hang/a" + string(rune('0'+i))
		ch := start("alice", src, "acme/a"+string(rune('0'+i)))
		waitArrived(src, ch)
		running = append(running, ch)
	}
	a := <-start("alice", "hang/a4", "acme/a4")
	msg, _ := a.body["error_message"].(string)
	if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") == "" || !strings.Contains(msg, "too many imports running") ||
		a.body["status"] != float64(http.StatusTooManyRequests) {
		t.Fatalf("5th concurrent import of alice: %d Retry-After %q %v; want 429 with a Retry-After, saying too many imports run",
			a.status, a.header.Get("Retry-After"), a.body)
	}
	if ri, err := e.db.Repositories().Repository(ctx, "acme/a4"); err != nil || ri.Exists {
		t.Fatalf("the refused import made repository acme/a4 (%v)", err)
	}
	// Another account has slots of its own.
	waitArrived("hang/b0", start("bob", "hang/b0", "bobs/b0"))

	// One of alice's ends (its upstream answers 404): a new one runs.
	rel, _ := h.chans("hang/a0")
	close(rel)
	if a := <-running[0]; a.status != http.StatusBadGateway {
		t.Fatalf("released import: %d %v, want 502", a.status, a.body)
	}
	waitArrived("hang/a5", start("alice", "hang/a5", "acme/a5"))
}
