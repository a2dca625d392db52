package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/server"
	"github.com/berth-dev/berth/internal/testenv/s3server"
)

// s3Replicas starts two Berth servers on one database and one bucket of a
// real S3 server (versitygw), with blob redirects on above 1 MiB, and
// creates the users alice and bob.
func s3Replicas(t *testing.T) (a, b string) {
	t.Helper()
	return s3ReplicasOn(t, s3server.Start(t))
}

// s3ReplicasOn is s3Replicas on a given S3 server.
func s3ReplicasOn(t *testing.T, srv *s3server.Server) (a, b string) {
	t.Helper()
	t.Setenv("AWS_CA_BUNDLE", "") // the S3 server speaks plain HTTP
	ctx := context.Background()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Log.Level = "error"
	cfg.Scan.Enabled = false
	if os.Getenv(metatest.EnvPostgresDSN) != "" {
		cfg.Database.URL = metatest.PostgresDSN(t)
		cfg.SecretKey = testSecretKey // replicas on PostgreSQL share one
	}
	cfg.Storage.Driver = "s3"
	cfg.Storage.S3 = config.S3{Endpoint: srv.Endpoint, Region: srv.Region, Bucket: srv.Bucket(t), Prefix: "registry", PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: 5 << 20,
		Redirect: config.S3Redirect{Enabled: true, MinSize: 1 << 20, Expiry: cfg.Storage.S3.Redirect.Expiry}}
	start := func() string {
		s, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(s.Handler())
		t.Cleanup(func() { hs.Close(); s.Close() })
		return hs.URL
	}
	a, b = start(), start()
	db, err := meta.Open(ctx, cfg.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	hash, _ := auth.HashPassword(pw)
	for _, u := range []string{"alice", "bob"} {
		if _, err := db.Users().CreateUser(ctx, meta.User{Username: u, SecretHash: hash}); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// noFollow does not follow redirects: the test looks at them.
var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func call(t *testing.T, method, url, user string, body []byte) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if user != "" {
		req.SetBasicAuth(user, pw)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestRegistryOverS3 pushes to one replica and pulls from the other, with
// go-containerregistry, over S3 storage; pushes a blob in chunks of 1, 3
// and 7 MiB alternating between the replicas (each resumes the multipart
// upload the other left); and checks that blob redirects reach only
// clients that may pull.
func TestRegistryOverS3(t *testing.T) {
	a, b := s3Replicas(t)
	host := func(u string) string { return strings.TrimPrefix(u, "http://") }
	alice := remote.WithAuth(&authn.Basic{Username: "alice", Password: pw})

	img, err := random.Image(3<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref := func(base string) name.Reference {
		r, err := name.ParseReference(host(base) + "/alice/app:v1")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if err := remote.Write(ref(a), img, alice); err != nil {
		t.Fatalf("push to replica A: %v", err)
	}
	pulled, err := remote.Image(ref(b), alice)
	if err != nil {
		t.Fatalf("pull from replica B: %v", err)
	}
	layers, _ := pulled.Layers()
	want, _ := img.Layers()
	if len(layers) != len(want) {
		t.Fatalf("pulled %d layers, pushed %d", len(layers), len(want))
	}
	for i, l := range layers {
		rc, err := l.Compressed() // verified against its digest as it is read
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		wd, _ := want[i].Digest()
		if err != nil || digest.FromBytes(got).String() != wd.String() {
			t.Fatalf("layer %d pulled through the redirect: %v, digest %s, want %s", i, err, digest.FromBytes(got), wd)
		}
	}

	// A chunked push across replicas: each PATCH continues where the
	// other replica stopped, chunks under S3's 5 MiB part minimum included.
	blob := make([]byte, 11<<20)
	rand.Read(blob)
	d := digest.FromBytes(blob)
	resp := call(t, "POST", a+"/v2/alice/chunked/blobs/uploads/", "alice", nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	off := 0
	for i, n := range []int{1 << 20, 3 << 20, 7 << 20} {
		base := []string{a, b}[i%2]
		resp := call(t, "PATCH", base+loc, "alice", blob[off:off+n])
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != fmt.Sprintf("0-%d", off+n-1) {
			t.Fatalf("chunk %d (%d bytes) at replica %d: %d, Range %q", i, n, i%2, resp.StatusCode, resp.Header.Get("Range"))
		}
		off += n
	}
	resp = call(t, "PUT", b+loc+"?digest="+d.String(), "alice", nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("finish upload at replica B: %d", resp.StatusCode)
	}
	blobURL := "/v2/alice/chunked/blobs/" + d.String()
	resp = call(t, "GET", a+blobURL, "alice", nil)
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") == "" {
		t.Fatalf("GET of an 11 MiB blob = %d, Location %q; want a redirect", resp.StatusCode, resp.Header.Get("Location"))
	}
	got, err := http.Get(resp.Header.Get("Location")) // no credentials: the URL is the credential
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if got.StatusCode != 200 || !bytes.Equal(body, blob) {
		t.Fatalf("GET through the redirect: %d, %d bytes (digest %s), want %s", got.StatusCode, len(body), digest.FromBytes(body), d)
	}
	if resp := call(t, "HEAD", a+blobURL, "alice", nil); resp.StatusCode != 200 || resp.Header.Get("Location") != "" ||
		resp.Header.Get("Content-Length") != fmt.Sprint(len(blob)) {
		t.Fatalf("HEAD = %d, Location %q, Content-Length %s; want it answered locally", resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Content-Length"))
	}
	// Whoever may not pull gets no URL.
	for _, who := range []string{"", "bob"} {
		resp := call(t, "GET", b+blobURL, who, nil)
		if (resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusForbidden) ||
			resp.Header.Get("Location") != "" {
			t.Errorf("GET by %q = %d, Location %q; want a refusal without a Location", who, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	// The readiness probe asks the bucket.
	if resp := call(t, "GET", a+"/readyz", "", nil); resp.StatusCode != 200 {
		t.Errorf("/readyz over S3 = %d", resp.StatusCode)
	}
}
