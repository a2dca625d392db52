package registry_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/testenv"
)

func benchServer(b *testing.B, dialect string) string {
	return testenv.New(b, testenv.Options{Dialect: dialect, Open: true}).URL
}

func benchDo(b *testing.B, method, url string, body []byte, headers ...string) *http.Response {
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// BenchmarkManifestGetByTag measures the hot pull path: one manifest GET by
// tag, in parallel.
func BenchmarkManifestGetByTag(b *testing.B) {
	for _, dialect := range metatest.Dialects() {
		b.Run(dialect, func(b *testing.B) {
			url := benchServer(b, dialect)
			cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
			cd := digest.FromBytes(cfg)
			benchDo(b, "POST", url+"/v2/bench/app/blobs/uploads/?digest="+cd.String(), cfg)
			m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"%s","size":%d},"layers":[]}`,
				oci.MediaTypeImageManifest, oci.MediaTypeImageConfig, cd, len(cfg))
			if resp := benchDo(b, "PUT", url+"/v2/bench/app/manifests/latest", []byte(m), "Content-Type", oci.MediaTypeImageManifest); resp.StatusCode != 201 {
				b.Fatalf("push: %d", resp.StatusCode)
			}
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest("GET", url+"/v2/bench/app/manifests/latest", nil)
					req.Header.Set("Accept", oci.MediaTypeImageManifest)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
		})
	}
}

// BenchmarkBlobPush measures a monolithic 8 MiB blob push (hash, write,
// commit, link).
func BenchmarkBlobPush(b *testing.B) {
	url := benchServer(b, "sqlite")
	blob := make([]byte, 8<<20)
	rand.Read(blob)
	b.SetBytes(int64(len(blob)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		blob[0], blob[1], blob[2] = byte(i), byte(i>>8), byte(i>>16) // a new blob each time
		d := digest.FromBytes(blob)
		if resp := benchDo(b, "POST", url+"/v2/bench/app/blobs/uploads/?digest="+d.String(), blob); resp.StatusCode != 201 {
			b.Fatalf("push: %d", resp.StatusCode)
		}
	}
}

// BenchmarkBlobGet measures a 16 MiB blob GET from the filesystem driver,
// read whole by a Go client: to a loopback peer (the buffered copy) and,
// when the host has a non-loopback address, to a peer on that address
// (sendfile; the bytes still go through the host's own network stack).
func BenchmarkBlobGet(b *testing.B) {
	e := testenv.New(b, testenv.Options{Open: true})
	blob := make([]byte, 16<<20)
	rand.Read(blob)
	d := digest.FromBytes(blob)
	if resp := benchDo(b, "POST", e.URL+"/v2/bench/app/blobs/uploads/?digest="+d.String(), blob); resp.StatusCode != 201 {
		b.Fatalf("push: %d", resp.StatusCode)
	}
	// Served as the server serves GETs: under a send idle period.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.Registry.ServeHTTP(w, r.WithContext(registry.WithSendIdle(r.Context(), 30*time.Second)))
	})
	urls := map[string]string{}
	for path, ip := range map[string]net.IP{"loopback": net.IPv4(127, 0, 0, 1), "sendfile": nonLoopbackIP()} {
		if ip == nil {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			b.Fatal(err)
		}
		srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: h}}
		srv.Start()
		b.Cleanup(srv.Close)
		urls[path] = srv.URL
	}
	for _, path := range []string{"loopback", "sendfile"} {
		url, ok := urls[path]
		if !ok {
			continue
		}
		b.Run(path, func(b *testing.B) {
			b.SetBytes(int64(len(blob)))
			for b.Loop() {
				resp, err := http.Get(url + "/v2/bench/app/blobs/" + d.String())
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || n != int64(len(blob)) {
					b.Fatalf("GET: %d, %d bytes", resp.StatusCode, n)
				}
			}
		})
	}
}

// nonLoopbackIP returns an IPv4 address of this host that is not a
// loopback one, or nil.
func nonLoopbackIP() net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP
		}
	}
	return nil
}

// BenchmarkSmallBlobSessionPush measures a 4 KiB blob pushed as clients
// push layers (POST, PATCH, PUT ?digest=): the per-blob fixed cost of a
// session, its claim and the blob's store, which small images pay twice.
func BenchmarkSmallBlobSessionPush(b *testing.B) {
	url := benchServer(b, "sqlite")
	blob := make([]byte, 4<<10)
	rand.Read(blob)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		blob[0], blob[1], blob[2], blob[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24) // a new blob each time
		d := digest.FromBytes(blob)
		resp := benchDo(b, "POST", url+"/v2/bench/app/blobs/uploads/", nil)
		if resp.StatusCode != 202 {
			b.Fatalf("start: %d", resp.StatusCode)
		}
		loc := resp.Header.Get("Location")
		if !strings.HasPrefix(loc, "http") {
			loc = url + loc
		}
		if resp = benchDo(b, "PATCH", loc, blob); resp.StatusCode != 202 {
			b.Fatalf("patch: %d", resp.StatusCode)
		}
		loc = resp.Header.Get("Location")
		if !strings.HasPrefix(loc, "http") {
			loc = url + loc
		}
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		if resp = benchDo(b, "PUT", loc+sep+"digest="+d.String(), nil); resp.StatusCode != 201 {
			b.Fatalf("put: %d", resp.StatusCode)
		}
	}
}
