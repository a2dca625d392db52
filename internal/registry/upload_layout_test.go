package registry_test

import (
	"context"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/testenv"
)

// TestUploadLayouts: a new upload keeps its bytes in one file named by its
// id (a UUIDv7), with no directory of its own, and nothing of it stays
// once it is finished; an upload that an earlier version began (a UUIDv4
// id, its bytes in a directory) is resumed and finished by this one, and
// its directory goes too.
func TestUploadLayouts(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			env := testenv.New(t, testenv.Options{Dialect: dialect, Open: true})
			reg := &testRegistry{t: t, url: env.URL, host: env.Host}

			// This version's upload.
			resp, body := reg.do("POST", "/v2/layouts/blobs/uploads/", nil)
			if resp.StatusCode != 202 {
				t.Fatalf("POST: %d %s", resp.StatusCode, body)
			}
			loc := resp.Header.Get("Location")
			id := loc[strings.LastIndex(loc, "/")+1:]
			if u, err := uuid.Parse(id); err != nil || u.Version() != 7 {
				t.Fatalf("upload id %q: version %v, %v; want a UUIDv7", id, u.Version(), err)
			}
			first := []byte("the first chunk, ")
			if resp, body := reg.do("PATCH", loc, first, "Content-Type", "application/octet-stream"); resp.StatusCode != 202 {
				t.Fatalf("PATCH: %d %s", resp.StatusCode, body)
			}
			fi, err := env.Storage.Stat(ctx, storage.UploadPath(id))
			if err != nil || fi.IsDir || fi.Size != int64(len(first)) || storage.UploadRoot(id) != storage.UploadPath(id) {
				t.Fatalf("the upload's bytes at %s: %+v, %v; want a file of %d bytes", storage.UploadPath(id), fi, err, len(first))
			}
			whole := append(first, "then the last"...)
			resp, body = reg.do("PUT", loc+"?digest="+digestOf(whole).String(), whole[len(first):])
			if resp.StatusCode != 201 {
				t.Fatalf("PUT: %d %s", resp.StatusCode, body)
			}
			if _, err := env.Storage.Stat(ctx, storage.UploadPath(id)); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("the finished upload's file: %v, want it gone", err)
			}

			// An earlier version's upload, begun before the upgrade: its
			// session and its first chunk, in a directory of its own.
			old := uuid.NewString()
			if want := "/uploads/" + old[:2] + "/" + old + "/data"; storage.UploadPath(old) != want {
				t.Fatalf("an earlier version's upload path: %s, want %s", storage.UploadPath(old), want)
			}
			h := sha256.New()
			state, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
			if err := env.DB.Uploads().CreateUpload(ctx, meta.Upload{ID: old, Repository: "layouts", HashState: state}, 0); err != nil {
				t.Fatal(err)
			}
			up, err := env.DB.Uploads().ClaimUpload(ctx, "layouts", old, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			fw, err := env.Storage.Writer(ctx, storage.UploadPath(old), 0)
			if err != nil {
				t.Fatal(err)
			}
			fw.Write(first)
			if err := fw.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			h.Write(first)
			state, _ = h.(encoding.BinaryMarshaler).MarshalBinary()
			if err := env.DB.Uploads().AdvanceUpload(ctx, old, up.Claim, 0, int64(len(first)), state, nil); err != nil {
				t.Fatal(err)
			}
			// This version finishes it.
			loc = "/v2/layouts/blobs/uploads/" + old
			if resp, _ := reg.do("GET", loc, nil); resp.StatusCode != 204 || resp.Header.Get("Range") != fmt.Sprintf("0-%d", len(first)-1) {
				t.Fatalf("the earlier version's upload's status: %d, Range %q", resp.StatusCode, resp.Header.Get("Range"))
			}
			resp, body = reg.do("PUT", loc+"?digest="+digestOf(whole).String(), whole[len(first):])
			if resp.StatusCode != 201 {
				t.Fatalf("PUT the earlier version's upload: %d %s", resp.StatusCode, body)
			}
			if _, err := env.Storage.Stat(ctx, storage.UploadRoot(old)); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("the earlier version's directory: %v, want it gone", err)
			}
			resp, got := reg.do("GET", "/v2/layouts/blobs/"+digestOf(whole).String(), nil)
			if resp.StatusCode != 200 || string(got) != string(whole) {
				t.Fatalf("GET the blob: %d %q", resp.StatusCode, got)
			}
		})
	}
}
