package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestHostileV2Inputs sends the distribution API malformed manifests,
// ranges, upload headers and query values, as the superuser. Each gets a
// 4xx with the spec's error body (or is served), never a 5xx, and what
// was stored before is served whole afterwards.
func TestHostileV2Inputs(t *testing.T) {
	w := newWorld(t)
	root := w.creds["root"]
	const repo = "acme/public"
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	layer := []byte("layer of " + repo)
	cfgD, layerD := digest.FromBytes(cfg), digest.FromBytes(layer)
	requests, fails := 0, 0
	send := func(method, path string, body []byte, headers ...string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, w.url+path, bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		req.SetBasicAuth(root[0], root[1])
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		requests++
		if resp.StatusCode >= 500 {
			fails++
			if fails <= 40 {
				short := string(body)
				if len(short) > 100 {
					short = short[:100] + "..."
				}
				t.Errorf("%s %s %v (body %q): %d %s", method, truncate(path), headers, short, resp.StatusCode, truncate(string(msg)))
			}
		}
		if resp.StatusCode >= 400 && method != http.MethodHead && resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			var e struct {
				Errors []struct{ Code string } `json:"errors"`
			}
			if json.Unmarshal(msg, &e) != nil || len(e.Errors) == 0 || e.Errors[0].Code == "" {
				t.Errorf("%s %s %v: %d without the spec's error body: %s", method, truncate(path), headers, resp.StatusCode, truncate(string(msg)))
			}
		}
		return resp
	}
	desc := func(mt string, d digest.Digest, size int) string {
		return fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d}`, mt, d, size)
	}
	good := desc("application/vnd.oci.image.config.v1+json", cfgD, len(cfg))
	goodLayer := desc("application/vnd.oci.image.layer.v1.tar+gzip", layerD, len(layer))
	image := func(config, layers string, extra string) []byte {
		return []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":` + config + `,"layers":[` + layers + `]` + extra + `}`)
	}
	missing := digest.FromString("not stored")
	manifests := [][]byte{
		nil, []byte("{"), []byte("null"), []byte("[]"), []byte(`"x"`), []byte("{}"),
		[]byte(`{"schemaVersion":1}`), []byte(`{"schemaVersion":"2"}`), []byte(`{"schemaVersion":2}`),
		[]byte(strings.Repeat("[", 100000)),
		image(good, goodLayer, ""), // stored: the baseline
		image(desc("application/vnd.oci.image.config.v1+json", missing, 5), goodLayer, ""),
		image(good, desc("application/vnd.oci.image.layer.v1.tar+gzip", missing, 5), ""),
		image(good, desc("application/vnd.oci.image.layer.v1.tar+gzip", layerD, -1), ""),
		image(good, desc("application/vnd.oci.image.layer.v1.tar+gzip", layerD, len(layer)+1), ""),
		image(good, desc("", layerD, len(layer)), ""),
		image(good, `{"mediaType":"x","digest":"sha256:abc","size":1}`, ""),
		image(good, `{"mediaType":"x","digest":"sha512:`+strings.Repeat("a", 128)+`","size":1}`, ""),
		image(good, `{"mediaType":"x","digest":"md5:abc","size":1}`, ""),
		image(good, `{"mediaType":"x","digest":"","size":1}`, ""),
		image(good, `null`, ""),
		image(good, `1`, ""),
		image(`null`, goodLayer, ""),
		image(`"x"`, goodLayer, ""),
		image(good, strings.Repeat(goodLayer+",", 5000)+goodLayer, ""),
		image(good, goodLayer, `,"subject":`+desc("application/vnd.oci.image.manifest.v1+json", missing, 10)),
		image(good, goodLayer, `,"subject":null`),
		image(good, goodLayer, `,"subject":{"digest":"sha256:zz"}`),
		image(good, goodLayer, `,"annotations":{"a":1}`),
		image(good, goodLayer, `,"annotations":{"`+strings.Repeat("k", 100000)+`":"v"}`),
		image(good, goodLayer, `,"artifactType":"not a media type"`),
		image(good, goodLayer, `,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"`),
		[]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + desc("application/vnd.oci.image.manifest.v1+json", missing, 10) + `]}`),
		[]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + w.digest["public"].String() + `","size":1,"platform":{"os":1}}]}`),
		[]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}`),
		[]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[null]}`),
		[]byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{}]}`),
		[]byte("\xff\xfe\x00{"),
	}
	contentTypes := []string{"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
		"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.v1+prettyjws",
		"", "text/plain", "application/json; charset=utf-8", "a/b; x=\"", strings.Repeat("x", 5000)}
	refs := []string{"t", "", ".", "..", "-x", strings.Repeat("t", 129), "sha256:" + strings.Repeat("0", 64), "sha256:zz", "a%00b", "t%2Fx"}
	for _, m := range manifests {
		for _, ct := range contentTypes {
			send("PUT", "/v2/"+repo+"/manifests/hostile", m, "Content-Type", ct)
		}
		for _, ref := range refs {
			send("PUT", "/v2/"+repo+"/manifests/"+ref, m, "Content-Type", "application/vnd.oci.image.manifest.v1+json")
		}
	}
	// Reads and deletes with hostile references, queries and ranges.
	for _, ref := range refs {
		for _, method := range []string{"GET", "HEAD", "DELETE"} {
			send(method, "/v2/"+repo+"/manifests/"+ref, nil)
			send(method, "/v2/"+repo+"/blobs/"+ref, nil)
		}
		send("GET", "/v2/"+repo+"/referrers/"+ref, nil)
		send("GET", "/v2/"+repo+"/referrers/"+w.digest["public"].String()+"?artifactType="+ref, nil)
	}
	for _, q := range []string{"-1", "0", "99999999999999999999", "abc", "", "1e9"} {
		for _, last := range []string{"", "zz", strings.Repeat("z", 300), "%00"} {
			send("GET", "/v2/"+repo+"/tags/list?n="+q+"&last="+last, nil)
			send("GET", "/v2/_catalog?n="+q+"&last="+last, nil)
		}
	}
	for _, rng := range []string{"bytes=-1", "bytes=5-2", "bytes=0-0,2-3", "bytes=99999999999-", "bytes=0-99999999999999999999", "bytes=", "items=0-1", "bytes=-0", "bytes=--1"} {
		send("GET", "/v2/"+repo+"/blobs/"+layerD.String(), nil, "Range", rng)
	}
	// Uploads: hostile digests, mounts, ranges and lengths.
	for _, q := range []string{"digest=sha256:abc", "digest=sha256:" + strings.Repeat("0", 64), "digest=", "digest=%00", "mount=" + layerD.String() + "&from=../x",
		"mount=" + layerD.String() + "&from=" + strings.Repeat("a/", 200), "mount=sha256:zz&from=acme/private", "mount=&from="} {
		send("POST", "/v2/"+repo+"/blobs/uploads/?"+q, []byte("data"))
	}
	for _, hdr := range [][]string{{"Content-Range", "garbage"}, {"Content-Range", "5-3"}, {"Content-Range", "0-"}, {"Content-Range", "10-20"},
		{"Content-Range", "0-99999999999999999999"}, {"Content-Length", "-1"}, {"Content-Type", "x"}} {
		resp := send("POST", "/v2/"+repo+"/blobs/uploads/", nil)
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusAccepted || loc == "" {
			t.Fatalf("start an upload: %d", resp.StatusCode)
		}
		loc = strings.TrimPrefix(loc, w.url)
		send("PATCH", loc, []byte("0123456789"), hdr...)
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		for _, d := range []string{"", "sha256:zz", "sha256:" + strings.Repeat("0", 64), digest.FromString("0123456789").String()} {
			send("PUT", loc+sep+"digest="+d, nil, hdr...)
		}
		send("GET", loc, nil)
		send("DELETE", loc, nil)
	}
	for _, id := range []string{"x", "..", strings.Repeat("a", 5000), "00000000-0000-0000-0000-000000000000", "%00"} {
		for _, method := range []string{"GET", "PATCH", "PUT", "DELETE"} {
			send(method, "/v2/"+repo+"/blobs/uploads/"+id, []byte("x"))
		}
	}
	t.Logf("%d requests, %d answered 5xx", requests, fails)
	// What was stored before is whole.
	if resp := send("GET", "/v2/"+repo+"/manifests/v1", nil, "Accept", "application/vnd.oci.image.manifest.v1+json"); resp.StatusCode != 200 {
		t.Fatalf("GET the image stored before: %d", resp.StatusCode)
	}
	if resp := send("GET", "/v2/"+repo+"/blobs/"+layerD.String(), nil); resp.StatusCode != 200 {
		t.Fatalf("GET its layer: %d", resp.StatusCode)
	}
}
