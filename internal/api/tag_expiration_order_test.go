package api_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
)

// TestTagPutRefusedLeavesTagAlone: PUT .../tag/{tag} with a manifest_digest
// and an expiration that is refused (not a future Unix time; a tag an
// immutability policy covers, which cannot expire) answers 400 or 403 and
// changes nothing: the tag stays where it was, or is not created. Before,
// the tag was moved (or created) first and the expiration refused after.
func TestTagPutRefusedLeavesTagAlone(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		ctx := context.Background()
		repoFixture(t, e)
		d1 := e.image("acme/app", "v1", 10)
		d2 := e.image("acme/app", "v2", 20)
		const base = "/api/v1/repository/acme/app/tag/"
		at := func(tag string) digest.Digest {
			t.Helper()
			m, err := e.db.Manifests().GetManifest(ctx, "acme/app", tag, "", false)
			if errors.Is(err, meta.ErrManifestNotFound) {
				return ""
			}
			if err != nil {
				t.Fatal(err)
			}
			return m.Digest
		}
		pushes := len(e.events(meta.EventRepoPush, "acme/app"))

		for _, exp := range []string{"1", "-5", `"tomorrow"`, fmt.Sprint(time.Now().Add(-time.Minute).Unix())} {
			e.want("dave", "PUT", base+"v1", fmt.Sprintf(`{"manifest_digest":%q,"expiration":%s}`, d2, exp), http.StatusBadRequest)
			e.want("dave", "PUT", base+"fresh", fmt.Sprintf(`{"manifest_digest":%q,"expiration":%s}`, d2, exp), http.StatusBadRequest)
		}
		if got := at("v1"); got != d1 {
			t.Fatalf("after refused expirations, v1 is at %s, want %s", got, d1)
		}
		if got := at("fresh"); got != "" {
			t.Fatalf("a refused expiration created the tag fresh at %s", got)
		}

		if _, err := e.db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", Repository: "acme/app",
			TagPattern: `^rel-`, TagPatternMatches: true}); err != nil {
			t.Fatal(err)
		}
		future := time.Now().Add(time.Hour).Unix()
		e.want("dave", "PUT", base+"rel-1", map[string]any{"manifest_digest": d1.String(), "expiration": future}, http.StatusForbidden)
		if got := at("rel-1"); got != "" {
			t.Fatalf("an immutable tag refused an expiration was created at %s", got)
		}
		if n := len(e.events(meta.EventRepoPush, "acme/app")); n != pushes {
			t.Fatalf("%d repo_push events after refused requests, want none", n-pushes)
		}
		// Without an expiration it is created, and then keeps refusing one.
		e.want("dave", "PUT", base+"rel-1", map[string]any{"manifest_digest": d1.String()}, http.StatusCreated)
		e.want("dave", "PUT", base+"rel-1", map[string]any{"expiration": future}, http.StatusForbidden)
		// A tag the policy does not cover moves and expires in one request.
		e.want("dave", "PUT", base+"v1", map[string]any{"manifest_digest": d2.String(), "expiration": future}, http.StatusCreated)
		if got := at("v1"); got != d2 {
			t.Fatalf("v1 is at %s, want %s", got, d2)
		}
	})
}

// TestTagExpirationFractional: Quay reads expiration as float(expiration),
// so a client sending time.time() + 86400 (a fractional Unix time) sets
// it, to the whole second; a number that is not a Unix time is refused.
func TestTagExpirationFractional(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		e.image("acme/app", "v1", 10)
		const base = "/api/v1/repository/acme/app/tag/"
		at := time.Now().Add(time.Hour).Unix()
		e.want("dave", "PUT", base+"v1", fmt.Sprintf(`{"expiration": %d.5}`, at), http.StatusCreated)
		var end any
		for _, tg := range e.want("dave", "GET", base+"?specificTag=v1", nil, http.StatusOK).obj(t)["tags"].([]any) {
			end = tg.(map[string]any)["end_ts"]
		}
		if end != float64(at) {
			t.Fatalf("end_ts %v after an expiration of %d.5, want %d", end, at, at)
		}
		for _, exp := range []string{"0.5", "1e300", fmt.Sprintf("%d.5", time.Now().Add(-time.Minute).Unix())} {
			e.want("dave", "PUT", base+"v1", `{"expiration": `+exp+`}`, http.StatusBadRequest)
		}
	})
}
