package registry_test

import (
	"context"
	"net/http"
	"path"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestClaimWaitersDoNotWrite: requests waiting for another's claim on an
// upload read its lease while they wait and try to claim it (a write)
// only once it has ended, so 50 of them waiting two seconds cost SQLite's
// one writer a few writes each, not one every 100 ms: before, each poll
// was a write transaction (about 1,000 here), queued with every push's.
// Every waiter gets the upload once the claim is released.
func TestClaimWaitersDoNotWrite(t *testing.T) {
	const waiters = 50
	e := testenv.New(t, testenv.Options{Open: true})
	ctx := context.Background()
	resp, err := http.Post(e.URL+"/v2/app/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("start upload: %d", resp.StatusCode)
	}
	id := path.Base(loc)
	held, err := e.DB.Uploads().ClaimUpload(ctx, "app", id, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	before, _, ok := e.DB.WriterWait()
	if !ok {
		t.Fatal("no count of write transactions")
	}
	codes := make(chan int, waiters)
	var wg sync.WaitGroup
	for range waiters {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPatch, e.URL+loc, nil) // an empty chunk
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	time.Sleep(2 * time.Second) // 20 polls each
	waiting, _, _ := e.DB.WriterWait()
	if err := e.DB.Uploads().ReleaseUpload(ctx, id, held.Claim); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusAccepted {
			t.Errorf("a waiting PATCH answered %d, want 202 once the claim was released", code)
		}
	}
	after, _, _ := e.DB.WriterWait()
	// While the claim is held: each waiter's first try, and nothing more.
	if writes := waiting - before; writes > 2*waiters {
		t.Errorf("%d requests waiting 2 s on a claim made %d write transactions, want about %d", waiters, writes, waiters)
	}
	// Then, per waiter, its claim and release, and a few tries that lose
	// a race for the claim just released.
	if writes := after - waiting; writes > 8*waiters {
		t.Errorf("%d requests taking a released claim in turn made %d write transactions, want at most %d", waiters, writes, 8*waiters)
	}
	t.Logf("write transactions: %d while the claim was held, %d after", waiting-before, after-waiting)
}
