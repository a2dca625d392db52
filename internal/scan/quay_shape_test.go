package scan_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan/index"
)

// TestSecurityAnswerQuayShape: the security answer has Quay's shape
// where Quay's clients read it: every feature has its Vulnerabilities
// list, [] when none affects it (Quay always sends it); NVD.CVSSv3 and
// BaseScores hold a CVSS v3 vector's data only: a record scored by a v4
// or a v2 vector alone has neither (its v4 vector is under Berth's
// NVD.CVSSv4, its v2 under NVD.CVSSv2), while a v3 vector fills both.
func TestSecurityAnswerQuayShape(t *testing.T) {
	const (
		v4 = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"
		v2 = "AV:N/AC:L/Au:N/C:P/I:P/A:P"
	)
	e := newEnv(t, "sqlite", index.Limits{})
	affects := func(name string) string {
		return `"affected":[{"package":{"ecosystem":"Debian:12","name":"` + name + `"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]`
	}
	e.importJSON(
		`{"id":"DEBIAN-CVE-2026-0401","modified":"`+modifiedBase+`","severity":[{"type":"CVSS_V4","score":"`+v4+`"}],`+affects("zlib")+`}`,
		`{"id":"DEBIAN-CVE-2026-0402","modified":"`+modifiedBase+`","severity":[{"type":"CVSS_V2","score":"`+v2+`"}],`+affects("xz-utils")+`}`,
		`{"id":"DEBIAN-CVE-2026-0403","modified":"`+modifiedBase+`","severity":[{"type":"CVSS_V3","score":"`+vector98+`"},{"type":"CVSS_V4","score":"`+v4+`"}],`+affects("bzip2")+`}`)
	dgst, _ := e.push("acme/app", "1", debianLayer(t))
	e.drain()
	m, err := e.db.Manifests().GetManifest(context.Background(), "acme/app", "", mustDigest(t, dgst), true)
	if err != nil {
		t.Fatal(err)
	}
	info, err := e.svc.Security(context.Background(), "acme/app", m, true)
	if err != nil || info.Status != meta.ScanScanned {
		t.Fatalf("security: %s, %v", info.Status, err)
	}
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Data struct {
			Layer struct {
				Features []map[string]json.RawMessage
			}
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	type nvd struct {
		CVSSv3, CVSSv4, CVSSv2 *struct {
			Vectors string
			Score   float64
		}
	}
	type vuln struct {
		Name     string
		Metadata struct{ NVD nvd }
	}
	features := map[string]map[string]json.RawMessage{}
	for _, f := range doc.Data.Layer.Features {
		var name string
		_ = json.Unmarshal(f["Name"], &name)
		features[name] = f
	}
	vulnsOf := func(name string) ([]vuln, []float64) {
		t.Helper()
		f := features[name]
		if f == nil {
			t.Fatalf("no feature %s in %s", name, b)
		}
		raw, ok := f["Vulnerabilities"]
		if !ok {
			t.Errorf("%s: no Vulnerabilities key (Quay always sends one)", name)
		}
		var vs []vuln
		var scores []float64
		if err := json.Unmarshal(raw, &vs); err != nil || vs == nil {
			t.Errorf("%s: Vulnerabilities %s, want a list", name, raw)
		}
		_ = json.Unmarshal(f["BaseScores"], &scores)
		return vs, scores
	}
	if vs, _ := vulnsOf("base-files"); len(vs) != 0 {
		t.Errorf("base-files: %d vulnerabilities, want none", len(vs))
	}
	if vs, scores := vulnsOf("zlib1g"); len(vs) != 1 || vs[0].Metadata.NVD.CVSSv3 != nil || len(scores) != 0 ||
		vs[0].Metadata.NVD.CVSSv4 == nil || vs[0].Metadata.NVD.CVSSv4.Vectors != v4 {
		t.Errorf("zlib1g (a v4 vector alone): %+v, BaseScores %v; want no CVSSv3, no base score, the v4 vector under CVSSv4", vs, scores)
	}
	if vs, scores := vulnsOf("liblzma5"); len(vs) != 1 || vs[0].Metadata.NVD.CVSSv3 != nil || len(scores) != 0 ||
		vs[0].Metadata.NVD.CVSSv2 == nil || vs[0].Metadata.NVD.CVSSv2.Vectors != v2 || vs[0].Metadata.NVD.CVSSv2.Score != 7.5 {
		t.Errorf("liblzma5 (a v2 vector alone): %+v, BaseScores %v; want no CVSSv3, no base score, the v2 vector under CVSSv2", vs, scores)
	}
	if vs, scores := vulnsOf("libbz2-1.0"); len(vs) != 1 || vs[0].Metadata.NVD.CVSSv3 == nil || vs[0].Metadata.NVD.CVSSv3.Vectors != vector98 ||
		vs[0].Metadata.NVD.CVSSv3.Score != 9.8 || len(scores) != 1 || scores[0] != 9.8 || vs[0].Metadata.NVD.CVSSv4 == nil {
		t.Errorf("libbz2-1.0 (v3 and v4 vectors): %+v, BaseScores %v; want the v3 vector under CVSSv3, its score in BaseScores, the v4 under CVSSv4", vs, scores)
	}
}
