package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
)

// crashServer is a berth process that the crash test kills with SIGKILL and
// starts again on the same data directory.
type crashServer struct {
	bin, dataDir, host, logPath string
	env                         []string // extra environment, e.g. BERTH_HTTP_* limits
	cmd                         *exec.Cmd
	done                        chan struct{}
}

func (c *crashServer) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(c.bin, "serve", "--addr", c.host, "--data-dir", c.dataDir, "--auth", "none")
	c.cmd.Env = append(append(os.Environ(), `BERTH_NOTIFICATIONS_ALLOWED_HOSTS=["loopback"]`), c.env...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.done = make(chan struct{})
	go func() { c.cmd.Wait(); logf.Close(); close(c.done) }()
	deadline := time.Now().Add(30 * time.Second)
	client := http.Client{Timeout: 5 * time.Second}
	for {
		resp, err := client.Get("http://" + c.host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(c.logPath)
			t.Fatalf("berth did not come back after a crash: %v\n%s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *crashServer) kill() {
	c.cmd.Process.Kill() // SIGKILL: no shutdown code runs
	<-c.done
}

type pushResult struct {
	tag    string
	digest v1.Hash
	err    error
}

// TestCrashDuringPushes kills the server with SIGKILL in the middle of a
// burst of concurrent pushes, several times, and checks after each restart
// that every push the client saw succeed is complete and announced, that
// nothing half-pushed is visible, and that untouched content is intact.
// At the end every acknowledged push has reached the webhook receiver and
// has been scanned: both through the change feed's subscribers.
func TestCrashDuringPushes(t *testing.T) {
	begin(t)
	if os.Getenv("BERTH_E2E_REGISTRY") != "" {
		t.Skip("the crash test starts and kills its own berth; skipped with BERTH_E2E_REGISTRY")
	}
	bin := filepath.Join(runDir, "berth")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("berth binary: %v", err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	c := &crashServer{bin: bin, dataDir: t.TempDir(), host: fmt.Sprintf("127.0.0.1:%d", port), logPath: filepath.Join(t.TempDir(), "berth.log")}
	c.start(t)
	defer func() {
		select {
		case <-c.done:
		default:
			c.kill()
		}
	}()
	ref := func(s string) name.Reference {
		r, err := name.ParseReference(c.host+"/"+s, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// A webhook receiver that records every delivered push by event id.
	var rmu sync.Mutex
	received := map[string]int{} // tag@digest -> deliveries
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p struct {
			UpdatedTags []string `json:"updated_tags"`
			Digest      string   `json:"digest"`
		}
		json.NewDecoder(r.Body).Decode(&p)
		rmu.Lock()
		for _, tag := range p.UpdatedTags {
			received[tag+"@"+p.Digest]++
		}
		rmu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()
	resp, err := http.Post("http://"+c.host+"/api/v1/superuser/notification/", "application/json",
		strings.NewReader(`{"event":"repo_push","method":"webhook","config":{"url":"`+rcv.URL+`"}}`))
	if err == nil {
		resp.Body.Close()
	}
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("create the notification: %v %v", err, resp)
	}

	stable, _ := random.Image(64<<10, 2)
	if err := remote.Write(ref("crash/app:stable"), stable); err != nil {
		t.Fatal(err)
	}
	stableDigest, _ := stable.Digest()

	var acked []pushResult
	for round := 0; round < 4; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		results := make(chan pushResult, 1000)
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					// Layers from 1 KiB to 2 MiB, so that kills land in
					// uploads as well as in manifest commits.
					img, _ := random.Image(int64(1<<10+rand.IntN(2<<20)), 2)
					tag := fmt.Sprintf("r%d-w%d-%d", round, w, i)
					err := remote.Write(ref("crash/app:"+tag), img, remote.WithContext(ctx), remote.WithRetryBackoff(remote.Backoff{Steps: 1}))
					d, _ := img.Digest()
					results <- pushResult{tag: tag, digest: d, err: err}
				}
			}(w)
		}
		time.Sleep(time.Duration(300+rand.IntN(900)) * time.Millisecond)
		c.kill()
		cancel()
		wg.Wait()
		close(results)
		n := 0
		for r := range results {
			if r.err == nil {
				acked = append(acked, r)
				n++
			}
		}
		t.Logf("round %d: %d pushes acknowledged before SIGKILL", round, n)
		c.start(t)
		checkRegistryConsistent(t, c.host, ref, acked, stableDigest)
	}
	// Every push the client saw succeed is delivered to the receiver,
	// through four SIGKILLs.
	deadline := time.Now().Add(90 * time.Second)
	for {
		rmu.Lock()
		missing := 0
		for _, r := range acked {
			if received[r.tag+"@"+r.digest.String()] == 0 {
				missing++
			}
		}
		rmu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged pushes never reached the webhook receiver", missing, len(acked))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Every push the client saw succeed is scanned (scan-on-push is on by
	// default): its scan was queued by the feed's scan subscriber, and a
	// scan worker ran it.
	waitAllScanned(t, filepath.Join(c.dataDir, "berth.db"), acked, 90*time.Second)
	c.kill()
	checkEvents(t, filepath.Join(c.dataDir, "berth.db"), acked)
}

// waitAllScanned waits until every acknowledged push has a scan result
// (anything but queued), reading the running server's database.
func waitAllScanned(t *testing.T, dbPath string, acked []pushResult, limit time.Duration) {
	t.Helper()
	ctx := context.Background()
	db, err := meta.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(limit)
	for {
		var missing []string
		for _, r := range acked {
			st, err := db.Scans().ManifestScan(ctx, r.digest.String())
			if err != nil || st.Status == meta.ScanQueued {
				missing = append(missing, fmt.Sprintf("%s (%v)", r.tag, firstNonNil(err, st.Status)))
			}
		}
		if len(missing) == 0 {
			t.Logf("%d acknowledged pushes, all scanned", len(acked))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged pushes not scanned after %s: %v", len(missing), len(acked), limit, missing[:min(len(missing), 10)])
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func firstNonNil(err error, status string) any {
	if err != nil {
		return err
	}
	return status
}

func checkRegistryConsistent(t *testing.T, host string, ref func(string) name.Reference, acked []pushResult, stable v1.Hash) {
	t.Helper()
	// Every acknowledged push is there and complete.
	for _, r := range acked {
		img, err := remote.Image(ref("crash/app:" + r.tag))
		if err != nil {
			t.Fatalf("acknowledged push %s lost after a crash: %v", r.tag, err)
		}
		if d, _ := img.Digest(); d != r.digest {
			t.Fatalf("tag %s points at %s, pushed %s", r.tag, d, r.digest)
		}
	}
	// Every visible tag, acknowledged or not, names a complete image.
	repo, _ := name.NewRepository(host+"/crash/app", name.Insecure)
	tags, err := remote.List(repo)
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range tags {
		img, err := remote.Image(repo.Tag(tag))
		if err != nil {
			t.Fatalf("tag %s is visible but its manifest is not: %v", tag, err)
		}
		if err := validateImage(img); err != nil {
			t.Fatalf("tag %s is visible but incomplete: %v", tag, err)
		}
		if tag == "stable" {
			if d, _ := img.Digest(); d != stable {
				t.Fatalf("stable moved to %s", d)
			}
		}
	}
}

// validateImage reads every blob of an image; ggcr checks each digest.
func validateImage(img v1.Image) error {
	if _, err := img.RawConfigFile(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("layer: %w", err)
		}
	}
	return nil
}

// checkEvents reads the outbox of the stopped server: each acknowledged
// push has its repo_push event, and no repo_push event names a manifest
// that is not stored.
func checkEvents(t *testing.T, dbPath string, acked []pushResult) {
	t.Helper()
	ctx := context.Background()
	db, err := meta.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	events, err := db.Outbox().EventsAfter(ctx, 0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	pushed := map[string]bool{}
	for _, e := range events {
		if e.Kind != meta.EventRepoPush {
			continue
		}
		var data struct {
			Digest      string   `json:"digest"`
			UpdatedTags []string `json:"updated_tags"`
		}
		if err := json.Unmarshal(e.Data, &data); err != nil {
			t.Fatal(err)
		}
		for _, tag := range data.UpdatedTags {
			pushed[tag+"@"+data.Digest] = true
		}
		if _, err := db.Manifests().GetManifest(ctx, e.Repository, "", digest.Digest(data.Digest), false); err != nil {
			t.Fatalf("repo_push event %s names manifest %s, which is not stored: %v", e.UUID, data.Digest, err)
		}
	}
	for _, r := range acked {
		if !pushed[r.tag+"@"+r.digest.String()] {
			t.Fatalf("acknowledged push %s@%s has no repo_push event", r.tag, r.digest)
		}
	}
	t.Logf("%d acknowledged pushes, %d repo_push events, all consistent", len(acked), len(pushed))
}
