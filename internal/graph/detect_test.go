package graph

import (
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/oci"
)

func TestChainIDs(t *testing.T) {
	a, b, c := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")
	got := ChainIDs([]digest.Digest{a, b, c})
	// Computed with sha256sum: printf '%s %s' "$prev" "$diffID" | sha256sum.
	want := []digest.Digest{a,
		"sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676",
		"sha256:2fce7f8ce91bcf0a1428b36e1024639fdbd9469eea762dba98aa749631885106"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("chain[%d] = %s, want %s", i, got[i], want[i])
		}
	}
	// Same first two layers, a different third: the prefix agrees.
	other := ChainIDs([]digest.Digest{a, b, digest.FromString("d")})
	if other[1] != got[1] || other[2] == got[2] {
		t.Fatalf("prefix: %v vs %v", other, got)
	}
	// A different first layer changes every chain ID.
	moved := ChainIDs([]digest.Digest{c, b})
	if moved[1] == got[1] {
		t.Fatal("chain IDs ignore the layer order")
	}
	if len(ChainIDs(nil)) != 0 {
		t.Fatal("chain IDs of no layers")
	}
}

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`{"os":"linux","architecture":"arm64","variant":"v8","rootfs":{"type":"layers","diff_ids":["` +
		digest.FromString("x").String() + `"]}}`))
	if err != nil || c.OS != "linux" || c.Architecture != "arm64" || c.Variant != "v8" || len(c.DiffIDs) != 1 {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []string{`{}`, `not json`, `{"rootfs":{"type":"other"}}`, `{"rootfs":{"type":"layers","diff_ids":["sha256:zz"]}}`} {
		if _, err := ParseConfig([]byte(bad)); !errors.Is(err, ErrNotImage) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func TestParseImageName(t *testing.T) {
	d := digest.FromString("x")
	for _, tc := range []struct {
		in   string
		want Ref
	}{
		{"ubuntu", Ref{Host: "docker.io", Repository: "library/ubuntu"}},
		{"ubuntu:22.04", Ref{Host: "docker.io", Repository: "library/ubuntu", Tag: "22.04"}},
		{"docker.io/bitnami/redis:7", Ref{Host: "docker.io", Repository: "bitnami/redis", Tag: "7"}},
		{"registry.access.redhat.com/ubi8/openjdk-11-runtime:1.9", Ref{Host: "registry.access.redhat.com", Repository: "ubi8/openjdk-11-runtime", Tag: "1.9"}},
		{"localhost:5000/base/img:1@" + d.String(), Ref{Host: "localhost:5000", Repository: "base/img", Tag: "1", Digest: d}},
		{"berth.example.com/a/b@" + d.String(), Ref{Host: "berth.example.com", Repository: "a/b", Digest: d}},
		{"localhost/x", Ref{Host: "localhost", Repository: "x"}},
	} {
		got, err := ParseImageName(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v %v, want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "   ", "a/b@sha256:nothex"} {
		if _, err := ParseImageName(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestBaseAnnotations(t *testing.T) {
	d := digest.FromString("base")
	r, ok := BaseAnnotations(map[string]string{AnnotationBaseName: "quay.io/ns/base:1", AnnotationBaseDigest: d.String()})
	if !ok || r.Host != "quay.io" || r.Repository != "ns/base" || r.Tag != "1" || r.Digest != d {
		t.Fatalf("%+v %v", r, ok)
	}
	if _, ok := BaseAnnotations(map[string]string{"other": "x"}); ok {
		t.Fatal("no annotations read as a base")
	}
	if _, ok := BaseAnnotations(map[string]string{AnnotationBaseDigest: "sha256:bad"}); ok {
		t.Fatal("a malformed digest read as a base")
	}
	if r, ok := BaseAnnotations(map[string]string{AnnotationBaseDigest: d.String()}); !ok || r.Digest != d || r.Repository != "" {
		t.Fatalf("digest only: %+v %v", r, ok)
	}
}

func TestProvenanceMaterials(t *testing.T) {
	base := digest.FromString("base")
	front := digest.FromString("frontend")
	v02 := `{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://slsa.dev/provenance/v0.2","predicate":{"materials":[
		{"uri":"pkg:docker/docker/dockerfile@1.7?platform=linux%2Famd64","digest":{"sha256":"` + front.Encoded() + `"}},
		{"uri":"pkg:docker/localhost%3A5000/base/img@1.9?platform=linux%2Famd64","digest":{"sha256":"` + base.Encoded() + `"}},
		{"uri":"https://github.com/x/y.git#main","digest":{"sha1":"abc"}}]}}`
	got, err := ProvenanceMaterials([]byte(v02))
	if err != nil || len(got) != 2 {
		t.Fatalf("%+v %v", got, err)
	}
	if got[1].Host != "localhost:5000" || got[1].Repository != "base/img" || got[1].Tag != "1.9" || got[1].Digest != base {
		t.Fatalf("base material: %+v", got[1])
	}
	if got[0].Repository != "docker/dockerfile" || got[0].Digest != front {
		t.Fatalf("frontend material: %+v", got[0])
	}
	v1 := `{"predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"resolvedDependencies":[
		{"uri":"docker-image://quay.io/ns/base:2","digest":{"sha256":"` + base.Encoded() + `"}}]}}}`
	if got, err := ProvenanceMaterials([]byte(v1)); err != nil || len(got) != 1 || got[0].Repository != "ns/base" || got[0].Tag != "2" {
		t.Fatalf("v1: %+v %v", got, err)
	}
	if got, err := ProvenanceMaterials([]byte(`{"predicateType":"https://spdx.dev/Document"}`)); err != nil || got != nil {
		t.Fatalf("SBOM statement: %+v %v", got, err)
	}
	if _, err := ProvenanceMaterials([]byte(`{`)); err == nil {
		t.Fatal("malformed statement accepted")
	}
}

func TestAttestation(t *testing.T) {
	d := digest.FromString("image")
	if got, ok := Attestation(map[string]string{oci.DockerReferenceType: oci.DockerAttestationType, oci.DockerReferenceDigest: d.String()}); !ok || got != d {
		t.Fatalf("%s %v", got, ok)
	}
	if _, ok := Attestation(map[string]string{oci.DockerReferenceDigest: d.String()}); ok {
		t.Fatal("an entry without the type read as an attestation")
	}
}
