package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/testenv/s3server"
)

// replicaStorage is the storage configuration the replicas share, as
// environment variables: one bucket of a real S3 server (versitygw, which
// the test installs and starts on loopback), as a production deployment
// shares one bucket; no replica has a filesystem in common with another.
func replicaStorage(t *testing.T) (env []string) {
	srv := s3server.Start(t)
	return []string{
		"AWS_CA_BUNDLE=", // the S3 server speaks plain HTTP
		"BERTH_STORAGE_DRIVER=s3",
		"BERTH_STORAGE_S3_ENDPOINT=" + srv.Endpoint,
		"BERTH_STORAGE_S3_REGION=" + srv.Region,
		"BERTH_STORAGE_S3_BUCKET=" + srv.Bucket(t),
		"BERTH_STORAGE_S3_PREFIX=registry",
		"BERTH_STORAGE_S3_PATH_STYLE=true",
		"BERTH_STORAGE_S3_ACCESS_KEY=" + srv.AccessKey,
		"BERTH_STORAGE_S3_SECRET_KEY=" + srv.SecretKey,
		"BERTH_STORAGE_S3_PART_SIZE=5242880",
	}
}

// replica is one `berth serve` process of a replicated deployment.
type replica struct {
	bin, host, logPath string
	env                []string
	cmd                *exec.Cmd
	done               chan struct{}
}

