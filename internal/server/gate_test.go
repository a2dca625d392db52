package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// pushCandidate pushes a one-layer image (its own layer, the config the
// world's other images share) to repo:tag as root, and returns the
// manifest and layer digests.
func (w *world) pushTagged(repo, tag, layerText string) (digest.Digest, digest.Digest) {
	w.t.Helper()
	layer := []byte(layerText)
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	c := w.creds["root"]
	for _, b := range [][]byte{layer, cfg} {
		if r := w.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(b).String(), c[0], c[1], b); r.StatusCode != 201 {
			w.t.Fatalf("push blob to %s: %d", repo, r.StatusCode)
		}
	}
	m := w.manifest(cfg, layer)
	if r := w.do("PUT", "/v2/"+repo+"/manifests/"+tag, c[0], c[1], m, "Content-Type", "application/vnd.oci.image.manifest.v1+json"); r.StatusCode != 201 {
		w.t.Fatalf("push manifest to %s:%s: %d", repo, tag, r.StatusCode)
	}
	return digest.FromBytes(m), digest.FromBytes(layer)
}

// registryCode GETs a /v2 path as an identity and returns the status and
// the spec's error code, if any.
func (w *world) registryCode(who, path string) (int, string) {
	w.t.Helper()
	c := w.creds[who]
	req, _ := http.NewRequest("GET", w.url+path, nil)
	if c[0] != "" {
		req.SetBasicAuth(c[0], c[1])
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer r.Body.Close()
	var body struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	raw, _ := io.ReadAll(r.Body)
	json.Unmarshal(raw, &body)
	code := ""
	if len(body.Errors) > 0 {
		code = body.Errors[0].Code
	} else if r.StatusCode >= 400 {
		code = "(no error code) " + string(raw)
	}
	return r.StatusCode, code
}

// TestGateQuarantinePermissions: a candidate of a gated repository is
// seen (by digest, its own blobs, as a referrer subject, as a mount
// source) only by the gate's checkers, repository admins, tokens with the
// checks action and superusers; everyone else who may read the repository
// gets MANIFEST_UNKNOWN and BLOB_UNKNOWN, while the blobs it shares with
// published images stay readable. The gate, check, candidate, promote and
// restore endpoints each apply their permission.
func TestGateQuarantinePermissions(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	secret, _ := auth.NewSecret("berth_")
	scopes, _ := json.Marshal([]auth.TokenScope{{Repository: "acme/*", Actions: []string{auth.TokenContentRead, auth.TokenChecks}}})
	if _, err := w.db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: "token-checks", SecretHash: auth.HashSecret(secret), Scopes: scopes}); err != nil {
		t.Fatal(err)
	}
	w.creds["token-checks"] = [2]string{"token-checks", secret}

	// A bad policy is refused where it is wrong.
	st, _, raw := w.call("PUT", "/api/v1/repository/acme/private/gate", "owner", `{"tags":["15-*"],"policy":"scan.status == \"scanned\" &&\n scan.countz.critical == 0"}`)
	if st != 400 || !strings.Contains(raw, "2:") || !strings.Contains(raw, "countz") {
		t.Fatalf("bad policy: %d %s", st, raw)
	}
	st, _, raw = w.call("PUT", "/api/v1/repository/acme/private/gate", "owner", `{"tags":["15-*"],"keys":["not a key"]}`)
	if st != 400 || !strings.Contains(raw, "keys[0]") {
		t.Fatalf("bad key: %d %s", st, raw)
	}
	gate := `{"tags":["15-*"],"checkers":["acme+ci"],"required_checks":["functional"]}`
	for _, who := range []string{"writer", "robot", "reader", "token-checks"} {
		if st, _, raw := w.call("PUT", "/api/v1/repository/acme/private/gate", who, gate); st != 403 {
			t.Fatalf("%s set a gate: %d %s", who, st, raw)
		}
	}
	if st, _, raw := w.call("PUT", "/api/v1/repository/acme/private/gate", "owner", gate); st != 200 || !strings.Contains(raw, `"rollback_tag":"{tag}-{n}"`) {
		t.Fatalf("set gate: %d %s", st, raw)
	}

	cand, layer := w.pushTagged("acme/private", "15-alpine", "layer only the candidate has")
	shared := digest.FromBytes([]byte(`{"architecture":"amd64","os":"linux"}`))
	if st, code := w.registryCode("root", "/v2/acme/private/manifests/15-alpine"); st != 404 || code != "MANIFEST_UNKNOWN" {
		t.Fatalf("the guarded tag points somewhere before promotion: %d %s", st, code)
	}
	sees := map[string]bool{"owner": true, "orgadmin": true, "robot": true, "token-checks": true, "root": true,
		"reader": false, "writer": false, "robot-mirror": false, "token-in": false}
	for who, want := range sees {
		st, code := w.registryCode(who, "/v2/acme/private/manifests/"+cand.String())
		if want && st != 200 || !want && (st != 404 || code != "MANIFEST_UNKNOWN") {
			t.Errorf("%s GET candidate by digest: %d %s", who, st, code)
		}
		st, code = w.registryCode(who, "/v2/acme/private/blobs/"+layer.String())
		if want && st != 200 || !want && (st != 404 || code != "BLOB_UNKNOWN") {
			t.Errorf("%s GET the candidate's own layer: %d %s", who, st, code)
		}
		if st, _ := w.registryCode(who, "/v2/acme/private/blobs/"+shared.String()); st != 200 {
			t.Errorf("%s GET a blob the candidate shares with a published image: %d", who, st)
		}
		if st, _, raw := w.call("GET", "/api/v1/repository/acme/private/manifest/"+cand.String()+"/security", who, ""); !want && st != 404 {
			t.Errorf("%s GET the candidate's security report: %d %s", who, st, raw)
		}
	}
	for _, who := range []string{"anonymous", "stranger", "token-out"} {
		if st, _ := w.registryCode(who, "/v2/acme/private/manifests/"+cand.String()); st == 200 {
			t.Errorf("%s read the candidate", who)
		}
	}
	// A writer cannot publish the candidate's layer elsewhere by mounting it.
	c := w.creds["writer"]
	if r := w.do("POST", "/v2/acme/public/blobs/uploads/?mount="+layer.String()+"&from=acme/private", c[0], c[1], nil); r.StatusCode != 202 {
		t.Fatalf("writer mounted a held blob: %d", r.StatusCode)
	}
	c = w.creds["root"]
	if r := w.do("POST", "/v2/acme/public/blobs/uploads/?mount="+layer.String()+"&from=acme/private", c[0], c[1], nil); r.StatusCode != 201 {
		t.Fatalf("root could not mount: %d", r.StatusCode)
	}

	checks := "/api/v1/repository/acme/private/manifest/" + cand.String() + "/checks"
	for who, want := range map[string]int{"reader": 403, "writer": 403, "robot-mirror": 403, "token-in": 403, "anonymous": 401,
		"robot": 201, "token-checks": 201, "owner": 201} {
		if st, _, raw := w.call("POST", checks, who, `{"name":"functional","status":"pending","summary":"started by `+who+`"}`); st != want {
			t.Errorf("%s POST check: %d (want %d) %s", who, st, want, raw)
		}
	}
	for _, bad := range []string{`{"name":"functional","status":"ok"}`, `{"name":"berth/scan","status":"pass"}`,
		`{"name":"functional","status":"pass","details_url":"javascript:alert(1)"}`, `{"name":"","status":"pass"}`} {
		if st, _, raw := w.call("POST", checks, "robot", bad); st != 400 {
			t.Errorf("check %s: %d %s", bad, st, raw)
		}
	}
	for who, want := range map[string]int{"reader": 403, "writer": 403, "robot": 200, "owner": 200} {
		st, body, raw := w.call("GET", "/api/v1/repository/acme/private/gate/candidates?live=true", who, "")
		if st != want {
			t.Errorf("%s GET candidates: %d %s", who, st, raw)
		}
		if st == 200 && (len(body["candidates"].([]any)) != 1 || !strings.Contains(raw, cand.String())) {
			t.Errorf("%s candidates: %s", who, raw)
		}
	}
	for who, want := range map[string]int{"robot": 403, "writer": 403, "owner": 200} {
		if st, _, _ := w.call("GET", "/api/v1/repository/acme/private/gate", who, ""); st != want {
			t.Errorf("%s GET gate: %d", who, st)
		}
	}

	// Manual promotion: the policy (functional must pass) decides.
	promote := fmt.Sprintf(`{"digest":%q,"tag":"15-alpine"}`, cand)
	if st, _, _ := w.call("POST", "/api/v1/repository/acme/private/promote", "writer", promote); st != 403 {
		t.Fatalf("a writer promoted: %d", st)
	}
	if st, _, raw := w.call("POST", "/api/v1/repository/acme/private/promote", "owner", promote); st != 409 || !strings.Contains(raw, `waiting for check \"functional\"`) {
		t.Fatalf("promotion with a pending check: %d %s", st, raw)
	}
	w.call("POST", checks, "robot", `{"name":"functional","status":"pass","details_url":"https://ci.example/run/1"}`)
	st, body, raw := w.call("POST", "/api/v1/repository/acme/private/promote", "owner", promote)
	if st != 200 || body["rollback_tag"] != "15-alpine-1" {
		t.Fatalf("promotion: %d %s", st, raw)
	}
	for _, ref := range []string{"15-alpine", "15-alpine-1", cand.String()} {
		if st, _ := w.registryCode("reader", "/v2/acme/private/manifests/"+ref); st != 200 {
			t.Errorf("reader GET %s after promotion: %d", ref, st)
		}
	}
	if st, _ := w.registryCode("reader", "/v2/acme/private/blobs/"+layer.String()); st != 200 {
		t.Errorf("reader GET the promoted layer: %d", st)
	}
	// The rollback tag is immutable through /v2 and the API.
	c = w.creds["root"]
	if r := w.do("PUT", "/v2/acme/private/manifests/15-alpine-1", c[0], c[1], w.manifest([]byte(`{"architecture":"amd64","os":"linux"}`), []byte("layer of acme/private")),
		"Content-Type", "application/vnd.oci.image.manifest.v1+json"); r.StatusCode != 403 {
		t.Fatalf("push onto the rollback tag: %d", r.StatusCode)
	}
	if r := w.do("DELETE", "/v2/acme/private/manifests/15-alpine-1", c[0], c[1], nil); r.StatusCode != 403 {
		t.Fatalf("delete of the rollback tag: %d", r.StatusCode)
	}
	if st, _, _ := w.call("DELETE", "/api/v1/repository/acme/private/tag/15-alpine-1", "root", ""); st != 403 {
		t.Fatalf("API delete of the rollback tag: %d", st)
	}

	// A second candidate that fails its check is not promoted; only a
	// superuser may promote it regardless, with a reason.
	bad, _ := w.pushTagged("acme/private", "15-alpine", "layer of a bad change")
	w.call("POST", "/api/v1/repository/acme/private/manifest/"+bad.String()+"/checks", "robot", `{"name":"functional","status":"fail","summary":"3 of 120 tests failed"}`)
	promote = fmt.Sprintf(`{"digest":%q,"tag":"15-alpine"}`, bad)
	if st, _, raw := w.call("POST", "/api/v1/repository/acme/private/promote", "owner", promote); st != 409 || !strings.Contains(raw, `check \"functional\" failed`) {
		t.Fatalf("promotion of a failed candidate: %d %s", st, raw)
	}
	if st, code := w.registryCode("reader", "/v2/acme/private/manifests/"+bad.String()); st != 404 || code != "MANIFEST_UNKNOWN" {
		t.Fatalf("reader GET a blocked candidate: %d %s", st, code)
	}
	override := fmt.Sprintf(`{"digest":%q,"tag":"15-alpine","override_reason":"hotfix approved in INC-42"}`, bad)
	if st, _, _ := w.call("POST", "/api/v1/repository/acme/private/promote", "owner", override); st != 403 {
		t.Fatalf("an owner overrode the policy: %d", st)
	}
	if st, body, raw := w.call("POST", "/api/v1/repository/acme/private/promote", "root", override); st != 200 || body["rollback_tag"] != "15-alpine-2" {
		t.Fatalf("superuser override: %d %s", st, raw)
	}
	_, _, logs := w.call("GET", "/api/v1/repository/acme/private/logs", "owner", "")
	if !strings.Contains(logs, "INC-42") {
		t.Fatalf("the override's reason is not in the audit log: %s", logs)
	}

	// Restore (Quay's contract) puts the tag back on the first promotion.
	restore := "/api/v1/repository/acme/private/tag/15-alpine/restore"
	if st, _, _ := w.call("POST", restore, "reader", fmt.Sprintf(`{"manifest_digest":%q}`, cand)); st != 403 {
		t.Fatalf("a reader restored: %d", st)
	}
	if st, _, raw := w.call("POST", restore, "writer", fmt.Sprintf(`{"manifest_digest":%q}`, w.digest["private"])); st != 404 {
		t.Fatalf("restore to a digest the tag never had: %d %s", st, raw)
	}
	if st, _, raw := w.call("POST", restore, "writer", fmt.Sprintf(`{"manifest_digest":%q}`, cand)); st != 200 {
		t.Fatalf("restore: %d %s", st, raw)
	}
	r := w.do("GET", "/v2/acme/private/manifests/15-alpine", w.creds["reader"][0], w.creds["reader"][1], nil, "Accept", "application/vnd.oci.image.manifest.v1+json")
	if r.Header.Get("Docker-Content-Digest") != cand.String() {
		t.Fatalf("after restore 15-alpine is %s", r.Header.Get("Docker-Content-Digest"))
	}

	// A retag onto the guarded tag through the API is a candidate too:
	// 202, and the tag stays.
	st, body, raw = w.call("PUT", "/api/v1/repository/acme/private/tag/15-alpine", "writer", fmt.Sprintf(`{"manifest_digest":%q}`, w.digest["private"]))
	if st != 202 || body["candidate"] != true {
		t.Fatalf("retag onto a guarded tag: %d %s", st, raw)
	}
	r = w.do("GET", "/v2/acme/private/manifests/15-alpine", w.creds["reader"][0], w.creds["reader"][1], nil, "Accept", "application/vnd.oci.image.manifest.v1+json")
	if r.Header.Get("Docker-Content-Digest") != cand.String() {
		t.Fatalf("a retag moved the guarded tag to %s", r.Header.Get("Docker-Content-Digest"))
	}

	// Deleting the gate publishes what it still holds.
	held, _ := w.pushTagged("acme/private", "15-slim", "layer of a candidate never decided")
	if st, _ := w.registryCode("reader", "/v2/acme/private/manifests/"+held.String()); st != 404 {
		t.Fatalf("reader GET a new candidate: %d", st)
	}
	if st, _, _ := w.call("DELETE", "/api/v1/repository/acme/private/gate", "owner", ""); st != 204 {
		t.Fatalf("delete gate: %d", st)
	}
	if st, _ := w.registryCode("reader", "/v2/acme/private/manifests/"+held.String()); st != 200 {
		t.Fatalf("reader GET content of a deleted gate: %d", st)
	}
}

