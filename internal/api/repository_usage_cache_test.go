package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/wire"
)

// countingUsage counts the RepositoryUsage calls that reach the store.
type countingUsage struct {
	api.UsageStore
	repo atomic.Int64
}

func (c *countingUsage) RepositoryUsage(ctx context.Context, repo string) (int64, error) {
	c.repo.Add(1)
	return c.UsageStore.RepositoryUsage(ctx, repo)
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestRepositoryQuotaReportIsComputedOncePerTTL: anonymous reads of a
// public repository's description, at any rate, add up the repository's
// usage once per 30 seconds (per replica), with or without its tags;
// the report keeps Quay's shape.
func TestRepositoryQuotaReportIsComputedOncePerTTL(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, e *testenv.Env) {
		ctx := context.Background()
		e.User("alice", false)
		e.Org("acme", "alice")
		if err := e.DB.Repositories().CreateRepository(ctx, "acme/app", "public", "", "test", 0); err != nil {
			t.Fatal(err)
		}
		st := wire.APIStores(e.DB, config.Default().GC.TimeMachine)
		usage := &countingUsage{UsageStore: st.Usage}
		st.Usage = usage
		clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
		a := api.New(st, e.Authz, api.Options{Now: clock.Now})
		get := func(path string) {
			t.Helper()
			rec := httptest.NewRecorder()
			a.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s = %d: %s", path, rec.Code, rec.Body)
			}
			var v struct {
				QuotaReport *struct {
					QuotaBytes      *int64 `json:"quota_bytes"`
					BackfillStatus  string `json:"backfill_status"`
					RunningBackfill string `json:"running_backfill"`
				} `json:"quota_report"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
				t.Fatal(err)
			}
			if v.QuotaReport == nil || v.QuotaReport.QuotaBytes == nil || v.QuotaReport.BackfillStatus != "complete" || v.QuotaReport.RunningBackfill != "complete" {
				t.Fatalf("GET %s: quota_report is not Quay's: %s", path, rec.Body)
			}
		}
		for i := range 20 {
			path := "/api/v1/repository/acme/app"
			if i%2 == 1 {
				path += "?includeTags=false"
			}
			get(path)
		}
		if n := usage.repo.Load(); n != 1 {
			t.Fatalf("20 anonymous reads computed the repository's usage %d times, want 1", n)
		}
		clock.Add(29 * time.Second)
		get("/api/v1/repository/acme/app")
		if n := usage.repo.Load(); n != 1 {
			t.Fatalf("a read within 30 s computed the usage again (%d calls)", n)
		}
		clock.Add(2 * time.Second)
		get("/api/v1/repository/acme/app")
		get("/api/v1/repository/acme/app")
		if n := usage.repo.Load(); n != 2 {
			t.Fatalf("reads after 30 s computed the usage %d times in all, want 2", n)
		}
	})
}

// TestRepositoryQuotaReportConcurrentReadsComputeOnce: reads that arrive
// together while nothing is cached wait for one computation.
func TestRepositoryQuotaReportConcurrentReadsComputeOnce(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	ctx := context.Background()
	e.User("alice", false)
	e.Org("acme", "alice")
	if err := e.DB.Repositories().CreateRepository(ctx, "acme/app", "public", "", "test", 0); err != nil {
		t.Fatal(err)
	}
	st := wire.APIStores(e.DB, config.Default().GC.TimeMachine)
	usage := &countingUsage{UsageStore: st.Usage}
	st.Usage = usage
	a := api.New(st, e.Authz, api.Options{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			a.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/repository/acme/app?includeTags=false", nil))
			if rec.Code != http.StatusOK {
				t.Errorf("GET = %d: %s", rec.Code, rec.Body)
			}
		})
	}
	wg.Wait()
	if n := usage.repo.Load(); n != 1 {
		t.Fatalf("8 concurrent reads computed the usage %d times, want 1", n)
	}
}
