package registry

import (
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/oci"
)

// FuzzParsePath: the router never panics, and whatever it accepts names a
// valid repository, a known kind, and for blobs and referrers a valid
// digest; a path it refuses gets a spec error code.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"/v2/", "/v2", "/v2/_catalog", "/v2/a/b/c/tags/list", "/v2/a/manifests/latest",
		"/v2/a/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
		"/v2/a/blobs/uploads/", "/v2/a/blobs/uploads", "/v2/a/blobs/uploads/0b6a7a4e-7d0c-4a53-a1a6-111111111111",
		"/v2/a/referrers/sha256:0000000000000000000000000000000000000000000000000000000000000000",
		"/v2/a/../b/manifests/x", "/v2//a/tags/list", "/v2/a/./b/blobs/uploads/", "/v2/%00/tags/list",
		"/v2/manifests/manifests/manifests", "/v2/blobs/uploads/blobs/uploads/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rt, err := parsePath(p)
		if err != nil {
			if err.Code == "" || err.Status < 400 {
				t.Fatalf("%q: refusal without a spec error: %+v", p, err)
			}
			return
		}
		switch rt.kind {
		case "base", "catalog":
			return
		case "tags", "manifest", "blob", "uploads", "upload", "referrers":
		default:
			t.Fatalf("%q: unknown kind %q", p, rt.kind)
		}
		if verr := oci.ValidateName(rt.name); verr != nil {
			t.Fatalf("%q: accepted invalid name %q: %v", p, rt.name, verr)
		}
		for _, seg := range strings.Split(rt.name, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("%q: name %q has a %q segment", p, rt.name, seg)
			}
		}
		if (rt.kind == "blob" || rt.kind == "referrers") && rt.digest.Validate() != nil {
			t.Fatalf("%q: accepted invalid digest %q", p, rt.digest)
		}
		if rt.kind == "upload" && !validUploadID(rt.ref) {
			t.Fatalf("%q: accepted upload id %q", p, rt.ref)
		}
	})
}