// TestGateCosignTagsPublishOnlyDescriptions: with a gate guarding every
// tag, cosign's sha256-<hex>.sig, .att and .sbom tags still take a
// signature (readable at once, the candidate it signs still held), but
// neither a push of the candidate's own bytes under such a tag, nor an
// index that lists it, nor a retag of it through the API publishes the
// candidate: each is a candidate itself. Before, any of the three made
// the held candidate readable to everyone who may pull.
func TestGateCosignTagsPublishOnlyDescriptions(t *testing.T) {
	w := newWorld(t)
	const repo = "acme/private"
	if st, _, raw := w.call("PUT", "/api/v1/repository/"+repo+"/gate", "owner", `{"tags":["*"],"required_checks":["e2e"]}`); st != 200 {
		t.Fatalf("set gate: %d %s", st, raw)
	}
	const layerText = "layer of the candidate"
	cand, _ := w.pushTagged(repo, "prod", layerText)
	candBytes := w.manifest([]byte(`{"architecture":"amd64","os":"linux"}`), []byte(layerText))
	hidden := func(what string) {
		t.Helper()
		if st, code := w.registryCode("reader", "/v2/"+repo+"/manifests/"+cand.String()); st != 404 || code != "MANIFEST_UNKNOWN" {
			t.Fatalf("%s: a reader GETs the held candidate: %d %s", what, st, code)
		}
	}
	hidden("pushed to prod")

	c := w.creds["root"]
	if r := w.do("PUT", "/v2/"+repo+"/manifests/sha256-"+strings.Repeat("a", 64)+".sig", c[0], c[1], candBytes,
		"Content-Type", "application/vnd.oci.image.manifest.v1+json"); r.StatusCode != 201 {
		t.Fatalf("push of the candidate under a signature tag: %d", r.StatusCode)
	}
	hidden("its own bytes pushed under a .sig tag")

	index := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%d,"platform":{"architecture":"amd64","os":"linux"}}]}`,
		cand, len(candBytes)))
	attTag := "sha256-" + cand.Encoded() + ".att"
	if r := w.do("PUT", "/v2/"+repo+"/manifests/"+attTag, c[0], c[1], index,
		"Content-Type", "application/vnd.oci.image.index.v1+json"); r.StatusCode != 201 {
		t.Fatalf("push of an index under an attestation tag: %d", r.StatusCode)
	}
	hidden("an index listing it pushed under an .att tag")
	if st, code := w.registryCode("reader", "/v2/"+repo+"/manifests/"+attTag); st != 404 {
		t.Fatalf("a reader GETs the index pushed under %s: %d %s", attTag, st, code)
	}

	sbomTag := "sha256-" + strings.Repeat("b", 64) + ".sbom"
	if st, _, raw := w.call("PUT", "/api/v1/repository/"+repo+"/tag/"+sbomTag, "root", `{"manifest_digest":"`+cand.String()+`"}`); st/100 != 2 {
		t.Fatalf("retag onto an SBOM tag: %d %s", st, raw)
	}
	hidden("retagged to an .sbom tag through the API")

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	w.signImage(repo, cand, key)
	if st, code := w.registryCode("reader", "/v2/"+repo+"/manifests/sha256-"+cand.Encoded()+".sig"); st != 200 {
		t.Fatalf("a reader GETs the candidate's signature: %d %s", st, code)
	}
	hidden("signed")
}

// TestGatePathsRespectReadOnly: a read-only repository takes no writes,
// the gate's included: a manual promotion and an admin's restore are
// refused (403) and the tag stays; and an admin may restore only the
// gate's guarded tags where pushes are refused (an unguarded tag of a
// gated mirror is its robot's). Before, both moved tags in a read-only
// repository.
func TestGatePathsRespectReadOnly(t *testing.T) {
	w := newWorld(t)
	const repo = "acme/private"
	if st, _, raw := w.call("PUT", "/api/v1/repository/"+repo+"/gate", "owner", `{"tags":["15-*"]}`); st != 200 {
		t.Fatalf("set gate: %d %s", st, raw)
	}
	first, _ := w.pushTagged(repo, "15-alpine", "first candidate")
	if st, _, raw := w.call("POST", "/api/v1/repository/"+repo+"/promote", "owner", `{"digest":"`+first.String()+`","tag":"15-alpine"}`); st != 200 {
		t.Fatalf("promote: %d %s", st, raw)
	}
	second, _ := w.pushTagged(repo, "15-alpine", "second candidate")
	if st, _, raw := w.call("PUT", "/api/v1/repository/"+repo+"/changestate", "root", `{"state":"READ_ONLY"}`); st/100 != 2 {
		t.Fatalf("read-only: %d %s", st, raw)
	}
	if st, _, raw := w.call("POST", "/api/v1/repository/"+repo+"/promote", "owner", `{"digest":"`+second.String()+`","tag":"15-alpine"}`); st != 403 || !strings.Contains(raw, "read-only") {
		t.Fatalf("promotion in a read-only repository: %d %s", st, raw)
	}
	if st, _, raw := w.call("POST", "/api/v1/repository/"+repo+"/tag/15-alpine/restore", "owner", `{"manifest_digest":"`+first.String()+`"}`); st != 403 {
		t.Fatalf("restore in a read-only repository: %d %s", st, raw)
	}
	if st, _ := w.registryCode("owner", "/v2/"+repo+"/manifests/15-alpine"); st != 200 {
		t.Fatalf("15-alpine: %d", st)
	}
	var tags struct {
		Tags []struct {
			Name           string `json:"name"`
			ManifestDigest string `json:"manifest_digest"`
		} `json:"tags"`
	}
	_, _, raw := w.call("GET", "/api/v1/repository/"+repo+"/tag/?specificTag=15-alpine&onlyActiveTags=true", "owner", "")
	if err := json.Unmarshal([]byte(raw), &tags); err != nil || len(tags.Tags) != 1 || tags.Tags[0].ManifestDigest != first.String() {
		t.Fatalf("15-alpine moved in a read-only repository: %s", raw)
	}
}

// TestGateCheckerCreatedAgainIsNoChecker: a robot deleted and created again
// under a gate checker's name is no checker of a public gated repository
// (before, checkers were names, and the new robot, which nobody granted
// anything, saw held candidates and posted checks); the gate shows the
// checkers that still exist, and a name nobody has is refused.
func TestGateCheckerCreatedAgainIsNoChecker(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	if st, _, raw := w.call("PUT", "/api/v1/repository/acme/public/gate", "owner", `{"tags":["15-*"],"checkers":["acme+ci"]}`); st != 200 {
		t.Fatalf("set gate: %d %s", st, raw)
	}
	cand, _ := w.pushTagged("acme/public", "15-alpine", "a candidate of the public repository")
	checks := "/api/v1/repository/acme/public/manifest/" + cand.String() + "/checks"
	if st, _, raw := w.call("POST", checks, "robot", `{"name":"e2e","status":"pending"}`); st != 201 {
		t.Fatalf("the checker's check: %d %s", st, raw)
	}
	if err := w.db.Users().DeleteUser(ctx, "acme+ci"); err != nil {
		t.Fatal(err)
	}
	secret, _ := auth.NewSecret("berth_")
	if _, err := w.db.Users().CreateRobot(ctx, "acme", "ci", auth.HashSecret(secret)); err != nil {
		t.Fatal(err)
	}
	w.creds["robot-again"] = [2]string{"acme+ci", secret}
	if st, _, raw := w.call("POST", checks, "robot-again", `{"name":"e2e","status":"pass"}`); st != 403 {
		t.Fatalf("a robot created again under the checker's name posted a check: %d %s", st, raw)
	}
	if st, code := w.registryCode("robot-again", "/v2/acme/public/manifests/"+cand.String()); st != 404 || code != "MANIFEST_UNKNOWN" {
		t.Fatalf("a robot created again under the checker's name read the candidate: %d %s", st, code)
	}
	if st, _, raw := w.call("GET", "/api/v1/repository/acme/public/gate", "owner", ""); st != 200 || !strings.Contains(raw, `"checkers":[]`) {
		t.Fatalf("the gate after its checker was deleted: %d %s", st, raw)
	}
	if st, _, raw := w.call("PUT", "/api/v1/repository/acme/public/gate", "owner", `{"tags":["15-*"],"checkers":["acme+nobody"]}`); st != 400 || !strings.Contains(raw, "acme+nobody") {
		t.Fatalf("a checker nobody is: %d %s", st, raw)
	}
}
