package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
)

// TestDeleteReferencedContent: a blob or child manifest that a manifest of
// the repository references cannot be deleted; the image stays whole.
// What nothing references still deletes.
func TestDeleteReferencedContent(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			reg := newRegistry(t, dialect, registry.Options{})
			layer := []byte("referenced layer")
			m := reg.imageManifest("app", layer)
			raw := mustJSON(t, m)
			md := digest.FromBytes(raw)
			if resp, body := reg.do("PUT", "/v2/app/manifests/v1", raw, "Content-Type", oci.MediaTypeImageManifest); resp.StatusCode != 201 {
				t.Fatalf("push: %d %s", resp.StatusCode, body)
			}
			ld := digestOf(layer)
			resp, body := reg.do("DELETE", "/v2/app/blobs/"+ld.String(), nil)
			msg := expectError(t, resp, body, http.StatusMethodNotAllowed, registry.CodeDenied)
			if !strings.Contains(msg, md.String()) {
				t.Fatalf("refusal %q does not name the manifest %s", msg, md)
			}
			if resp, body := reg.do("GET", "/v2/app/blobs/"+ld.String(), nil); resp.StatusCode != 200 || !bytes.Equal(body, layer) {
				t.Fatalf("layer after refused delete: %d", resp.StatusCode)
			}

			// An index listing the image: the child cannot go while it does.
			index := map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageIndex,
				"manifests": []map[string]any{{"mediaType": oci.MediaTypeImageManifest, "digest": md, "size": len(raw),
					"platform": map[string]string{"os": "linux", "architecture": "amd64"}}}}
			iraw := mustJSON(t, index)
			id := digest.FromBytes(iraw)
			if resp, body := reg.do("PUT", "/v2/app/manifests/multi", iraw, "Content-Type", oci.MediaTypeImageIndex); resp.StatusCode != 201 {
				t.Fatalf("push index: %d %s", resp.StatusCode, body)
			}
			resp, body = reg.do("DELETE", "/v2/app/manifests/"+md.String(), nil)
			msg = expectError(t, resp, body, http.StatusMethodNotAllowed, registry.CodeDenied)
			if !strings.Contains(msg, id.String()) {
				t.Fatalf("refusal %q does not name the index %s", msg, id)
			}
			if resp, _ := reg.do("GET", "/v2/app/manifests/v1", nil); resp.StatusCode != 200 {
				t.Fatalf("child after refused delete: %d", resp.StatusCode)
			}
			// Tags still delete (nothing needs a tag).
			if resp, _ := reg.do("DELETE", "/v2/app/manifests/v1", nil); resp.StatusCode != 202 {
				t.Fatalf("delete tag: %d", resp.StatusCode)
			}
			// Index first, then the child, then its layer: each allowed.
			for _, p := range []string{"/v2/app/manifests/" + id.String(), "/v2/app/manifests/" + md.String(), "/v2/app/blobs/" + ld.String()} {
				if resp, body := reg.do("DELETE", p, nil); resp.StatusCode != 202 {
					t.Fatalf("DELETE %s: %d %s", p, resp.StatusCode, body)
				}
			}
		})
	}
}

// TestDeleteBlobRacesPush races "PUT a manifest naming L" against "DELETE
// blob L": whatever wins, every manifest that was acknowledged stays fully
// pullable, and no request answers 500.
func TestDeleteBlobRacesPush(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			reg := newRegistry(t, dialect, registry.Options{})
			const rounds = 30
			var acked []string
			for i := range rounds {
				layer := []byte(fmt.Sprintf("racing layer %d", i))
				m := reg.imageManifest("race", layer)
				raw := mustJSON(t, m)
				ld := digestOf(layer)
				var wg sync.WaitGroup
				var putStatus, delStatus int
				var putBody, delBody []byte
				wg.Add(2)
				go func() {
					defer wg.Done()
					resp, body := reg.do("PUT", fmt.Sprintf("/v2/race/manifests/t%d", i), raw, "Content-Type", oci.MediaTypeImageManifest)
					putStatus, putBody = resp.StatusCode, body
				}()
				go func() {
					defer wg.Done()
					resp, body := reg.do("DELETE", "/v2/race/blobs/"+ld.String(), nil)
					delStatus, delBody = resp.StatusCode, body
				}()
				wg.Wait()
				switch {
				case putStatus == 201 && delStatus == 405:
					acked = append(acked, fmt.Sprintf("t%d", i))
				case putStatus == 400 && delStatus == 202:
					if !bytes.Contains(putBody, []byte(registry.CodeManifestBlobUnknown)) {
						t.Fatalf("round %d: refused push says %s", i, putBody)
					}
				default:
					t.Fatalf("round %d: PUT %d %s, DELETE %d %s", i, putStatus, putBody, delStatus, delBody)
				}
			}
			for _, tag := range acked {
				resp, body := reg.do("GET", "/v2/race/manifests/"+tag, nil)
				if resp.StatusCode != 200 {
					t.Fatalf("acknowledged %s: %d", tag, resp.StatusCode)
				}
				var m oci.Manifest
				if err := json.Unmarshal(body, &m); err != nil {
					t.Fatal(err)
				}
				for _, b := range m.Blobs() {
					if resp, _ := reg.do("GET", "/v2/race/blobs/"+b.Digest.String(), nil); resp.StatusCode != 200 {
						t.Fatalf("acknowledged %s lost blob %s: %d", tag, b.Digest, resp.StatusCode)
					}
				}
			}
			t.Logf("%d of %d pushes won the race", len(acked), rounds)
		})
	}
}

