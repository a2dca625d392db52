package registry_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/testenv"
)

// TestPushRepairsTruncatedBlob: a stored blob whose file was cut short
// (by hand, a full disk, a crash of a file system written without fsync)
// is whole again after a push of the same bytes. Before, the push found
// a file at the address and kept it: no push could repair the blob, and
// every pull got fewer bytes than its Content-Length.
//
// A GET of the damaged blob before the repair logs the damage as an error
// (before, the short body went out without a word).
func TestPushRepairsTruncatedBlob(t *testing.T) {
	var logs testenv.LogBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	testenv.ForDialects(t, testenv.Options{Open: true, Logger: logger}, func(t *testing.T, e *testenv.Env) {
		blob := bytes.Repeat([]byte("truncated blob "), 10000)
		d := digest.FromBytes(blob)
		push := func() {
			t.Helper()
			resp, err := http.Post(e.URL+"/v2/app/blobs/uploads/?digest="+d.String(), "application/octet-stream", bytes.NewReader(blob))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("push: %d", resp.StatusCode)
			}
		}
		push()
		// Cut the stored file to half its size (a writer resumed at an
		// offset truncates the file there).
		fw, err := e.Storage.Writer(context.Background(), storage.BlobPath(d), int64(len(blob)/2))
		if err != nil {
			t.Fatal(err)
		}
		if err := fw.Close(); err != nil {
			t.Fatal(err)
		}
		if fi, err := e.Storage.Stat(context.Background(), storage.BlobPath(d)); err != nil || fi.Size != int64(len(blob)/2) {
			t.Fatalf("truncated file: %+v, %v", fi, err)
		}
		if resp, err := http.Get(e.URL + "/v2/app/blobs/" + d.String()); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if !strings.Contains(logs.String(), "blob shorter in storage than recorded") {
			t.Fatalf("a GET of the damaged blob logged no error:\n%s", logs.String())
		}
		push()
		resp, err := http.Get(e.URL + "/v2/app/blobs/" + d.String())
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("GET after the second push: %d, %d of %d bytes (%v)", resp.StatusCode, len(got), len(blob), err)
		}
	})
}
