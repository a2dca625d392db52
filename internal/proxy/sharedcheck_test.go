package proxy_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/proxy"
)

// TestProxyGetSharingHeadCheckGetsBody: a GET of a cached tag due for its
// upstream check that joins the check a HEAD of the same tag started gets
// the whole manifest, whether the upstream finds the tag unchanged or
// fails. Before, it was answered the HEAD's copy, loaded without its
// body: a Content-Length and no bytes, which clients report as an
// unexpected EOF.
func TestProxyGetSharingHeadCheckGetsBody(t *testing.T) {
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	m := imageManifest(cfg)
	md := digest.FromString(m)
	var (
		mu      sync.Mutex
		now     = time.Now()
		gate    chan struct{} // non-nil: manifest requests wait for it
		failing bool          // the upstream answers 429 once let through
	)
	var checks atomic.Int64 // manifest requests that reached the upstream
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	berth, _ := limitsEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return
		}
		checks.Add(1)
		mu.Lock()
		g, fail := gate, failing
		mu.Unlock()
		if g != nil {
			select {
			case <-g:
			case <-r.Context().Done():
				return
			}
		}
		if fail {
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Docker-Content-Digest", md.String())
		w.Header().Set("Content-Length", strconv.Itoa(len(m)))
		if r.Method == http.MethodGet {
			io.WriteString(w, m)
		}
	}), proxy.Options{ManifestTimeout: time.Minute, Now: clock})
	url := berth + "/v2/hub/library/app/manifests/latest"
	if status, _, msg, _ := getManifest(t, url); status != http.StatusOK {
		t.Fatalf("first pull of the tag: %d %q", status, msg)
	}

	request := func(method string) (*http.Response, []byte, error) {
		req, _ := http.NewRequest(method, url, nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, body, err
	}
	for _, upstreamFails := range []bool{false, true} {
		// The GET must join the HEAD's check while it waits on the
		// upstream: a round where it did not (it reached the upstream
		// itself) proves nothing and is played again.
		joined := false
		for round := 0; round < 5 && !joined; round++ {
			release := make(chan struct{})
			mu.Lock()
			now = now.Add(2 * time.Hour) // past the organization's expiration (1 h)
			gate, failing = release, upstreamFails
			mu.Unlock()
			checks.Store(0)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				if resp, _, err := request(http.MethodHead); err != nil || resp.StatusCode != http.StatusOK {
					t.Errorf("HEAD: %v %v", resp, err)
				}
			}()
			for checks.Load() == 0 {
				time.Sleep(5 * time.Millisecond) // poll: the HEAD's check waits on the upstream
			}
			type answer struct {
				resp *http.Response
				body []byte
				err  error
			}
			got := make(chan answer, 1)
			go func() {
				resp, body, err := request(http.MethodGet)
				got <- answer{resp, body, err}
			}()
			time.Sleep(200 * time.Millisecond) // let the GET join the check (not an assertion)
			close(release)
			a := <-got
			wg.Wait()
			joined = checks.Load() == 1
			if !joined {
				continue
			}
			if a.err != nil {
				t.Errorf("upstream fails %v: GET sharing the HEAD's check: %v", upstreamFails, a.err)
				continue
			}
			if a.resp.StatusCode != http.StatusOK {
				t.Errorf("upstream fails %v: GET sharing the HEAD's check: %d %s", upstreamFails, a.resp.StatusCode, a.body)
				continue
			}
			if cl := a.resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(a.body)) || digest.FromBytes(a.body) != md {
				t.Errorf("upstream fails %v: GET sharing the HEAD's check: Content-Length %s, %d bytes of digest %s, want %d bytes of %s",
					upstreamFails, cl, len(a.body), digest.FromBytes(a.body), len(m), md)
			}
		}
		if !joined {
			t.Errorf("upstream fails %v: the GET never joined the HEAD's check in 5 rounds", upstreamFails)
		}
	}
	mu.Lock()
	gate = nil
	mu.Unlock()
}
