package index

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// ubiManifest is a content manifest as UBI images carry it.
func ubiManifest(sets ...string) string {
	return `{"metadata": {"icm_version": 1, "icm_spec": "https://raw.githubusercontent.com/containerbuildsystem/atomic-reactor/master/atomic_reactor/schemas/content_manifest.json", "image_layer_index": 0},
	"content_sets": ["` + strings.Join(sets, `", "`) + `"],
	"image_contents": [{"purl": "pkg:rpm/redhat/zlib@1.2.11-18.el8_5?arch=s390x"}]}`
}

const ubiOSRelease = "NAME=\"Red Hat Enterprise Linux\"\nVERSION=\"8.6 (Ootpa)\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"8.6\"\nCPE_NAME=\"cpe:/o:redhat:enterprise_linux:8::baseos\"\n"

// TestIndexUBILayer reads a UBI-style layer: the SQLite rpm database (real
// UBI 8 package headers, testdata/../../testdata/gen-ubi8-rpmdb.go) and
// the content manifest beside it.
func TestIndexUBILayer(t *testing.T) {
	isolateTemp(t) // the rpmdb is copied to a temporary directory
	db, err := os.ReadFile("../testdata/ubi8-rpmdb.sqlite")
	if err != nil {
		t.Fatal(err)
	}
	blob := gz(t, buildTar(t,
		file("etc/os-release", ubiOSRelease),
		entry{name: "var/lib/rpm/rpmdb.sqlite", body: db, mode: 0o644},
		file("root/buildinfo/content_manifests/ubi8-container-8.6-754.json", ubiManifest("rhel-8-for-s390x-baseos-rpms", "rhel-8-for-s390x-appstream-rpms")),
		file("root/buildinfo/Dockerfile-ubi8-8.6-754", "FROM scratch\n"),
	))
	res := index(t, "sha256:ubi", blob, mtGzip)
	var got []string
	for _, p := range res.Packages {
		got = append(got, p.Kind+" "+p.Name+" "+p.Version)
	}
	if want := []string{"rpm gdbm-libs 1:1.18-1.el8", "rpm which 2.21-17.el8", "rpm zlib 1.2.11-18.el8_5"}; !slices.Equal(got, want) {
		t.Fatalf("packages = %q, want %q", got, want)
	}
	want := map[string][]string{"root/buildinfo/content_manifests/ubi8-container-8.6-754.json": {"rhel-8-for-s390x-appstream-rpms", "rhel-8-for-s390x-baseos-rpms"}}
	if !mapsEqual(res.ContentManifests, want) {
		t.Fatalf("content manifests = %v, want %v", res.ContentManifests, want)
	}
	if img := Merge([]LayerResult{res}); !slices.Equal(img.ContentSets, []string{"rhel-8-for-s390x-appstream-rpms", "rhel-8-for-s390x-baseos-rpms"}) {
		t.Fatalf("image content sets = %v", img.ContentSets)
	}
}

// TestMergeContentManifests: the image's content sets are those of the
// content manifests still present after every layer: a later layer adds
// its own, and deletes or rewrites earlier ones.
func TestMergeContentManifests(t *testing.T) {
	const dir = "root/buildinfo/content_manifests/"
	base := index(t, "sha256:base", buildTar(t, file(dir+"ubi8.json", ubiManifest("rhel-8-for-x86_64-baseos-rpms", "rhel-8-for-x86_64-appstream-rpms"))), mtTar)
	app := index(t, "sha256:app", buildTar(t,
		file(dir+"app.json", ubiManifest("rhel-8-for-x86_64-appstream-rpms", "codeready-builder-for-rhel-8-x86_64-rpms", " ", "")),
		file(dir+"notes.txt", "not a manifest"),
		file("root/buildinfo/content_manifests.json", `{"content_sets": ["elsewhere-rpms"]}`),
	), mtTar)
	if len(app.ContentManifests) != 1 {
		t.Fatalf("app layer manifests = %v, want only app.json", app.ContentManifests)
	}
	deleted := index(t, "sha256:del", buildTar(t, file(dir+".wh.ubi8.json", "")), mtTar)
	opaque := index(t, "sha256:opq", buildTar(t, file(dir+".wh..wh..opq", "")), mtTar)
	broken := index(t, "sha256:broken", buildTar(t, file(dir+"app.json", "{not json")), mtTar)
	if len(broken.Warnings) != 1 || !strings.Contains(broken.Warnings[0], "content manifest") {
		t.Fatalf("broken manifest warnings = %q", broken.Warnings)
	}

	for _, tc := range []struct {
		name   string
		layers []LayerResult
		want   []string
	}{
		{"base", []LayerResult{base}, []string{"rhel-8-for-x86_64-appstream-rpms", "rhel-8-for-x86_64-baseos-rpms"}},
		{"layered", []LayerResult{base, app}, []string{"codeready-builder-for-rhel-8-x86_64-rpms", "rhel-8-for-x86_64-appstream-rpms", "rhel-8-for-x86_64-baseos-rpms"}},
		{"base deleted", []LayerResult{base, app, deleted}, []string{"codeready-builder-for-rhel-8-x86_64-rpms", "rhel-8-for-x86_64-appstream-rpms"}},
		{"opaque directory", []LayerResult{base, app, opaque}, nil},
		{"rewritten unreadable", []LayerResult{base, app, broken}, []string{"rhel-8-for-x86_64-appstream-rpms", "rhel-8-for-x86_64-baseos-rpms"}},
		{"none", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := Merge(tc.layers)
			roundTrip(t, img)
			if !slices.Equal(img.ContentSets, tc.want) {
				t.Fatalf("content sets = %q, want %q", img.ContentSets, tc.want)
			}
		})
	}
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !slices.Equal(v, w) {
			return false
		}
	}
	return true
}

// TestIndexBuildInfoContentSets: Konflux images (ubi9-minimal 9.6) carry
// their content manifest only as usr/share/buildinfo/content-sets.json;
// the other JSON files there (labels.json) name no content sets and are
// not content manifests.
func TestIndexBuildInfoContentSets(t *testing.T) {
	res := index(t, "sha256:konflux", buildTar(t,
		file("etc/os-release", ubiOSRelease),
		file("usr/share/buildinfo/content-sets.json", `{"metadata": {"icm_version": 1, "icm_spec": "https://raw.githubusercontent.com/containerbuildsystem/atomic-reactor/master/atomic_reactor/schemas/content_manifest.json", "image_layer_index": 0},
  "from_dnf_hint": true, "content_sets": ["rhel-9-for-x86_64-baseos-rpms", "rhel-9-for-x86_64-appstream-rpms"]}`),
		file("usr/share/buildinfo/labels.json", `{"name": "ubi9/ubi-minimal", "version": "9.6"}`),
		file("usr/share/buildinfo/notes.json", `["not an object"]`),
	), mtTar)
	want := map[string][]string{"usr/share/buildinfo/content-sets.json": {"rhel-9-for-x86_64-appstream-rpms", "rhel-9-for-x86_64-baseos-rpms"}}
	if !mapsEqual(res.ContentManifests, want) || len(res.Warnings) != 0 {
		t.Fatalf("content manifests = %v (warnings %q), want %v", res.ContentManifests, res.Warnings, want)
	}
	if img := Merge([]LayerResult{res}); !slices.Equal(img.ContentSets, want["usr/share/buildinfo/content-sets.json"]) {
		t.Fatalf("image content sets = %v", img.ContentSets)
	}
}