// TestDeleteManifestRacesRetag races "DELETE manifest M" against "PUT M
// under a new tag": no request answers 500, and a tag that was
// acknowledged after the delete points at a stored manifest.
func TestDeleteManifestRacesRetag(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			reg := newRegistry(t, dialect, registry.Options{})
			m := reg.imageManifest("retag", []byte("retag layer"))
			raw := mustJSON(t, m)
			md := digest.FromBytes(raw)
			for i := range 40 {
				if resp, body := reg.do("PUT", "/v2/retag/manifests/base", raw, "Content-Type", oci.MediaTypeImageManifest); resp.StatusCode != 201 {
					t.Fatalf("push: %d %s", resp.StatusCode, body)
				}
				var wg sync.WaitGroup
				var put, del int
				var putBody, delBody []byte
				tag := fmt.Sprintf("r%d", i)
				wg.Add(2)
				go func() {
					defer wg.Done()
					resp, body := reg.do("PUT", "/v2/retag/manifests/"+tag, raw, "Content-Type", oci.MediaTypeImageManifest)
					put, putBody = resp.StatusCode, body
				}()
				go func() {
					defer wg.Done()
					resp, body := reg.do("DELETE", "/v2/retag/manifests/"+md.String(), nil)
					del, delBody = resp.StatusCode, body
				}()
				wg.Wait()
				if put != 201 || (del != 202 && del != 404) {
					t.Fatalf("round %d: PUT %d %s, DELETE %d %s", i, put, putBody, del, delBody)
				}
				// Whichever committed last decides; either way the tag
				// answers consistently with the manifest by digest.
				tr, _ := reg.do("HEAD", "/v2/retag/manifests/"+tag, nil)
				dr, _ := reg.do("HEAD", "/v2/retag/manifests/"+md.String(), nil)
				if tr.StatusCode == 200 && dr.StatusCode != 200 {
					t.Fatalf("round %d: tag %s answers but its manifest does not", i, tag)
				}
			}
		})
	}
}

// TestRefusedPushLeavesNothing: a manifest push refused for a missing
// layer creates no repository, even for an empty-config artifact (whose
// config blob Berth supplies itself).
func TestRefusedPushLeavesNothing(t *testing.T) {
	reg := newRegistry(t, "sqlite", registry.Options{})
	missing := digest.FromString("never uploaded")
	m := map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageManifest, "artifactType": "application/vnd.example+json",
		"config": map[string]any{"mediaType": oci.MediaTypeEmptyJSON, "digest": oci.EmptyJSONDigest, "size": 2},
		"layers": []map[string]any{{"mediaType": "application/vnd.example+json", "digest": missing, "size": 5}}}
	resp, body := reg.pushManifest("ghost/app", "v1", oci.MediaTypeImageManifest, m)
	expectError(t, resp, body, 400, registry.CodeManifestBlobUnknown)
	resp, body = reg.do("GET", "/v2/ghost/app/tags/list", nil)
	expectError(t, resp, body, 404, registry.CodeNameUnknown)
	resp, body = reg.do("GET", "/v2/_catalog", nil)
	if resp.StatusCode != 200 || strings.Contains(string(body), "ghost") {
		t.Fatalf("catalog after a refused push: %d %s", resp.StatusCode, body)
	}
}

// TestManyMissingLayers: a manifest naming 25,000 missing layers is
// refused with a short error that names a few and counts them all.
func TestManyMissingLayers(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			reg := newRegistry(t, dialect, registry.Options{})
			m := reg.imageManifest("big")
			var layers []map[string]any
			for i := range 25000 {
				layers = append(layers, map[string]any{"mediaType": oci.MediaTypeLayerGzip, "digest": digest.FromString(fmt.Sprint(i)), "size": 1})
			}
			m["layers"] = layers
			resp, body := reg.pushManifest("big", "v1", oci.MediaTypeImageManifest, m)
			msg := expectError(t, resp, body, 400, registry.CodeManifestBlobUnknown)
			if len(body) > 4096 || !strings.Contains(msg, "25000 unknown") {
				t.Fatalf("error body of %d bytes: %.300s", len(body), body)
			}
		})
	}
}

