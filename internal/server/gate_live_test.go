package server_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/server"
)

// liveBerth is a served Berth with its workers that a test can stop and
// start again on the same data (a crash between two steps).
type liveBerth struct {
	t      *testing.T
	cfg    config.Config
	host   string
	cancel context.CancelFunc
	done   chan error
	srv    *server.Server
}

func runBerth(t *testing.T, cfg config.Config) *liveBerth {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	b := &liveBerth{t: t, cfg: cfg, host: ln.Addr().String(), cancel: cancel, done: make(chan error, 1), srv: srv}
	go func() { b.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(b.stop)
	return b
}

// testLog writes the server's warnings and errors to the test's log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (b *liveBerth) stop() {
	if b.cancel == nil {
		return
	}
	b.cancel()
	if err := <-b.done; err != nil {
		b.t.Errorf("serve: %v", err)
	}
	b.srv.Close()
	b.cancel = nil
}

func (b *liveBerth) call(method, path string, body any) (int, []byte) {
	b.t.Helper()
	var rd io.Reader
	if s, ok := body.(string); ok {
		rd = strings.NewReader(s)
	} else if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, "http://"+b.host+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// blob uploads bytes to repo.
func (b *liveBerth) blob(repo string, content []byte) digest.Digest {
	b.t.Helper()
	d := digest.FromBytes(content)
	req, _ := http.NewRequest("POST", "http://"+b.host+"/v2/"+repo+"/blobs/uploads/?digest="+d.String(), bytes.NewReader(content))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		b.t.Fatalf("upload blob: %v %v", resp, err)
	}
	resp.Body.Close()
	return d
}

// push stores a manifest under ref.
func (b *liveBerth) push(repo, ref string, m []byte) digest.Digest {
	b.t.Helper()
	req, _ := http.NewRequest("PUT", "http://"+b.host+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(m))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		b.t.Fatalf("push manifest %s: %v %v", ref, resp, err)
	}
	resp.Body.Close()
	return digest.FromBytes(m)
}

// image pushes a one-layer linux/amd64 image with a label to repo:tag.
func (b *liveBerth) image(repo, tag, layer string) digest.Digest {
	b.t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux","created":"2026-11-30T10:00:00Z","config":{"Labels":{"org.opencontainers.image.vendor":"acme"}}}`)
	l := []byte(layer)
	b.blob(repo, cfg)
	b.blob(repo, l)
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}`,
		digest.FromBytes(cfg), len(cfg), digest.FromBytes(l), len(l))
	return b.push(repo, tag, []byte(m))
}

// sign pushes a cosign signature of d in the tag layout, made with key.
func (b *liveBerth) sign(repo string, d digest.Digest, key *ecdsa.PrivateKey) {
	b.t.Helper()
	payload := []byte(fmt.Sprintf(`{"critical":{"identity":{"docker-reference":"%s/%s"},"image":{"docker-manifest-digest":"%s"},"type":"cosign container image signature"},"optional":null}`,
		b.host, repo, d))
	sv, err := signature.LoadECDSASignerVerifier(key, crypto.SHA256)
	if err != nil {
		b.t.Fatal(err)
	}
	sig, err := sv.SignMessage(bytes.NewReader(payload))
	if err != nil {
		b.t.Fatal(err)
	}
	cfg := []byte(`{"architecture":"","os":"","config":{}}`)
	b.blob(repo, cfg)
	b.blob(repo, payload)
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"%s","size":%d,"annotations":{"dev.cosignproject.cosign/signature":"%s"}}]}`,
		digest.FromBytes(cfg), len(cfg), digest.FromBytes(payload), len(payload), base64.StdEncoding.EncodeToString(sig))
	b.push(repo, "sha256-"+d.Encoded()+".sig", []byte(m))
}

func (b *liveBerth) tagDigest(repo, tag string) string {
	b.t.Helper()
	req, _ := http.NewRequest("HEAD", "http://"+b.host+"/v2/"+repo+"/manifests/"+tag, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return ""
	}
	return resp.Header.Get("Docker-Content-Digest")
}

