package mirror_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/wire"
)

func apiCall(t *testing.T, srv *httptest.Server, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, srv.URL+path, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	json.Unmarshal(raw, &out)
	if strings.Contains(string(raw), "secret") {
		t.Fatalf("%s %s revealed the password: %s", method, path, raw)
	}
	return resp.StatusCode, out
}

func waitStatus(t *testing.T, f *mfix, want string) meta.Mirror {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := f.status(t)
		if m.Status == want {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %s (%s), want %s", m.Status, m.LastError, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMirrorAPISyncNowAndCancel(t *testing.T) {
	f := newMirrorFixture(t)
	f.push(t, "1.0", randomImage(t))
	f.push(t, "2.0", randomImage(t))
	srv := httptest.NewServer(api.New(wire.APIStores(f.db, 0), api.Open{}, api.Options{Mirrors: f.svc}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	path := "/api/v1/repository/" + mrepo + "/mirror"
	body := map[string]any{
		"external_reference": f.upstream + "/lib/app", "external_registry_username": "up", "external_registry_password": "secret",
		"sync_interval": 3600, "sync_start_date": time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05Z"),
		"root_rule": map[string]any{"rule_kind": "tag_glob_csv", "rule_value": []string{"1.*"}}, "robot_username": "acme+nobody",
		"external_registry_config": map[string]any{"verify_tls": true},
	}
	if code, _ := apiCall(t, srv, http.MethodGet, path, nil); code != http.StatusNotFound {
		t.Fatalf("GET before create: %d", code)
	}
	if code, out := apiCall(t, srv, http.MethodPost, path, body); code != http.StatusBadRequest {
		t.Fatalf("unknown robot: %d %v", code, out)
	}
	body["robot_username"] = "acme+mirror"
	code, out := apiCall(t, srv, http.MethodPost, path, body)
	if code != http.StatusCreated || out["sync_status"] != "NEVER_RUN" || out["sync_retries_remaining"] != 3.0 || out["robot_username"] != "acme+mirror" ||
		out["external_registry_username"] != "up" || out["is_enabled"] != true {
		t.Fatalf("create: %d %v", code, out)
	}
	if code, _ := apiCall(t, srv, http.MethodPost, path, body); code != http.StatusConflict {
		t.Fatalf("second create: %d", code)
	}
	if code, out := apiCall(t, srv, http.MethodPut, path, map[string]any{"sync_interval": 7200}); code != http.StatusCreated || out["sync_interval"] != 7200.0 {
		t.Fatalf("update: %d %v", code, out)
	}
	// Past a time.Duration's range it wrapped to a fraction of a second,
	// stored as 0: the mirror synced back to back.
	if code, out := apiCall(t, srv, http.MethodPut, path, map[string]any{"sync_interval": int64(18446744074)}); code != http.StatusBadRequest {
		t.Fatalf("a sync_interval past a Duration's range: %d %v", code, out)
	}
	// Not due yet: nothing happens until sync-now.
	time.Sleep(100 * time.Millisecond)
	if st := f.status(t); st.Status != meta.MirrorNeverRun {
		t.Fatalf("status before sync-now: %s", st.Status)
	}
	if code, _ := apiCall(t, srv, http.MethodPost, path+"/sync-now", nil); code != http.StatusNoContent {
		t.Fatalf("sync-now: %d", code)
	}
	waitStatus(t, f, meta.MirrorSuccess)
	if tags := f.localTags(t); len(tags) != 1 || tags["1.0"] == "" {
		t.Fatalf("tags %v", tags)
	}
	_, out = apiCall(t, srv, http.MethodGet, path, nil)
	if out["sync_status"] != "SUCCESS" {
		t.Fatalf("GET: %v", out)
	}

	// A sync stuck on a slow upstream is cancelled at a safe point.
	f.push(t, "1.1", randomImage(t))
	release := make(chan struct{})
	f.setHook(func(r *http.Request) int {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		return 0
	})
	defer close(release)
	if code, _ := apiCall(t, srv, http.MethodPost, path+"/sync-now", nil); code != http.StatusNoContent {
		t.Fatalf("sync-now: %d", code)
	}
	waitStatus(t, f, meta.MirrorSyncing)
	time.Sleep(50 * time.Millisecond)
	if code, _ := apiCall(t, srv, http.MethodPost, path+"/sync-cancel", nil); code != http.StatusNoContent {
		t.Fatalf("sync-cancel: %d", code)
	}
	st := waitStatus(t, f, meta.MirrorCancel)
	if time.Until(st.NextSyncAt) < time.Hour {
		t.Fatalf("after a cancel the next sync is %v away", time.Until(st.NextSyncAt))
	}
	// Wait for the job to end, then check nothing points at missing content.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if st := f.status(t); !st.CancelRequested {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cancelled sync did not stop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if tags := f.localTags(t); len(tags) != 1 {
		t.Fatalf("tags after cancel %v", tags)
	}
	// Each sync started closes with one event, as Quay's does: the
	// cancelled one with repo_mirror_sync_failed, saying it was cancelled.
	started, succeeded := f.events(t, meta.EventMirrorSyncStarted), f.events(t, meta.EventMirrorSyncSuccess)
	failed := f.events(t, meta.EventMirrorSyncFailed)
	if len(started) != 2 || len(succeeded) != 1 || len(failed) != 1 || !strings.Contains(string(failed[0].Data), "cancelled") {
		t.Fatalf("after a sync and a cancelled one: %d started, %d succeeded, failed %v", len(started), len(succeeded), failed)
	}
}
