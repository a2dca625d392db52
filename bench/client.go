package main

// A lean OCI distribution client on net/http. It follows the request pattern
// of go-containerregistry's remote.Write: HEAD the blob, POST an upload,
// PATCH the whole body in one stream, PUT ?digest= to commit, then PUT the
// manifest by tag. Using net/http directly keeps client overhead minimal and
// identical for both registries, and the bench free of extra dependencies.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

const (
	mtOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mtOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mtOCIConfig      = "application/vnd.oci.image.config.v1+json"
	mtOCILayer       = "application/vnd.oci.image.layer.v1.tar+gzip"
	mtDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mtDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// manifestAccept is what docker, crane and containerd send when pulling by tag.
var manifestAccept = strings.Join([]string{mtOCIManifest, mtOCIIndex, mtDockerManifest, mtDockerList}, ", ")

// newClient returns a keep-alive client; bufKiB sizes the connection buffers.
func newClient(conns, bufKiB int) *http.Client {
	tr := &http.Transport{
		Proxy:               nil, // loopback: never go through a proxy from the environment
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns * 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		WriteBufferSize:     bufKiB << 10,
		ReadBufferSize:      bufKiB << 10,
	}
	return &http.Client{Transport: tr}
}

// registry is a client bound to one server.
type registry struct {
	base   string // http://host:port
	client *http.Client
}

func (r *registry) url(path string) string { return r.base + path }

// do sends req and checks that the status is one of want; the body is drained
// and closed unless keep is set.
func (r *registry) do(req *http.Request, keep bool, want ...int) (*http.Response, error) {
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	for _, w := range want {
		if resp.StatusCode == w {
			if !keep {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			return resp, nil
		}
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	resp.Body.Close()
	return nil, fmt.Errorf("%s %s: got %s, want %v: %s", req.Method, req.URL.Path, resp.Status, want, strings.TrimSpace(string(body)))
}

// location resolves the Location header of resp against the request URL.
func location(resp *http.Response) (*url.URL, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil, fmt.Errorf("%s %s: no Location header", resp.Request.Method, resp.Request.URL.Path)
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("bad Location %q: %w", loc, err)
	}
	return u, nil
}

// blobExists is the HEAD clients send before uploading.
func (r *registry) blobExists(repo, digest string) (bool, error) {
	req, _ := http.NewRequest(http.MethodHead, r.url("/v2/"+repo+"/blobs/"+digest), nil)
	resp, err := r.do(req, false, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return false, err
	}
	return resp.StatusCode == http.StatusOK, nil
}

// pushBlob uploads size bytes from body as digest. mode "patch" streams the
// body in one PATCH then commits with an empty PUT (docker, ggcr); mode "put"
// sends the body with the committing PUT (the OCI spec's POST-then-PUT
// monolithic upload).
func (r *registry) pushBlob(repo, digest string, body io.Reader, size int64, mode string) error {
	req, _ := http.NewRequest(http.MethodPost, r.url("/v2/"+repo+"/blobs/uploads/"), nil)
	resp, err := r.do(req, false, http.StatusAccepted)
	if err != nil {
		return err
	}
	loc, err := location(resp)
	if err != nil {
		return err
	}
	if mode == "patch" {
		req, _ = http.NewRequest(http.MethodPatch, loc.String(), body)
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
		if resp, err = r.do(req, false, http.StatusAccepted, http.StatusNoContent); err != nil {
			return err
		}
		if loc, err = location(resp); err != nil {
			return err
		}
		body, size = nil, 0
	}
	q := loc.Query()
	q.Set("digest", digest)
	loc.RawQuery = q.Encode()
	req, _ = http.NewRequest(http.MethodPut, loc.String(), body)
	req.ContentLength = size
	if body == nil {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	_, err = r.do(req, false, http.StatusCreated)
	return err
}

// pushBlobFile streams a file (never loaded into memory) as one blob.
func (r *registry) pushBlobFile(repo, digest, path, mode string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	// Passing the *os.File lets net/http hand it to sendfile(2).
	return fi.Size(), r.pushBlob(repo, digest, f, fi.Size(), mode)
}

// pullBlob GETs a blob, hashing it as it streams, and checks the digest.
func (r *registry) pullBlob(repo, digest string, buf []byte) (int64, error) {
	return r.pullURL(r.url("/v2/"+repo+"/blobs/"+digest), digest, buf)
}

// pullURL GETs url, hashing the body as it streams, and checks the digest.
func (r *registry) pullURL(url, digest string, buf []byte) (int64, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	resp, err := r.do(req, true, http.StatusOK)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, buf)
	if err != nil {
		return n, fmt.Errorf("GET blob after %d bytes: %w", n, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return n, fmt.Errorf("GET blob: digest mismatch: got %s, want %s (%d bytes)", got, digest, n)
	}
	return n, nil
}

// pushManifest PUTs a manifest by tag or digest.
func (r *registry) pushManifest(repo, ref, mediaType string, body []byte) error {
	req, _ := http.NewRequest(http.MethodPut, r.url("/v2/"+repo+"/manifests/"+ref), bytes.NewReader(body))
	req.Header.Set("Content-Type", mediaType)
	_, err := r.do(req, false, http.StatusCreated)
	return err
}

// pushImage uploads a small image the way ggcr's remote.Write does.
func (r *registry) pushImage(repo, tag string, img *smallImage) error {
	for _, b := range []struct {
		digest string
		data   []byte
	}{{img.configDigest, img.config}, {img.layerDigest, img.layer}} {
		ok, err := r.blobExists(repo, b.digest)
		if err != nil {
			return err
		}
		if ok {
			continue
		}
		if err := r.pushBlob(repo, b.digest, bytes.NewReader(b.data), int64(len(b.data)), "patch"); err != nil {
			return err
		}
	}
	return r.pushManifest(repo, tag, mtOCIManifest, img.manifest)
}

// getManifest is one manifest GET by tag, body drained, for the load test.
func (r *registry) getManifest(req *http.Request) error {
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET manifest: %s", resp.Status)
	}
	return nil
}