// waitUntil polls cond; on a timeout, it reports what each detail says
// then (the state a failure needs to be understood).
func waitUntil(t *testing.T, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second) // a bound for a loaded CI machine, not a measure
	for !cond() {
		if time.Now().After(deadline) {
			var then []string
			for _, d := range detail {
				then = append(then, d())
			}
			t.Fatalf("timed out waiting for %s %s", what, strings.Join(then, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// receiver collects webhook deliveries by event.
type receiver struct {
	mu     sync.Mutex
	events []map[string]any
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	json.NewDecoder(r.Body).Decode(&body)
	rc.mu.Lock()
	rc.events = append(rc.events, body)
	rc.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

func (rc *receiver) of(kind string) []map[string]any {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []map[string]any
	for _, e := range rc.events {
		if e["event"] == kind {
			out = append(out, e)
		}
	}
	return out
}

func liveConfig(t *testing.T, dialect string) config.Config {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Storage.Filesystem.Fsync = false
	cfg.Log.Level = "error"
	cfg.Scan.Enabled = false
	cfg.Auth.Mode = "none"
	cfg.Notifications.AllowedHosts = []string{"loopback"}
	if dialect == "postgres" {
		cfg.Database.URL = metatest.PostgresDSN(t)
		cfg.SecretKey = testSecretKey // replicas on PostgreSQL share one key
	}
	return cfg
}

// TestGateLive runs gates through a served Berth and its workers: a
// candidate waits for its required check, is promoted when the check
// passes (webhooks: promotion_pending, then promotion_succeeded and a
// repo_push naming both tags), a failing check blocks the next one
// (promotion_blocked names the check, the tag stays), and a gate that
// needs a verified signature promotes only once a signature by its key is
// pushed, not one by another key. The policy reads the manifest's
// platform, label and creation time.
func TestGateLive(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			b := runBerth(t, liveConfig(t, dialect))
			rc := &receiver{}
			hook := httptest.NewServer(rc)
			defer hook.Close()
			const repo = "mirror/node"
			b.image(repo, "14", "layer of 14")
			for _, ev := range []string{"promotion_pending", "promotion_succeeded", "promotion_blocked", "repo_push"} {
				if st, raw := b.call("POST", "/api/v1/repository/"+repo+"/notification/", map[string]any{"event": ev, "method": "webhook",
					"config": map[string]any{"url": hook.URL}}); st != 201 {
					t.Fatalf("notification %s: %d %s", ev, st, raw)
				}
			}
			trusted, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			pub, _ := cryptoutils.MarshalPublicKeyToPEM(&trusted.PublicKey)
			gate := map[string]any{"tags": []string{"15-*"}, "required_checks": []string{"functional"},
				"policy": `manifest.platforms.exists(p, p.os == "linux") && manifest.labels["org.opencontainers.image.vendor"] == "acme" && manifest.created > timestamp("2026-01-01T00:00:00Z") && checks["functional"] == "pass"`}
			if st, raw := b.call("PUT", "/api/v1/repository/"+repo+"/gate", gate); st != 200 {
				t.Fatalf("gate: %d %s", st, raw)
			}

			good := b.image(repo, "15-alpine", "layer v1")
			waitUntil(t, "promotion_pending", func() bool { return len(rc.of("promotion_pending")) == 1 })
			if p := rc.of("promotion_pending")[0]; p["digest"] != good.String() || fmt.Sprint(p["tags"]) != "[15-alpine]" || p["homepage"] == nil {
				t.Fatalf("promotion_pending payload: %v", p)
			}
			checks := "/api/v1/repository/" + repo + "/manifest/" + good.String() + "/checks"
			b.call("POST", checks, `{"name":"functional","status":"pass"}`)
			waitUntil(t, "promotion_succeeded", func() bool { return len(rc.of("promotion_succeeded")) == 1 })
			if s := rc.of("promotion_succeeded")[0]; s["rollback_tag"] != "15-alpine-1" || s["digest"] != good.String() {
				t.Fatalf("promotion_succeeded payload: %v", s)
			}
			if b.tagDigest(repo, "15-alpine") != good.String() || b.tagDigest(repo, "15-alpine-1") != good.String() {
				t.Fatal("the tags do not point at the promoted candidate")
			}
			waitUntil(t, "the promotion's repo_push", func() bool {
				for _, p := range rc.of("repo_push") {
					if fmt.Sprint(p["updated_tags"]) == "[15-alpine 15-alpine-1]" {
						return true
					}
				}
				return false
			})
			for _, p := range rc.of("repo_push") {
				if p["digest"] == good.String() && fmt.Sprint(p["updated_tags"]) != "[15-alpine 15-alpine-1]" {
					t.Fatalf("a repo_push for the candidate before its promotion: %v", p)
				}
			}

			bad := b.image(repo, "15-alpine", "layer v2")
			b.call("POST", "/api/v1/repository/"+repo+"/manifest/"+bad.String()+"/checks", `{"name":"functional","status":"fail","summary":"3 tests failed"}`)
			waitUntil(t, "promotion_blocked", func() bool { return len(rc.of("promotion_blocked")) == 1 })
			if blk := rc.of("promotion_blocked")[0]; blk["digest"] != bad.String() || !strings.Contains(fmt.Sprint(blk["reasons"]), `check "functional" failed`) {
				t.Fatalf("promotion_blocked payload: %v", blk)
			}
			if b.tagDigest(repo, "15-alpine") != good.String() {
				t.Fatal("a blocked candidate moved the tag")
			}

			// Signatures: a verified one is required.
			pemKey := string(pub)
			gate["keys"] = []string{pemKey}
			gate["required_checks"] = []string{"berth/signature"}
			gate["policy"] = `signatures.exists(s, s.verified && s.kind == "cosign")`
			if st, raw := b.call("PUT", "/api/v1/repository/"+repo+"/gate", gate); st != 200 {
				t.Fatalf("gate: %d %s", st, raw)
			}
			signed := b.image(repo, "15-alpine", "layer v3")
			waitUntil(t, "the third candidate", func() bool { return len(rc.of("promotion_pending")) == 3 })
			b.sign(repo, signed, other)
			waitUntil(t, "a block for the untrusted signature", func() bool {
				for _, blk := range rc.of("promotion_blocked") {
					if blk["digest"] == signed.String() {
						return strings.Contains(fmt.Sprint(blk["reasons"]), "berth/signature")
					}
				}
				return false
			})
			if b.tagDigest(repo, "15-alpine") != good.String() {
				t.Fatal("a candidate signed by an untrusted key was promoted")
			}
			st, raw := b.call("GET", "/api/v1/repository/"+repo+"/gate/candidates?live=true", nil)
			if st != 200 || !strings.Contains(string(raw), "does not trust") && !strings.Contains(string(raw), "trust") {
				t.Fatalf("candidates do not say why the signature failed: %d %s", st, raw)
			}
			b.sign(repo, signed, trusted)
			waitUntil(t, "the signed candidate's promotion", func() bool { return b.tagDigest(repo, "15-alpine") == signed.String() })
			if b.tagDigest(repo, "15-alpine-2") != signed.String() {
				t.Fatal("the second promotion's rollback tag is not 15-alpine-2")
			}
		})
	}
}

// TestGateCrashBetweenCheckAndPromotion: the check that decides is
// committed while no Berth runs (it died after the commit, before the
// promotion); the next start promotes the candidate, once, and a start
// after that promotes nothing again.
// TestGateCandidatePushedBeforeTheFeedStarts: a candidate pushed to a new
// registry before its change feed's dispatcher first subscribed the gate
// (requests are served while the background work starts) is evaluated
// all the same: the built-in subscribers' cursors exist from the
// database's creation. Before, the gate's cursor began after the
// candidate's event, which no one ever evaluated (a timeout seen once in
// CI in TestGateCrashBetweenCheckAndPromotion).
func TestGateCandidatePushedBeforeTheFeedStarts(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			cfg := liveConfig(t, dialect)
			const repo = "mirror/node"
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
			if err != nil {
				t.Fatal(err)
			}
			served := false
			t.Cleanup(func() {
				if !served {
					srv.Close()
				}
			})
			// The handler alone: no dispatcher, no workers yet.
			hs := httptest.NewServer(srv.Handler())
			b := &liveBerth{t: t, cfg: cfg, host: strings.TrimPrefix(hs.URL, "http://")}
			if st, raw := b.call("PUT", "/api/v1/repository/"+repo, nil); st == 0 {
				t.Fatal(raw)
			}
			b.image(repo, "14", "layer of 14")
			if st, raw := b.call("PUT", "/api/v1/repository/"+repo+"/gate", map[string]any{"tags": []string{"15-*"}, "required_checks": []string{"functional"}}); st != 200 {
				t.Fatalf("gate: %d %s", st, raw)
			}
			cand := b.image(repo, "15-alpine", "layer v1")
			hs.Close()

			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			b.host, b.cancel, b.done, b.srv = ln.Addr().String(), cancel, make(chan error, 1), srv
			served = true
			go func() { b.done <- srv.Serve(ctx, ln) }()
			t.Cleanup(b.stop)
			var last []byte
			waitUntil(t, "the candidate's first evaluation", func() bool {
				_, last = b.call("GET", "/api/v1/repository/"+repo+"/gate/candidates?live=true", nil)
				return strings.Contains(string(last), "waiting for check") && strings.Contains(string(last), cand.String())
			}, func() string { return "(live candidates: " + string(last) + ")" })
		})
	}
}

