package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/server"
)

// BenchmarkManifestGetServed measures a manifest GET by tag, in
// parallel, through the whole handler that server.New builds (SQLite,
// auth off), with and without metrics, to show the cost of the metrics
// middleware on the hot pull path:
//
//	go test ./internal/server -run '^$' -bench ManifestGetServed -count 5
func BenchmarkManifestGetServed(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("metrics=%v", on), func(b *testing.B) {
			cfg := config.Default()
			cfg.DataDir = b.TempDir()
			cfg.Storage.Filesystem.Fsync = false
			cfg.Auth.Mode = "none"
			cfg.Scan.Enabled = false
			cfg.Metrics.Enabled = on
			srv, err := server.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { srv.Close() })
			hs := httptest.NewServer(srv.Handler())
			b.Cleanup(hs.Close)
			do := func(method, url string, body []byte, header ...string) int {
				req, _ := http.NewRequest(method, url, bytes.NewReader(body))
				for i := 0; i+1 < len(header); i += 2 {
					req.Header.Set(header[i], header[i+1])
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode
			}
			conf := []byte(`{"architecture":"amd64","os":"linux"}`)
			cd := digest.FromBytes(conf)
			do("POST", hs.URL+"/v2/bench/app/blobs/uploads/?digest="+cd.String(), conf)
			m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"%s","size":%d},"layers":[]}`,
				oci.MediaTypeImageManifest, oci.MediaTypeImageConfig, cd, len(conf))
			if code := do("PUT", hs.URL+"/v2/bench/app/manifests/latest", []byte(m), "Content-Type", oci.MediaTypeImageManifest); code != 201 {
				b.Fatalf("push: %d", code)
			}
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if code := do("GET", hs.URL+"/v2/bench/app/manifests/latest", nil, "Accept", oci.MediaTypeImageManifest); code != 200 {
						b.Errorf("status %d", code)
						return
					}
				}
			})
		})
	}
}