// TestTextThatCannotBeStored: NUL bytes and invalid UTF-8 in query
// parameters are refused with 400 and a spec code, on every database.
func TestTextThatCannotBeStored(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			reg := newRegistry(t, dialect, registry.Options{})
			m := reg.imageManifest("text")
			reg.pushManifest("text", "v1", oci.MediaTypeImageManifest, m)
			md := digest.FromBytes(mustJSON(t, m))
			for _, c := range []struct{ path, code string }{
				{"/v2/text/tags/list?last=a%00b", registry.CodePaginationInvalid},
				{"/v2/text/tags/list?last=%ff%fe", registry.CodePaginationInvalid},
				{"/v2/_catalog?last=%00", registry.CodePaginationInvalid},
				{"/v2/_catalog?last=%c3%28", registry.CodePaginationInvalid},
				{"/v2/text/referrers/" + md.String() + "?artifactType=a%00b", registry.CodeUnsupported},
				{"/v2/text/referrers/" + md.String() + "?artifactType=%ff", registry.CodeUnsupported},
			} {
				resp, body := reg.do("GET", c.path, nil)
				expectError(t, resp, body, 400, c.code)
			}
			// A manifest whose artifactType holds a NUL is invalid.
			a := map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageManifest, "artifactType": "application/x\u0000y",
				"config": map[string]any{"mediaType": oci.MediaTypeEmptyJSON, "digest": oci.EmptyJSONDigest, "size": 2}, "layers": []any{}}
			resp, body := reg.pushManifest("text", "nul", oci.MediaTypeImageManifest, a)
			expectError(t, resp, body, 400, registry.CodeManifestInvalid)
		})
	}
}

// TestHeadErrorLength: a HEAD that fails says how long the error body of
// the same GET would be.
func TestHeadErrorLength(t *testing.T) {
	reg := newRegistry(t, "sqlite", registry.Options{})
	get, body := reg.do("GET", "/v2/nothing/manifests/latest", nil)
	head, hbody := reg.do("HEAD", "/v2/nothing/manifests/latest", nil)
	if head.StatusCode != 404 || len(hbody) != 0 || head.ContentLength != int64(len(body)) || get.ContentLength != int64(len(body)) {
		t.Fatalf("HEAD error: %d, Content-Length %d (GET body %d bytes)", head.StatusCode, head.ContentLength, len(body))
	}
}

// TestDeadWritersClaim: an upload whose writer died holding its claim (a
// killed process stops renewing it) is resumable as soon as the claim's
// short lease runs out: the next PATCH waits for it instead of failing.
func TestDeadWritersClaim(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			reg, db := newRegistryDB(t, dialect, registry.Options{})
			resp, _ := reg.do("POST", "/v2/claims/blobs/uploads/", nil)
			loc := resp.Header.Get("Location")
			id := loc[strings.LastIndex(loc, "/")+1:]
			// The dead writer: a claim nobody will renew or release.
			if _, err := db.Uploads().ClaimUpload(context.Background(), "claims", id, 700*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			content := []byte("resumed after a dead writer")
			start := time.Now()
			resp, body := reg.do("PATCH", loc, content, "Content-Type", "application/octet-stream")
			if resp.StatusCode != 202 {
				t.Fatalf("PATCH after a dead writer: %d %s", resp.StatusCode, body)
			}
			if waited := time.Since(start); waited < 500*time.Millisecond {
				t.Fatalf("PATCH went through a live claim after %s", waited)
			}
			d := digestOf(content)
			resp, body = reg.do("PUT", loc+"?digest="+d.String(), nil)
			if resp.StatusCode != 201 {
				t.Fatalf("finish: %d %s", resp.StatusCode, body)
			}
		})
	}
}