func TestGateCrashBetweenCheckAndPromotion(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			cfg := liveConfig(t, dialect)
			const repo = "mirror/node"
			b := runBerth(t, cfg)
			if st, raw := b.call("PUT", "/api/v1/repository/mirror/node", nil); st == 0 {
				t.Fatal(raw)
			}
			b.image(repo, "14", "layer of 14")
			if st, raw := b.call("PUT", "/api/v1/repository/"+repo+"/gate", map[string]any{"tags": []string{"15-*"}, "required_checks": []string{"functional"}}); st != 200 {
				t.Fatalf("gate: %d %s", st, raw)
			}
			cand := b.image(repo, "15-alpine", "layer v1")
			var last []byte
			waitUntil(t, "the candidate's first evaluation", func() bool {
				_, last = b.call("GET", "/api/v1/repository/"+repo+"/gate/candidates?live=true", nil)
				return strings.Contains(string(last), "waiting for check")
			}, func() string { return "(live candidates: " + string(last) + ")" }, func() string {
				_, all := b.call("GET", "/api/v1/repository/"+repo+"/gate/candidates", nil)
				_, tags := b.call("GET", "/api/v1/repository/"+repo+"/tag/?onlyActiveTags=true", nil)
				return "(every candidate: " + string(all) + "; tags: " + string(tags) + ")"
			})
			b.stop()

			db, err := meta.Open(context.Background(), cfg.DatabaseURL())
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Gates().PostCheck(context.Background(), repo, cand, meta.Check{Name: "functional", Status: "pass", Actor: "ci"}); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				b = runBerth(t, cfg)
				waitUntil(t, "the promotion after the restart", func() bool { return b.tagDigest(repo, "15-alpine") == cand.String() })
				b.stop()
			}
			evs, err := db.Outbox().EventsAfter(context.Background(), 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			promotions := 0
			for _, e := range evs {
				if e.Kind == meta.EventPromotionSucceeded {
					promotions++
				}
			}
			cs, _ := db.Gates().Candidates(context.Background(), repo, meta.CandidateQuery{})
			if promotions != 1 || len(cs) != 1 || cs[0].State != meta.CandidatePromoted || cs[0].RollbackTag != "15-alpine-1" {
				t.Fatalf("%d promotions; candidates %+v", promotions, cs)
			}
		})
	}
}
