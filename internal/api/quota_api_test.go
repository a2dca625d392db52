package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// quotaOf decodes a quota view.
type quotaOf struct {
	ID                  int64  `json:"id"`
	LimitBytes          int64  `json:"limit_bytes"`
	Limit               string `json:"limit"`
	DefaultConfig       bool   `json:"default_config"`
	DefaultConfigExists bool   `json:"default_config_exists"`
	Limits              []struct {
		ID           int64  `json:"id"`
		Type         string `json:"type"`
		LimitPercent int    `json:"limit_percent"`
	} `json:"limits"`
}

func (e *orgEnv) quotas(user, org string) []quotaOf {
	e.t.Helper()
	r := e.expect(user, "GET", "/api/v1/organization/"+org+"/quota", "", http.StatusOK)
	var qs []quotaOf
	if err := json.Unmarshal(r.body, &qs); err != nil {
		e.t.Fatalf("quota list %s: %v", r.body, err)
	}
	return qs
}

func TestQuotaAPI(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		e.createOrg("alice", "acme")
		e.putTeam("alice", "acme", "readers", "member")
		e.addMember("alice", "acme", "readers", "bob")
		const base = "/api/v1/organization/acme/quota"

		// Who may set a quota: superusers only (as Quay); the
		// organization's own administrators may not.
		e.expect("", "POST", base, `{"limit_bytes":1000}`, http.StatusUnauthorized)
		e.expect("alice", "POST", base, `{"limit_bytes":1000}`, http.StatusForbidden)
		e.expect("bob", "POST", base, `{"limit_bytes":1000}`, http.StatusForbidden)
		e.expect("root", "POST", "/api/v1/organization/ghost/quota", `{"limit_bytes":1000}`, http.StatusNotFound)
		e.expect("root", "POST", "/api/v1/organization/alice/quota", `{"limit_bytes":1000}`, http.StatusNotFound) // a user, not an organization
		for _, c := range []struct{ name, body string }{
			{"malformed JSON", `{"limit_bytes":`},
			{"no body", ``},
			{"negative", `{"limit_bytes":-5}`},
			{"zero", `{"limit_bytes":0}`},
			{"not a number", `{"limit_bytes":"lots"}`},
			{"fraction", `{"limit_bytes":1.5}`},
			{"unknown field", `{"limit_bytes":10,"soft":true}`},
			{"both", `{"limit_bytes":10,"limit":"1 GiB"}`},
			{"neither", `{}`},
			{"bad human limit", `{"limit":"lots"}`},
			{"human limit without number", `{"limit":"GiB"}`},
			{"human limit too large", `{"limit":"9999999 EiB"}`},
		} {
			if r := e.do("root", "POST", base, c.body); r.status != http.StatusBadRequest {
				t.Fatalf("%s: status %d: %s", c.name, r.status, r.body)
			}
		}
		if qs := e.quotas("bob", "acme"); len(qs) != 0 {
			t.Fatalf("quotas before any: %+v", qs)
		}
		r := e.expect("root", "POST", base, `{"limit_bytes":1000}`, http.StatusCreated)
		if string(r.body) != "\"Created\"\n" {
			t.Fatalf("create answered %q", r.body)
		}
		if !e.audited("acme", "org_create_quota", `"limit_bytes":1000`) {
			t.Fatal("quota creation not audited")
		}
		e.expect("root", "POST", base, `{"limit_bytes":5}`, http.StatusBadRequest) // one per organization

		// Who may read it: members and superusers.
		qs := e.quotas("bob", "acme")
		if len(qs) != 1 || qs[0].LimitBytes != 1000 || qs[0].Limit != "1000.0 Byte" || qs[0].DefaultConfig || qs[0].DefaultConfigExists || qs[0].Limits == nil {
			t.Fatalf("quotas = %+v", qs)
		}
		qid := qs[0].ID
		qpath := fmt.Sprintf("%s/%d", base, qid)
		e.expect("carol", "GET", base, "", http.StatusForbidden)
		e.expect("", "GET", base, "", http.StatusUnauthorized)
		e.expect("root", "GET", "/api/v1/organization/ghost/quota", "", http.StatusNotFound)
		e.expect("carol", "GET", qpath, "", http.StatusForbidden)
		e.expect("bob", "GET", qpath, "", http.StatusOK)
		e.expect("bob", "GET", base+"/999999", "", http.StatusNotFound)
		e.expect("bob", "GET", base+"/first", "", http.StatusNotFound)
		// Another organization's quota is not reachable through acme.
		e.createOrg("carol", "other")
		e.expect("root", "POST", "/api/v1/organization/other/quota", `{"limit":"5 GiB"}`, http.StatusCreated)
		other := e.quotas("carol", "other")
		if len(other) != 1 || other[0].LimitBytes != 5<<30 || other[0].Limit != "5.0 GiB" {
			t.Fatalf("other's quotas = %+v", other)
		}
		e.expect("root", "GET", fmt.Sprintf("%s/%d", base, other[0].ID), "", http.StatusNotFound)
		e.expect("root", "DELETE", fmt.Sprintf("%s/%d", base, other[0].ID), "", http.StatusNotFound)

		// Changes.
		e.expect("alice", "PUT", qpath, `{"limit_bytes":2000}`, http.StatusForbidden)
		e.expect("root", "PUT", qpath, `{"limit_bytes":-1}`, http.StatusBadRequest)
		r = e.expect("root", "PUT", qpath, `{"limit":"2K"}`, http.StatusOK)
		var q quotaOf
		if err := json.Unmarshal(r.body, &q); err != nil || q.LimitBytes != 2000 || q.ID != qid {
			t.Fatalf("PUT answered %s", r.body)
		}
		r = e.expect("root", "PUT", qpath, `{}`, http.StatusOK) // no change
		if err := json.Unmarshal(r.body, &q); err != nil || q.LimitBytes != 2000 {
			t.Fatalf("empty PUT answered %s", r.body)
		}

		// Limits.
		lbase := qpath + "/limit"
		e.expect("alice", "POST", lbase, `{"type":"Warning","threshold_percent":80}`, http.StatusForbidden)
		e.expect("root", "POST", lbase, `{"type":"Warning","threshold_percent":80}`, http.StatusCreated)
		e.expect("root", "POST", lbase, `{"type":"reject","threshold_percent":100}`, http.StatusCreated)
		for _, c := range []struct{ name, body string }{
			{"second Reject", `{"type":"Reject","threshold_percent":90}`},
			{"duplicate", `{"type":"Warning","threshold_percent":80}`},
			{"unknown type", `{"type":"Block","threshold_percent":50}`},
			{"zero", `{"type":"Warning","threshold_percent":0}`},
			{"over 100", `{"type":"Warning","threshold_percent":101}`},
			{"no threshold", `{"type":"Warning"}`},
			{"no type", `{"threshold_percent":50}`},
			{"malformed", `{"type":`},
		} {
			if r := e.do("root", "POST", lbase, c.body); r.status != http.StatusBadRequest {
				t.Fatalf("limit %s: status %d: %s", c.name, r.status, r.body)
			}
		}
		e.expect("root", "POST", base+"/999999/limit", `{"type":"Warning","threshold_percent":50}`, http.StatusNotFound)
		r = e.expect("bob", "GET", lbase, "", http.StatusOK)
		var limits []struct {
			ID           int64  `json:"id"`
			Type         string `json:"type"`
			LimitPercent int    `json:"limit_percent"`
		}
		if err := json.Unmarshal(r.body, &limits); err != nil || len(limits) != 2 || limits[0].Type != "Reject" || limits[0].LimitPercent != 100 ||
			limits[1].Type != "Warning" || limits[1].LimitPercent != 80 {
			t.Fatalf("limits = %s", r.body)
		}
		warn := fmt.Sprintf("%s/%d", lbase, limits[1].ID)
		r = e.expect("bob", "GET", warn, "", http.StatusOK)
		if m := r.json(t); m["type"] != "Warning" || m["limit_percent"] != 80.0 {
			t.Fatalf("limit = %s", r.body)
		}
		e.expect("carol", "GET", warn, "", http.StatusForbidden)
		e.expect("bob", "PUT", warn, `{"threshold_percent":85}`, http.StatusForbidden)
		e.expect("root", "PUT", warn, `{"type":"Reject"}`, http.StatusBadRequest) // a second Reject
		e.expect("root", "PUT", warn, `{"threshold_percent":150}`, http.StatusBadRequest)
		r = e.expect("root", "PUT", warn, `{"threshold_percent":85}`, http.StatusOK)
		if err := json.Unmarshal(r.body, &q); err != nil || len(q.Limits) != 2 || q.Limits[1].LimitPercent != 85 {
			t.Fatalf("limit PUT answered %s", r.body)
		}
		if !e.audited("acme", "org_change_quota_limit", `"threshold_percent":85`) {
			t.Fatal("limit change not audited")
		}

		// The organization's description carries Quay's quota fields
		// for members.
		org := e.expect("bob", "GET", "/api/v1/organization/acme", "", http.StatusOK).json(t)
		want := map[string]any{"quota_bytes": 0.0, "configured_quota": 2000.0, "running_backfill": "complete", "backfill_status": "complete"}
		if !reflect.DeepEqual(org["quota_report"], want) {
			t.Fatalf("quota_report = %v, want %v", org["quota_report"], want)
		}
		if qs, _ := org["quotas"].([]any); len(qs) != 1 {
			t.Fatalf("organization quotas = %v", org["quotas"])
		}
		if org := e.expect("carol", "GET", "/api/v1/organization/acme", "", http.StatusOK).json(t); org["quota_report"] != nil || org["quotas"] != nil {
			t.Fatalf("a non-member sees the quota: %v", org)
		}

		// Usage as content arrives; the repository's own report.
		ctx := context.Background()
		blob := meta.Blob{Digest: digest.FromString("layer"), Size: 700}
		if _, err := e.db.Blobs().StoreBlob(ctx, "acme/app", blob, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
			t.Fatal(err)
		}
		m := meta.Manifest{Digest: digest.FromString("m"), MediaType: "application/vnd.oci.image.manifest.v1+json", Content: []byte("m")}
		if err := e.db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: m, Refs: []meta.Ref{{Digest: blob.Digest}}, Tag: "v1"}); err != nil {
			t.Fatal(err)
		}
		org = e.expect("bob", "GET", "/api/v1/organization/acme", "", http.StatusOK).json(t)
		if rep, _ := org["quota_report"].(map[string]any); rep["quota_bytes"] != 700.0 {
			t.Fatalf("quota_report after a push = %v", org["quota_report"])
		}
		repo := e.expect("alice", "GET", "/api/v1/repository/acme/app?includeTags=false", "", http.StatusOK).json(t)
		if rep, _ := repo["quota_report"].(map[string]any); rep["quota_bytes"] != 700.0 || rep["configured_quota"] != 2000.0 {
			t.Fatalf("repository quota_report = %v", repo["quota_report"])
		}

		// Verification (Berth's), superusers only.
		e.expect("alice", "GET", base+"/verify", "", http.StatusForbidden)
		v := e.expect("root", "GET", base+"/verify", "", http.StatusOK).json(t)
		if v["exact"] != true || v["counted_bytes"] != 700.0 || v["recomputed_bytes"] != 700.0 || v["mismatches"] != 0.0 || v["blobs"] != 1.0 {
			t.Fatalf("verify = %v", v)
		}

		// Deletes.
		e.expect("bob", "DELETE", warn, "", http.StatusForbidden)
		e.expect("root", "DELETE", warn, "", http.StatusNoContent)
		e.expect("root", "GET", warn, "", http.StatusNotFound)
		e.expect("root", "DELETE", warn, "", http.StatusNotFound)
		e.expect("alice", "DELETE", qpath, "", http.StatusForbidden)
		e.expect("root", "DELETE", qpath, "", http.StatusNoContent)
		if !e.audited("acme", "org_delete_quota", fmt.Sprintf(`"quota_id":%d`, qid)) {
			t.Fatal("quota delete not audited")
		}
		if qs := e.quotas("bob", "acme"); len(qs) != 0 {
			t.Fatalf("quotas after delete = %+v", qs)
		}
		org = e.expect("bob", "GET", "/api/v1/organization/acme", "", http.StatusOK).json(t)
		if rep, _ := org["quota_report"].(map[string]any); rep["quota_bytes"] != 700.0 || rep["configured_quota"] != nil {
			t.Fatalf("quota_report without a quota = %v", org["quota_report"])
		}
	})
}
