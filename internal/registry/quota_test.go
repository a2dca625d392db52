package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/registry"
)

// imageBytes is what a quota counts of an image: its config and layers.
func imageBytes(t *testing.T, img v1.Image) int64 {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

// TestQuotaRefusesPush pushes real images with go-containerregistry into
// an organization with a Reject limit: the push that would exceed it is
// answered 403 DENIED with the reason, stores no manifest or tag, leaves
// the usage as it was and appends quota_error; a push of an image already
// counted (another tag, another repository of the organization) goes
// through.
func TestQuotaRefusesPush(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			reg, db := newRegistryDB(t, dialect, registry.Options{})
			ctx := context.Background()
			small, err := random.Image(4096, 2)
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(reg.ref("acme/app:small"), small); err != nil {
				t.Fatal(err)
			}
			used := imageBytes(t, small)
			if u, _ := db.Quotas().NamespaceUsage(ctx, "acme"); u != used {
				t.Fatalf("usage %d, want %d", u, used)
			}
			q, err := db.Quotas().CreateQuota(ctx, "acme", used+1000, "admin")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Quotas().CreateQuotaLimit(ctx, "acme", q.ID, meta.QuotaReject, 100); err != nil {
				t.Fatal(err)
			}

			big, err := random.Image(8192, 1)
			if err != nil {
				t.Fatal(err)
			}
			err = remote.Write(reg.ref("acme/app:big"), big)
			var te *transport.Error
			if !errors.As(err, &te) || te.StatusCode != http.StatusForbidden || len(te.Errors) == 0 || te.Errors[0].Code != transport.ErrorCode("DENIED") ||
				!strings.Contains(te.Errors[0].Message, "quota exceeded") || !strings.Contains(te.Errors[0].Message, "acme") {
				t.Fatalf("push over the quota: %v", err)
			}
			t.Logf("the client says: %v", err)
			d, _ := big.Digest()
			resp, _ := reg.do("HEAD", "/v2/acme/app/manifests/"+d.String(), nil)
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("refused manifest: HEAD %d", resp.StatusCode)
			}
			resp, _ = reg.do("HEAD", "/v2/acme/app/manifests/big", nil)
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("refused tag: HEAD %d", resp.StatusCode)
			}
			if u, _ := db.Quotas().NamespaceUsage(ctx, "acme"); u != used {
				t.Fatalf("usage after a refused push %d, want %d", u, used)
			}
			evs, _ := db.Outbox().EventsAfter(ctx, 0, 1000)
			var quotaErrors, pushes int
			for _, e := range evs {
				switch e.Kind {
				case meta.EventQuotaError:
					quotaErrors++
					var data map[string]any
					json.Unmarshal(e.Data, &data)
					if e.Repository != "acme/app" || data["refused"] != true || data["limit_bytes"] != float64(used+1000) || data["threshold_percent"] != 100.0 {
						t.Fatalf("quota_error %s: %v", e.Repository, data)
					}
				case meta.EventRepoPush:
					pushes++
				}
			}
			if quotaErrors != 1 || pushes != 1 {
				t.Fatalf("%d quota_error and %d repo_push events, want 1 and 1", quotaErrors, pushes)
			}

			// What is counted already is never refused.
			if err := remote.Write(reg.ref("acme/app:again"), small); err != nil {
				t.Fatalf("retag over the quota: %v", err)
			}
			if err := remote.Write(reg.ref("acme/copy:small"), small); err != nil {
				t.Fatalf("the same image in another repository: %v", err)
			}
			// Another organization is not limited.
			if err := remote.Write(reg.ref("other/app:big"), big); err != nil {
				t.Fatal(err)
			}
			c, err := db.Quotas().VerifyNamespaceUsage(ctx, "acme")
			if err != nil || !c.Exact() || c.Counted != used {
				t.Fatalf("acme's books: %+v, %v", c, err)
			}
		})
	}
}
