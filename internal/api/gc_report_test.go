package api_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/gc"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
)

// gcReport is the answer of GET .../manifest/{digest}/gc.
type gcReport struct {
	Kept    bool     `json:"kept"`
	Reasons []string `json:"reasons"`
	Parents []string `json:"parents"`
}

func (e *urEnv) gcReport(as, repo string, d digest.Digest) (gcReport, string) {
	e.t.Helper()
	r := e.want(as, "GET", "/api/v1/repository/"+repo+"/manifest/"+d.String()+"/gc", nil, 200)
	var v gcReport
	if err := json.Unmarshal(r.body, &v); err != nil {
		e.t.Fatalf("gc report: %v: %s", err, r.body)
	}
	return v, string(r.body)
}

// TestGCReportHidesHeldContent: in a public gated repository, a held
// candidate index C lists a platform P that a published index A lists
// too, and a platform Q stored readable before the gate that nothing
// else keeps; A is itself a live candidate for a second guarded tag. The
// anonymous report on P names A but not C, the one on A counts no
// candidacy, the one on Q says a gate keeps it without naming C; all say
// the manifest is kept. A checker (a superuser) sees C among P's and Q's
// parents and A's candidacy counted.
func TestGCReportHidesHeldContent(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			col := gc.New(gc.Stores{}, nil, gc.Options{Delay: time.Millisecond})
			e := newUREnv(t, dialect, api.Options{GC: col})
			ctx := context.Background()
			e.user("root", true)
			e.org("acme", e.user("alice", false))
			e.repo("acme/app", "public")
			p := e.image("acme/app", "", 10)
			a := e.index("acme/app", "latest", p) // publishes p with it
			q := e.image("acme/app", "", 30)      // readable: stored before the gate
			if err := e.db.Gates().PutGate(ctx, meta.Gate{Repository: "acme/app", Tags: []string{"15", "16"}, Config: json.RawMessage(`{"tags":["15","16"]}`)}); err != nil {
				t.Fatal(err)
			}
			c := e.index("acme/app", "15", p, q, e.image("acme/app", "", 20))
			e.index("acme/app", "16", p) // a's digest again: a candidate for 16
			if m, err := e.db.Manifests().GetManifest(ctx, "acme/app", "", c, false); err != nil || !m.Held {
				t.Fatalf("the candidate index is not held: %+v %v", m, err)
			}
			for _, d := range []digest.Digest{p, q} {
				if m, err := e.db.Manifests().GetManifest(ctx, "acme/app", "", d, false); err != nil || m.Held {
					t.Fatalf("the published platform is held: %+v %v", m, err)
				}
			}
			time.Sleep(5 * time.Millisecond) // past gc.delay

			anon, body := e.gcReport("", "acme/app", p)
			if strings.Contains(body, c.Encoded()) {
				t.Errorf("the anonymous report names the held candidate %s: %s", c, body)
			}
			if !anon.Kept || !slices.Equal(anon.Parents, []string{a.String()}) ||
				!slices.Equal(anon.Reasons, []string{"protected_by_parent: 1 index(es) of the repository list it"}) {
				t.Errorf("anonymous report on the platform: %s", body)
			}
			anonQ, body := e.gcReport("", "acme/app", q)
			if strings.Contains(body, c.Encoded()) || !anonQ.Kept || len(anonQ.Parents) != 0 ||
				!slices.Equal(anonQ.Reasons, []string{"protected_by_gate: a gate holds content that keeps it"}) {
				t.Errorf("anonymous report on the platform only the candidate lists: %s", body)
			}
			anonA, bodyA := e.gcReport("", "acme/app", a)
			if !anonA.Kept || !slices.Equal(anonA.Reasons, []string{"protected_by_tag: 1 tag(s) point at it"}) {
				t.Errorf("anonymous report on the published index tells of its candidacy: %s", bodyA)
			}

			root, body := e.gcReport("root", "acme/app", p)
			if !root.Kept || !slices.Contains(root.Parents, c.String()) || !slices.Contains(root.Parents, a.String()) ||
				!slices.Contains(root.Reasons, "protected_by_parent: 2 index(es) of the repository list it") {
				t.Errorf("checker's report on the platform: %s", body)
			}
			rootQ, body := e.gcReport("root", "acme/app", q)
			if !rootQ.Kept || !slices.Equal(rootQ.Parents, []string{c.String()}) ||
				!slices.Equal(rootQ.Reasons, []string{"protected_by_parent: 1 index(es) of the repository list it"}) {
				t.Errorf("checker's report on the platform only the candidate lists: %s", body)
			}
			rootA, bodyA := e.gcReport("root", "acme/app", a)
			if !rootA.Kept || !slices.Contains(rootA.Reasons, "protected_by_gate: a live candidate for 1 guarded tag(s)") {
				t.Errorf("checker's report on the published index: %s", bodyA)
			}
		})
	}
}

// TestGCReportNamesTheCacheKeeping: in a proxy cache organization, a
// manifest no tag keeps (one pulled by digest) is kept for the
// organization's expiration after it was stored; the report says so,
// and until when, where it said the next pass collects it.
func TestGCReportNamesTheCacheKeeping(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			col := gc.New(gc.Stores{}, nil, gc.Options{Delay: time.Millisecond})
			e := newUREnv(t, dialect, api.Options{GC: col})
			ctx := context.Background()
			e.user("root", true)
			e.org("hub", e.user("alice", false))
			if err := e.db.ProxyCaches().SetProxyCache(ctx, meta.ProxyCache{Namespace: "hub", Upstream: "docker.io", ExpirationS: 3600, CreatedBy: "alice"}); err != nil {
				t.Fatal(err)
			}
			e.repo("hub/alpine", "public")
			before := time.Now()
			d := e.image("hub/alpine", "", 10)
			time.Sleep(5 * time.Millisecond) // past gc.delay
			r := e.want("root", "GET", "/api/v1/repository/hub/alpine/manifest/"+d.String()+"/gc", nil, 200)
			var v struct {
				Kept        bool      `json:"kept"`
				Reasons     []string  `json:"reasons"`
				CachedUntil time.Time `json:"cached_until"`
			}
			if err := json.Unmarshal(r.body, &v); err != nil {
				t.Fatal(err)
			}
			if !v.Kept || len(v.Reasons) != 1 || !strings.HasPrefix(v.Reasons[0], "protected_by_proxy_cache: kept by the pull-through cache until ") {
				t.Fatalf("report on a manifest the cache keeps: %s", r.body)
			}
			if v.CachedUntil.Before(before.Add(time.Hour)) || v.CachedUntil.After(time.Now().Add(time.Hour)) ||
				!strings.HasSuffix(v.Reasons[0], v.CachedUntil.UTC().Format(time.RFC3339)) {
				t.Fatalf("cached until %v, want an hour after it was stored: %s", v.CachedUntil, r.body)
			}
		})
	}
}
