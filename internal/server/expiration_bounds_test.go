package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestTagExpirationBounds: a served Berth bounds tag expirations as
// Quay does (LABELED_EXPIRATION_MINIMUM 1h, _MAXIMUM 104w, from the tag's
// start_ts): a push labelled quay.expires-after=30s lists end_ts =
// start_ts + 3600, an expiration in the year 9999 set through the API
// start_ts + 104 weeks, one inside the bounds as given; a past one is
// still refused (400). With lifecycle.expirationMinimum 0 a 30s label
// is kept as it was before, and lifecycle.expirationMaximum caps.
func TestTagExpirationBounds(t *testing.T) {
	const week = 7 * 24 * 3600
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			host, _ := serveLive(t, dialect, func(cfg *config.Config) { cfg.Auth.Mode = "none" })
			ts := expiringTags{t: t, url: "http://" + host}
			ts.push("acme/app", "pr-30s", "30s")
			start, end := ts.times("acme/app", "pr-30s")
			if end != start+3600 {
				t.Fatalf("a push labelled quay.expires-after=30s: start_ts %d, end_ts %d, want start_ts + 3600", start, end)
			}
			ts.push("acme/app", "pr-3d", "3d")
			if start, end := ts.times("acme/app", "pr-3d"); end < start+3*24*3600 || end > start+3*24*3600+1 {
				t.Fatalf("a push labelled quay.expires-after=3d: start_ts %d, end_ts %d, want start_ts + 3 days", start, end)
			}
			if st, raw := ts.expire("acme/app", "pr-30s", 253402300000); st != 201 { // 9999-12-31
				t.Fatalf("expiration in 9999: %d %s", st, raw)
			}
			if start, end := ts.times("acme/app", "pr-30s"); end != start+104*week {
				t.Fatalf("an expiration in 9999: start_ts %d, end_ts %d, want start_ts + 104 weeks", start, end)
			}
			at := time.Now().Add(50 * time.Hour).Unix()
			if st, raw := ts.expire("acme/app", "pr-30s", at); st != 201 {
				t.Fatalf("expiration in 50h: %d %s", st, raw)
			}
			if _, end := ts.times("acme/app", "pr-30s"); end != at {
				t.Fatalf("an expiration in 50h: end_ts %d, want %d as given", end, at)
			}
			if st, raw := ts.expire("acme/app", "pr-30s", time.Now().Add(-time.Minute).Unix()); st != 400 {
				t.Fatalf("an expiration in the past: %d %s, want 400", st, raw)
			}
			if _, end := ts.times("acme/app", "pr-30s"); end != at {
				t.Fatalf("a refused expiration changed end_ts to %d, want %d", end, at)
			}
		})
	}
	t.Run("configured", func(t *testing.T) {
		host, _ := serveLive(t, "sqlite", func(cfg *config.Config) {
			cfg.Auth.Mode = "none"
			cfg.Lifecycle.ExpirationMinimum = 0
			cfg.Lifecycle.ExpirationMaximum = 48 * time.Hour
		})
		ts := expiringTags{t: t, url: "http://" + host}
		ts.push("acme/app", "pr-30s", "30s")
		if start, end := ts.times("acme/app", "pr-30s"); end < start+29 || end > start+31 {
			t.Fatalf("with a minimum of 0 a push labelled 30s: start_ts %d, end_ts %d, want start_ts + 30", start, end)
		}
		if st, raw := ts.expire("acme/app", "pr-30s", time.Now().Add(7*24*time.Hour).Unix()); st != 201 {
			t.Fatalf("expiration in 7 days: %d %s", st, raw)
		}
		if start, end := ts.times("acme/app", "pr-30s"); end != start+48*3600 {
			t.Fatalf("with a maximum of 48h an expiration in 7 days: start_ts %d, end_ts %d, want start_ts + 48h", start, end)
		}
	})
}

// expiringTags pushes labelled images to, and sets and reads tag
// expirations of, a server without authentication.
type expiringTags struct {
	t   *testing.T
	url string
}

func (e expiringTags) do(method, path string, body []byte, ct string) (int, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// push pushes an image labelled quay.expires-after=after to repo:tag.
func (e expiringTags) push(repo, tag, after string) {
	e.t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux","config":{"Labels":{"quay.expires-after":"` + after + `"}},"note":"` + tag + `"}`)
	cd := digest.FromBytes(cfg)
	if st, b := e.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+cd.String(), cfg, ""); st != 201 {
		e.t.Fatalf("config blob: %d %s", st, b)
	}
	m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` +
		cd.String() + `","size":` + strconv.Itoa(len(cfg)) + `},"layers":[]}`)
	if st, b := e.do("PUT", "/v2/"+repo+"/manifests/"+tag, m, "application/vnd.oci.image.manifest.v1+json"); st != 201 {
		e.t.Fatalf("push %s:%s: %d %s", repo, tag, st, b)
	}
}

// expire sets a tag's expiration through Quay's API.
func (e expiringTags) expire(repo, tag string, at int64) (int, string) {
	e.t.Helper()
	st, b := e.do("PUT", "/api/v1/repository/"+repo+"/tag/"+tag, fmt.Appendf(nil, `{"expiration":%d}`, at), "application/json")
	return st, string(b)
}

// times reads a tag's start_ts and end_ts from Quay's tag list.
func (e expiringTags) times(repo, tag string) (int64, int64) {
	e.t.Helper()
	st, b := e.do("GET", "/api/v1/repository/"+repo+"/tag/?onlyActiveTags=true&specificTag="+tag, nil, "")
	var list struct {
		Tags []struct {
			Name    string `json:"name"`
			StartTS int64  `json:"start_ts"`
			EndTS   *int64 `json:"end_ts"`
		} `json:"tags"`
	}
	if err := json.Unmarshal(b, &list); st != 200 || err != nil || len(list.Tags) != 1 || list.Tags[0].EndTS == nil {
		e.t.Fatalf("tag list of %s:%s: %d %s", repo, tag, st, b)
	}
	return list.Tags[0].StartTS, *list.Tags[0].EndTS
}
