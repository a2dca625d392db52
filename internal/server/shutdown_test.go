package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestGracefulShutdown stops a serving replica while a chunked PATCH is
// streaming and a job is running: /readyz says 503 while it drains, the
// PATCH's bytes are recorded and its upload claim is free the moment the
// server is gone (no lease to wait out), the job is claimable at once by
// another worker, and the upload is finished through another replica.
func TestGracefulShutdown(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			dbURL := sharedDatabase(t, dialect)
			key := newSecretKey()
			shared := t.TempDir() // the replicas' one storage
			cfgA := replicaConfig(t, dbURL, key)
			cfgA.Storage.Filesystem.RootDirectory = shared
			cfgA.Auth.Mode = "none"
			cfgA.HTTP.ShutdownTimeout = time.Second
			cfgA.HTTP.ShutdownDelay = 300 * time.Millisecond
			a, err := newServer(t, cfgA)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			urlA := "http://" + ln.Addr().String()
			sctx, stop := context.WithCancel(ctx)
			served := make(chan error, 1)
			go func() { served <- a.Serve(sctx, ln) }()
			defer stop()
			db, err := meta.Open(ctx, dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()

			// A running job: a webhook delivery to a receiver that hangs.
			hung := make(chan struct{}, 1)
			release := make(chan struct{})
			hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hung <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}))
			defer hook.Close()
			defer close(release)
			body := `{"event":"repo_push","method":"webhook","config":{"url":"` + hook.URL + `"}}`
			var n struct{ UUID string }
			if code := doJSON(t, "POST", urlA+"/api/v1/superuser/notification/", body, &n); code != 201 {
				t.Fatalf("create notification: %d", code)
			}
			if code := doJSON(t, "POST", urlA+"/api/v1/superuser/notification/"+n.UUID+"/test", "", nil); code != 200 {
				t.Fatalf("test notification: %d", code)
			}
			select {
			case <-hung:
			case <-time.After(30 * time.Second):
				t.Fatal("the delivery job never ran")
			}

			// A chunked upload whose PATCH stalls after 1 MiB.
			blob := make([]byte, 2<<20)
			rand.Read(blob)
			resp, err := http.Post(urlA+"/v2/shut/down/blobs/uploads/", "", nil)
			if err != nil || resp.StatusCode != 202 {
				t.Fatalf("start upload: %v %v", err, resp)
			}
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			id := loc[strings.LastIndex(loc, "/")+1:]
			pr, pw := io.Pipe()
			patched := make(chan error, 1)
			go func() {
				req, _ := http.NewRequest("PATCH", urlA+loc, pr)
				req.Header.Set("Content-Type", "application/octet-stream")
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				patched <- err
			}()
			if _, err := pw.Write(blob[:1<<20]); err != nil {
				t.Fatal(err)
			}
			defer pw.Close()
			waitFor(t, "the PATCH to claim its upload", func() bool {
				free, err := db.Uploads().ExpiredUploadsAt(ctx, meta.UploadCutoffs{Idle: time.Now().Add(time.Hour)}, 100)
				return err == nil && len(free) == 0
			})

			stop()
			waitFor(t, "/readyz to say 503 while draining", func() bool {
				resp, err := http.Get(urlA + "/readyz")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == 503
			})
			select {
			case err := <-served:
				if err != nil {
					t.Fatalf("serve: %v", err)
				}
			case <-time.After(time.Minute):
				t.Fatal("the server did not stop")
			}
			pw.CloseWithError(errors.New("client gives up")) // the client's transport waits for its body writer
			<-patched

			// The upload's claim is free now: a claim succeeds at once.
			up, err := db.Uploads().ClaimUpload(ctx, "shut/down", id, time.Second)
			if err != nil {
				t.Fatalf("claim the upload right after shutdown: %v", err)
			}
			if up.Size <= 0 || up.Size > 1<<20 {
				t.Fatalf("recorded %d bytes of the cut PATCH", up.Size)
			}
			if err := db.Uploads().ReleaseUpload(ctx, id, up.Claim); err != nil {
				t.Fatal(err)
			}
			// The job is ready for another worker at once.
			j, ok, err := db.Jobs().ClaimJob(ctx, meta.NotifyQueue, "another-replica/1", time.Minute)
			if err != nil || !ok {
				t.Fatalf("claim the interrupted job right after shutdown: %v %v", ok, err)
			}
			db.Jobs().CompleteJob(ctx, j.ID, "another-replica/1")

			// Another replica finishes the upload from the recorded offset.
			cfgB := noAuth(replicaConfig(t, dbURL, key))
			cfgB.Storage.Filesystem.RootDirectory = shared
			b, err := newServer(t, cfgB)
			if err != nil {
				t.Fatal(err)
			}
			hsB := httptest.NewServer(b.Handler())
			defer hsB.Close()
			resp, err = http.Get(hsB.URL + loc)
			if err != nil || resp.StatusCode != 204 {
				t.Fatalf("upload status on B: %v %v", err, resp)
			}
			resp.Body.Close()
			if want := fmt.Sprintf("0-%d", up.Size-1); resp.Header.Get("Range") != want {
				t.Fatalf("status on B: Range %q, want %q", resp.Header.Get("Range"), want)
			}
			req, _ := http.NewRequest("PATCH", hsB.URL+loc, bytes.NewReader(blob[up.Size:]))
			req.Header.Set("Content-Range", strconv.FormatInt(up.Size, 10)+"-"+strconv.Itoa(len(blob)-1))
			req.Header.Set("Content-Type", "application/octet-stream")
			resp, err = http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != 202 {
				t.Fatalf("resume on B: %v %v", err, resp)
			}
			resp.Body.Close()
			sum := sha256.Sum256(blob)
			dg := "sha256:" + hex.EncodeToString(sum[:])
			req, _ = http.NewRequest("PUT", hsB.URL+resp.Header.Get("Location")+"&digest="+dg, nil)
			if !strings.Contains(resp.Header.Get("Location"), "?") {
				req, _ = http.NewRequest("PUT", hsB.URL+resp.Header.Get("Location")+"?digest="+dg, nil)
			}
			resp, err = http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != 201 {
				t.Fatalf("finish on B: %v %v", err, resp)
			}
			resp.Body.Close()
			resp, err = http.Get(hsB.URL + "/v2/shut/down/blobs/" + dg)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !bytes.Equal(got, blob) {
				t.Fatalf("the blob read back differs (%d bytes)", len(got))
			}
		})
	}
}

func doJSON(t *testing.T, method, url, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func noAuth(c config.Config) config.Config {
	c.Auth.Mode = "none"
	return c
}
