package registry_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/registry"
)

// startSession opens an upload session and returns its Location.
func (r *testRegistry) startSession(repo string) string {
	r.t.Helper()
	resp, body := r.do("POST", "/v2/"+repo+"/blobs/uploads/", nil)
	if resp.StatusCode != http.StatusAccepted {
		r.t.Fatalf("start upload in %s: %d %s", repo, resp.StatusCode, body)
	}
	return resp.Header.Get("Location")
}

// streamed sends a PATCH whose body has no Content-Length (chunked).
func (r *testRegistry) streamed(loc string, body []byte) (*http.Response, []byte) {
	r.t.Helper()
	req, err := http.NewRequest("PATCH", r.url+loc, io.MultiReader(bytes.NewReader(body)))
	if err != nil {
		r.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.Request.ContentLength > 0 {
		r.t.Fatal("the streamed PATCH had a Content-Length")
	}
	return resp, b
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUploadQuota: in a namespace whose quota has a Reject limit, the
// bytes held in its open upload sessions count against it: with a 10 MiB
// quota, a second session's 6 MiB PATCH beside a first's 6 MiB is refused
// with the quota's 403 DENIED and writes nothing; one without a
// Content-Length keeps what fits and is refused past it; the first still
// finishes, and so does the second once the first's bytes are a blob (they
// count once a manifest names them). A monolithic upload past the limit is
// refused too, each refusal appends quota_error, and a namespace without a
// quota is not limited.
func TestUploadQuota(t *testing.T) {
	const mib = 1 << 20
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			reg, db := newRegistryDB(t, dialect, registry.Options{})
			metatest.Orgs(t, db, "acme", "other")
			q, err := db.Quotas().CreateQuota(ctx, "acme", 10*mib, "admin")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Quotas().CreateQuotaLimit(ctx, "acme", q.ID, meta.QuotaReject, 100); err != nil {
				t.Fatal(err)
			}
			one, two := randomBytes(t, 6*mib), randomBytes(t, 6*mib)

			first, second := reg.startSession("acme/app"), reg.startSession("acme/app")
			if resp, body := reg.do("PATCH", first, one); resp.StatusCode != http.StatusAccepted {
				t.Fatalf("first PATCH: %d %s", resp.StatusCode, body)
			}
			resp, body := reg.do("PATCH", second, two)
			msg := expectError(t, resp, body, http.StatusForbidden, "DENIED")
			if !strings.Contains(msg, "quota exceeded") || !strings.Contains(msg, "acme") {
				t.Fatalf("refusal message: %s", msg)
			}
			if resp, _ := reg.do("GET", second, nil); resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != "0-0" {
				t.Fatalf("refused session: %d Range %s, want nothing written", resp.StatusCode, resp.Header.Get("Range"))
			}
			// Streamed, the chunk is written up to the room left (4 MiB),
			// kept, and refused past it.
			resp, body = reg.streamed(second, two)
			expectError(t, resp, body, http.StatusForbidden, "DENIED")
			if resp, _ := reg.do("GET", second, nil); resp.Header.Get("Range") != "0-4194303" {
				t.Fatalf("streamed past the room: Range %s, want 0-4194303", resp.Header.Get("Range"))
			}

			// Finishing the first adds nothing and is never refused.
			if resp, body := reg.do("PUT", first+"?digest="+digestOf(one).String(), nil); resp.StatusCode != http.StatusCreated {
				t.Fatalf("finish the first: %d %s", resp.StatusCode, body)
			}
			// Its bytes are a blob now, no manifest names them: the second
			// resumes where it was refused and finishes.
			if resp, body := reg.do("PUT", second+"?digest="+digestOf(two).String(), two[4*mib:], "Content-Range", "4194304-6291455"); resp.StatusCode != http.StatusCreated {
				t.Fatalf("finish the second: %d %s", resp.StatusCode, body)
			}

			big := randomBytes(t, 11*mib)
			resp, body = reg.do("POST", "/v2/acme/app/blobs/uploads/?digest="+digestOf(big).String(), big)
			expectError(t, resp, body, http.StatusForbidden, "DENIED")

			evs, err := db.Outbox().EventsAfter(ctx, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			refused := 0
			for _, e := range evs {
				if e.Kind != meta.EventQuotaError {
					continue
				}
				var data map[string]any
				json.Unmarshal(e.Data, &data)
				if e.Repository != "acme/app" || data["refused"] != true || data["limit_bytes"] != float64(10*mib) {
					t.Fatalf("quota_error %s: %v", e.Repository, data)
				}
				refused++
			}
			if refused != 3 {
				t.Fatalf("%d quota_error events, want 3 (one per refusal)", refused)
			}

			// No quota, no limit.
			a, b := reg.startSession("other/app"), reg.startSession("other/app")
			for _, loc := range []string{a, b} {
				if resp, body := reg.do("PATCH", loc, one); resp.StatusCode != http.StatusAccepted {
					t.Fatalf("PATCH without a quota: %d %s", resp.StatusCode, body)
				}
			}
			if resp, body := reg.do("POST", "/v2/other/app/blobs/uploads/?digest="+digestOf(big).String(), big); resp.StatusCode != http.StatusCreated {
				t.Fatalf("monolithic upload without a quota: %d %s", resp.StatusCode, body)
			}
		})
	}
}
