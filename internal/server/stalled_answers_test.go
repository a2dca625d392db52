package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/server"
)

// TestStalledAnswersAreCut: behind the server's handler, a client that
// asks for a large answer other than a blob or a manifest (a referrers
// index, an API listing, a web page) and never reads it has it cut after
// http.bodyIdleTimeout, as a download is: the handler returns. Before,
// only blob and manifest bodies had a write deadline, and such a client,
// with a small receive buffer, pinned the handler's goroutine and its
// answer for as long as it kept the connection.
func TestStalledAnswersAreCut(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Storage.Filesystem.Fsync = false
	cfg.Log.Level = "error"
	cfg.Scan.Enabled = false
	cfg.Auth.Mode = "none"
	cfg.HTTP.BodyIdleTimeout = time.Second
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	returned := make(chan string, 16)
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.Handler().ServeHTTP(w, r)
		returned <- r.URL.Path
	}))
	// Small socket buffers on the server's side too: on loopback the
	// kernel would otherwise take megabytes of an answer nobody reads.
	hs.Listener = smallSendBuffers{hs.Listener}
	hs.Start()
	t.Cleanup(hs.Close)
	db, err := meta.Open(ctx, cfg.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })

	// An image whose annotations, and one referrer's, are 3 MiB, with
	// 3,000 tags of 120 characters; a hundred repositories whose
	// descriptions are 16 KiB.
	put := func(ann map[string]string, subject digest.Digest, tag string) meta.Manifest {
		t.Helper()
		m := oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest, Layers: []oci.Descriptor{}, Annotations: ann,
			Config: &oci.Descriptor{MediaType: oci.MediaTypeImageConfig, Digest: digest.FromString("config"), Size: 6}}
		if subject != "" {
			m.Subject = &oci.Descriptor{MediaType: oci.MediaTypeImageManifest, Digest: subject, Size: 100}
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		mm := meta.Manifest{Digest: digest.FromBytes(b), MediaType: oci.MediaTypeImageManifest, Size: int64(len(b)), Content: b, Subject: subject, Annotations: ann}
		if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "bob/big", Manifest: mm, Tag: tag}); err != nil {
			t.Fatal(err)
		}
		return mm
	}
	big := strings.Repeat("stalled answer ", 3<<20/15)
	subject := put(map[string]string{"x": big}, "", "v1").Digest
	put(map[string]string{"y": big}, subject, "")
	small := put(nil, "", "")
	for i := range 3000 {
		if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "bob/big", Tag: fmt.Sprintf("%0120d", i),
			Manifest: small}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		if err := db.Repositories().CreateRepository(ctx, fmt.Sprintf("bob/repo%03d", i), "public", strings.Repeat("d", 16<<10), "bob", 0); err != nil {
			t.Fatal(err)
		}
	}

	for name, path := range map[string]string{
		"referrers": "/v2/bob/big/referrers/" + subject.String(),
		"tags":      "/v2/bob/big/tags/list?n=10000",
		"api":       "/api/v1/repository?namespace=bob",
		"web":       "/repository/bob/big/manifest/" + subject.String(),
	} {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", hs.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := conn.(*net.TCPConn).SetReadBuffer(4096); err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: registry\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			select {
			case p := <-returned:
				if p != strings.SplitN(path, "?", 2)[0] {
					t.Errorf("the handler of %s returned, not that of %s", p, path)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("GET %s of a client that has read nothing for 20 s is still being served (idle period 1 s)", path)
				conn.Close()
				<-returned
			}
		})
	}
}

// smallSendBuffers accepts connections whose send buffer is 16 KiB.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		err = tc.SetWriteBuffer(16 << 10)
	}
	return c, err
}