func (r *replica) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(r.bin, "serve", "--addr", r.host)
	r.cmd.Env = append(os.Environ(), r.env...)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.done = make(chan struct{})
	go func() { r.cmd.Wait(); logf.Close(); close(r.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + r.host + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-r.done:
			b, _ := os.ReadFile(r.logPath)
			t.Fatalf("replica %s exited at start:\n%s", r.host, b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(r.logPath)
			t.Fatalf("replica %s not ready: %v\n%s", r.host, err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *replica) stop(sig syscall.Signal) {
	select {
	case <-r.done:
		return
	default:
	}
	r.cmd.Process.Signal(sig)
	<-r.done
}

// TestReplicas runs three `berth serve` processes on one PostgreSQL
// database and one storage, token auth on, the same secretKey, and spreads
// clients across them: a chunked push whose requests go to different
// replicas, pulls from another, a token of one used on another, a webhook
// configured through one and delivered (signed) by another; then one
// replica is killed (SIGKILL) under a push load: every acknowledged push
// stays pullable from the survivors, and an upload in flight on the killed
// replica is resumed and finished through another.
func TestReplicas(t *testing.T) {
	begin(t)
	if os.Getenv("BERTH_E2E_REGISTRY") != "" {
		t.Skip("the replica test starts its own berth processes; skipped with BERTH_E2E_REGISTRY")
	}
	if dsn := os.Getenv(metatest.EnvPostgresDSN); dsn == "" {
		t.Skipf("PostgreSQL is needed for replicas: set %s", metatest.EnvPostgresDSN)
	} else if db, err := sql.Open("pgx", dsn); err != nil || db.Ping() != nil {
		t.Skipf("PostgreSQL at %s is not reachable", metatest.EnvPostgresDSN)
	} else {
		db.Close()
	}
	ctx := context.Background()
	dsn := metatest.PostgresDSN(t)
	bin := filepath.Join(runDir, "berth")
	key := make([]byte, 32)
	rand.Read(key)
	common := append([]string{"BERTH_DATABASE_URL=" + dsn, "BERTH_SECRET_KEY=" + base64.StdEncoding.EncodeToString(key),
		"BERTH_AUTH_MODE=token", `BERTH_NOTIFICATIONS_ALLOWED_HOSTS=["loopback"]`, "BERTH_SCAN_ENABLED=false",
		"BERTH_HTTP_SHUTDOWN_TIMEOUT=2s"}, replicaStorage(t)...)
	reps := make([]*replica, 3)
	for i := range reps {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		reps[i] = &replica{bin: bin, host: fmt.Sprintf("127.0.0.1:%d", port), logPath: filepath.Join(t.TempDir(), "berth.log"),
			env: append(append([]string{}, common...), "BERTH_DATA_DIR="+t.TempDir())}
		reps[i].start(t)
		defer reps[i].stop(syscall.SIGKILL)
	}
	url := func(i int) string { return "http://" + reps[i].host }
	db, err := meta.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const password = "replica-pass-1"
	hash, _ := auth.HashPassword(password)
	if _, err := db.Users().CreateUser(ctx, meta.User{Username: "alice", SecretHash: hash, Superuser: true}); err != nil {
		t.Fatal(err)
	}

	// A token issued by replica 0, used on all three.
	req, _ := http.NewRequest("GET", url(0)+"/v2/auth?service=berth&scope=repository:alice/app:pull,push&scope=repository:alice/resume:pull,push", nil)
	req.SetBasicAuth("alice", password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("token from replica 0: %v %v", err, resp)
	}
	var tok struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	call := func(method, u string, body []byte, hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, u, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, u, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	// The webhook, created (its secret sealed) through replica 0.
	const secret = "replica-webhook-secret"
	type delivery struct {
		tags   []string
		signed bool
	}
	deliveries := make(chan delivery, 100)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p struct {
			UpdatedTags []string `json:"updated_tags"`
		}
		json.Unmarshal(body, &p)
		deliveries <- delivery{p.UpdatedTags, events.Verify([]byte(secret), body, r.Header.Get(events.SignatureHeader))}
	}))
	defer hook.Close()
	req, _ = http.NewRequest("POST", url(0)+"/api/v1/superuser/notification/", strings.NewReader(
		`{"event":"repo_push","method":"webhook","config":{"url":"`+hook.URL+`","secret":"`+secret+`"}}`))
	req.SetBasicAuth("alice", password)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 201 {
		t.Fatalf("create the webhook through replica 0: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	// Replica 0 stops gracefully (SIGTERM), so the delivery is another's.
	reps[0].stop(syscall.SIGTERM)

	// A chunked push across replicas 1 and 2 (0 is down for now).
	layer := make([]byte, 3<<20)
	rand.Read(layer)
	layerDigest := sha256Digest(layer)
	resp = call("POST", url(1)+"/v2/alice/app/blobs/uploads/", nil)
	if resp.StatusCode != 202 {
		t.Fatalf("start upload on replica 1: %d", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	for i, part := range [][]byte{layer[:1<<20], layer[1<<20 : 2<<20], layer[2<<20:]} {
		r := 1 + i%2
		start := i << 20
		resp = call("PATCH", url(r)+loc, part, "Content-Type", "application/octet-stream",
			"Content-Range", fmt.Sprintf("%d-%d", start, start+len(part)-1))
		if resp.StatusCode != 202 {
			t.Fatalf("PATCH chunk %d on replica %d: %d", i, r, resp.StatusCode)
		}
		loc = resp.Header.Get("Location")
	}
	if resp = call("PUT", url(1)+withDigest(loc, layerDigest), nil); resp.StatusCode != 201 {
		t.Fatalf("finish the upload on replica 1: %d", resp.StatusCode)
	}
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	configDigest := sha256Digest(config)
	if resp = call("POST", url(2)+"/v2/alice/app/blobs/uploads/?digest="+configDigest, config); resp.StatusCode != 201 {
		t.Fatalf("monolithic config upload on replica 2: %d", resp.StatusCode)
	}
	manifest := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`,
		configDigest, len(config), layerDigest, len(layer)))
	if resp = call("PUT", url(2)+"/v2/alice/app/manifests/v1", manifest, "Content-Type", "application/vnd.oci.image.manifest.v1+json"); resp.StatusCode != 201 {
		t.Fatalf("manifest PUT on replica 2: %d", resp.StatusCode)
	}
	// The push is delivered, signed with the secret sealed by replica 0.
	select {
	case d := <-deliveries:
		if !d.signed || len(d.tags) != 1 || d.tags[0] != "v1" {
			t.Fatalf("delivery: %+v", d)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no webhook delivery")
	}
	reps[0].start(t)
	// Pulled from replica 0, back after its restart, with the token it
	// issued before.
	req, _ = http.NewRequest("GET", url(0)+"/v2/alice/app/blobs/"+layerDigest, nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("pull the layer from replica 0: %v %v", err, resp)
	} else {
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(got, layer) {
			t.Fatal("the layer pulled from replica 0 differs")
		}
	}

	// SIGKILL replica 2 under a push load, with an upload streaming into it.
	victim := 2
	resp = call("POST", url(victim)+"/v2/alice/resume/blobs/uploads/", nil)
	if resp.StatusCode != 202 {
		t.Fatalf("start the upload to be cut: %d", resp.StatusCode)
	}
	cutLoc := resp.Header.Get("Location")
	big := make([]byte, 4<<20)
	rand.Read(big)
	// A first chunk lands; the second is streaming when the replica dies.
	resp = call("PATCH", url(victim)+cutLoc, big[:1<<20], "Content-Type", "application/octet-stream", "Content-Range", fmt.Sprintf("0-%d", 1<<20-1))
	if resp.StatusCode != 202 {
		t.Fatalf("first chunk of the upload to be cut: %d", resp.StatusCode)
	}
	cutLoc = resp.Header.Get("Location")
	pr, pw := io.Pipe()
	streaming := make(chan struct{})
	go func() {
		defer close(streaming)
		req, _ := http.NewRequest("PATCH", url(victim)+cutLoc, pr)
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		req.Header.Set("Content-Type", "application/octet-stream")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	if _, err := pw.Write(big[1<<20 : 2<<20]); err != nil {
		t.Fatal(err)
	}

	type acked struct {
		ref    string
		digest string
	}
	var mu sync.Mutex
	var pushed []acked
	stopLoad := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				img, err := random.Image(8<<10, 2)
				if err != nil {
					t.Error(err)
					return
				}
				target := (w + i) % 3
				ref, _ := name.ParseReference(fmt.Sprintf("%s/alice/load:w%d-%d", reps[target].host, w, i), name.Insecure)
				if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "alice", Password: password})); err != nil {
					continue // not acknowledged (the killed replica): nothing promised
				}
				d, _ := img.Digest()
				mu.Lock()
				pushed = append(pushed, acked{fmt.Sprintf("alice/load:w%d-%d", w, i), d.String()})
				mu.Unlock()
			}
		})
	}
	time.Sleep(2 * time.Second) // let the load run on all three first
	reps[victim].stop(syscall.SIGKILL)
	pw.CloseWithError(errors.New("the replica died"))
	<-streaming
	time.Sleep(2 * time.Second) // and on the survivors after
	close(stopLoad)
	wg.Wait()
	if len(pushed) == 0 {
		t.Fatal("no push was acknowledged under load")
	}
	survivors := []int{0, 1}
	for i, p := range pushed {
		host := reps[survivors[i%2]].host
		ref, _ := name.ParseReference(host+"/"+p.ref, name.Insecure)
		img, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "alice", Password: password}))
		if err != nil {
			t.Fatalf("acknowledged push %s lost: %v", p.ref, err)
		}
		if d, _ := img.Digest(); d.String() != p.digest {
			t.Fatalf("%s: digest %s, pushed %s", p.ref, d, p.digest)
		}
		if err := validateImage(img); err != nil {
			t.Fatalf("%s from replica %s: %v", p.ref, host, err)
		}
	}
	t.Logf("%d acknowledged pushes, all pullable from the survivors", len(pushed))

	// The cut upload: its status on a survivor, then resumed from there
	// (the dead replica's claim ends with its lease).
	resp = call("GET", url(0)+cutLoc, nil)
	if resp.StatusCode != 204 {
		t.Fatalf("status of the cut upload on replica 0: %d", resp.StatusCode)
	}
	// At least the first chunk (what the killed PATCH streamed after it was
	// never recorded: SIGKILL ran no code).
	_, end, _ := strings.Cut(resp.Header.Get("Range"), "-")
	n, err := strconv.ParseInt(end, 10, 64)
	if err != nil || n+1 < 1<<20 {
		t.Fatalf("status of the cut upload: Range %q", resp.Header.Get("Range"))
	}
	offset := n + 1
	resp = call("PATCH", url(1)+cutLoc, big[offset:], "Content-Type", "application/octet-stream",
		"Content-Range", fmt.Sprintf("%d-%d", offset, len(big)-1))
	if resp.StatusCode != 202 {
		t.Fatalf("resume the cut upload on replica 1 from %d: %d", offset, resp.StatusCode)
	}
	bigDigest := sha256Digest(big)
	if resp = call("PUT", url(0)+withDigest(resp.Header.Get("Location"), bigDigest), nil); resp.StatusCode != 201 {
		t.Fatalf("finish the resumed upload on replica 0: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest("GET", url(1)+"/v2/alice/resume/blobs/"+bigDigest, nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("pull the resumed blob: %v %v", err, resp)
	} else {
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(got, big) {
			t.Fatalf("the resumed blob differs (resumed from %d)", offset)
		}
	}
	t.Logf("the upload cut at %d bytes by SIGKILL was finished through another replica", offset)
}

func withDigest(loc, dg string) string {
	if strings.Contains(loc, "?") {
		return loc + "&digest=" + dg
	}
	return loc + "?digest=" + dg
}