// TestOpenUploadCap: one identity may hold MaxOpenUploads sessions; the
// next answers 429 TOOMANYREQUESTS with a Retry-After, and finishing one
// makes room.
func TestOpenUploadCap(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			reg := newRegistry(t, dialect, registry.Options{MaxOpenUploads: 3})
			var locs []string
			for range 3 {
				resp, body := reg.do("POST", "/v2/capped/blobs/uploads/", nil)
				if resp.StatusCode != 202 {
					t.Fatalf("upload: %d %s", resp.StatusCode, body)
				}
				locs = append(locs, resp.Header.Get("Location"))
			}
			resp, body := reg.do("POST", "/v2/capped/blobs/uploads/", nil)
			expectError(t, resp, body, http.StatusTooManyRequests, registry.CodeTooManyRequests)
			if resp.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
			// A single-request upload opens no session: it still works.
			reg.pushBlob("capped", []byte("monolithic"))
			if resp, _ := reg.do("DELETE", locs[0], nil); resp.StatusCode != 204 {
				t.Fatalf("cancel: %d", resp.StatusCode)
			}
			if resp, body := reg.do("POST", "/v2/capped/blobs/uploads/", nil); resp.StatusCode != 202 {
				t.Fatalf("after a cancel: %d %s", resp.StatusCode, body)
			}
		})
	}
}

// TestCancelRacesFinish races "DELETE the upload" against a PUT that is
// streaming the upload's last chunk (and so holds its claim). The cancel
// waits for the PUT: the PUT stores the blob (201, never a 500 from bytes
// removed under it), and the cancel finds the upload finished (404
// BLOB_UPLOAD_UNKNOWN).
func TestCancelRacesFinish(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			reg := newRegistry(t, dialect, registry.Options{})
			resp, body := reg.do("POST", "/v2/cancels/blobs/uploads/", nil)
			if resp.StatusCode != 202 {
				t.Fatalf("POST: %d %s", resp.StatusCode, body)
			}
			loc := resp.Header.Get("Location")
			content := make([]byte, 32<<20)
			for i := range content {
				content[i] = byte(i * 7 / 5)
			}
			d := digestOf(content)

			pr, pw := io.Pipe()
			defer pw.Close() // a failure below must not leave the PUT waiting for its body
			req, err := http.NewRequest("PUT", reg.url+loc+"?digest="+d.String(), pr)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = int64(len(content))
			req.Header.Set("Content-Type", "application/octet-stream")
			type result struct {
				resp *http.Response
				err  error
			}
			putDone := make(chan result, 1)
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				putDone <- result{resp, err}
			}()
			// Three quarters of the body: more than the loopback's socket
			// buffers hold, so the server has claimed the upload and is
			// writing it when this returns.
			split := len(content) * 3 / 4
			if _, err := pw.Write(content[:split]); err != nil {
				t.Fatal(err)
			}
			type answer struct {
				resp *http.Response
				body []byte
			}
			cancelDone := make(chan answer, 1)
			go func() {
				resp, body := reg.do("DELETE", loc, nil)
				cancelDone <- answer{resp, body}
			}()
			select {
			case a := <-cancelDone:
				t.Fatalf("DELETE answered %d %s while a PUT was writing the upload", a.resp.StatusCode, a.body)
			case <-time.After(300 * time.Millisecond):
			}
			if _, err := pw.Write(content[split:]); err != nil {
				t.Fatal(err)
			}
			pw.Close()
			put := <-putDone
			if put.err != nil {
				t.Fatal(put.err)
			}
			if put.resp.StatusCode != 201 {
				t.Fatalf("PUT finishing the upload: %d, want 201", put.resp.StatusCode)
			}
			a := <-cancelDone
			expectError(t, a.resp, a.body, http.StatusNotFound, registry.CodeBlobUploadUnknown)
			resp, body = reg.do("GET", "/v2/cancels/blobs/"+d.String(), nil)
			if resp.StatusCode != 200 || !bytes.Equal(body, content) {
				t.Fatalf("blob after the race: %d, %d bytes", resp.StatusCode, len(body))
			}
		})
	}
}

// TestCancelUpload: a cancelled upload is gone (404 for its status, its
// PATCH and a second cancel), and its session no longer counts.
func TestCancelUpload(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			reg := newRegistry(t, dialect, registry.Options{})
			resp, _ := reg.do("POST", "/v2/cancels/blobs/uploads/", nil)
			loc := resp.Header.Get("Location")
			if resp, body := reg.do("PATCH", loc, []byte("some bytes"), "Content-Type", "application/octet-stream"); resp.StatusCode != 202 {
				t.Fatalf("PATCH: %d %s", resp.StatusCode, body)
			}
			if resp, body := reg.do("DELETE", loc, nil); resp.StatusCode != 204 {
				t.Fatalf("DELETE: %d %s", resp.StatusCode, body)
			}
			for _, m := range []string{"GET", "PATCH", "DELETE"} {
				resp, body := reg.do(m, loc, []byte("more"), "Content-Type", "application/octet-stream")
				expectError(t, resp, body, http.StatusNotFound, registry.CodeBlobUploadUnknown)
			}
		})
	}
}
