package gate

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/scan"
)

func compileConfig(t *testing.T, c Config) *Compiled {
	t.Helper()
	out, err := c.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestConfigCompile: what a gate refuses (each with the field it is
// about) and the defaults it fills in.
func TestConfigCompile(t *testing.T) {
	bad := []struct {
		cfg  Config
		want string
	}{
		{Config{}, "tags: at least one"},
		{Config{Tags: []string{"[15"}}, "tags:"},
		{Config{Tags: []string{"a/b"}}, "tags:"},
		{Config{Tags: []string{"15"}, RollbackTag: "{tag}-stable"}, "must hold {n} or {digest12}"},
		{Config{Tags: []string{"15"}, RollbackTag: "{tag}-{n}-{run}"}, "unknown variable"},
		{Config{Tags: []string{"15"}, RollbackTag: "-{n}"}, "valid tag"},
		{Config{Tags: []string{"15"}, ScanSeverity: "Severe"}, "scan_severity"},
		{Config{Tags: []string{"15"}, RequiredChecks: []string{"has space"}}, "required_checks"},
		{Config{Tags: []string{"15"}, Checkers: []string{"Not A Robot!"}}, "checkers"},
		{Config{Tags: []string{"15"}, Keys: []string{"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}}, "keys[0]"},
		{Config{Tags: []string{"15"}, Policy: "scan.status =="}, "policy: 1:"},
	}
	for _, tc := range bad {
		_, err := tc.cfg.Compile()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	// Every signature is tried against every key: the keys are bounded,
	// and a key listed twice is refused.
	var keys []string
	for range MaxKeys + 1 {
		keys = append(keys, newP256(t).trusted.PEM)
	}
	if err := (Config{Tags: []string{"15"}, Keys: keys}).CheckNew(); err == nil || !strings.Contains(err.Error(), "at most 32") {
		t.Errorf("%d keys: %v", len(keys), err)
	}
	if err := (Config{Tags: []string{"15"}, Keys: keys[:MaxKeys]}).CheckNew(); err != nil {
		t.Errorf("%d keys: %v", MaxKeys, err)
	}
	twice := Config{Tags: []string{"15"}, Keys: []string{keys[0], keys[1], keys[0]}}
	if err := twice.CheckNew(); err == nil || !strings.Contains(err.Error(), "keys[2]: the same key as keys[0]") {
		t.Errorf("a key listed twice: %v", err)
	}
	// A configuration stored before the bounds still loads: a key listed
	// twice is tried once, and more than MaxKeys keys are kept.
	if c, err := twice.Compile(); err != nil || len(c.Keys) != 2 {
		t.Errorf("a stored configuration listing a key twice: %v %+v", err, c)
	}
	if c, err := (Config{Tags: []string{"15"}, Keys: keys}).Compile(); err != nil || len(c.Keys) != MaxKeys+1 {
		t.Errorf("a stored configuration of %d keys: %v", len(keys), err)
	}
	c := compileConfig(t, Config{Tags: []string{"15-*"}, Policy: `checks["e2e"] == "pass"`, RequiredChecks: []string{"functional"}})
	if c.RollbackTag != DefaultRollbackTag || c.ScanSeverity != "Critical" || !slices.Equal(c.required(), []string{"functional", "e2e"}) {
		t.Fatalf("defaults: %+v required %v", c.Config, c.required())
	}
	when := time.Date(2026, 12, 2, 23, 30, 0, 0, time.UTC)
	if got := RollbackTag("{tag}-{date}-{digest12}-{n}", "15-alpine", 7, "sha256:0123456789abcdef0123", when); got != "15-alpine-20261202-0123456789ab-7" {
		t.Fatalf("rollback tag: %s", got)
	}
}

func TestPostedCheckValidate(t *testing.T) {
	for _, tc := range []struct {
		c  PostedCheck
		ok bool
	}{
		{PostedCheck{Name: "functional", Status: "pass"}, true},
		{PostedCheck{Name: "ci/e2e:amd64", Status: "pending", DetailsURL: "https://ci.example/run/1", Summary: "running"}, true},
		{PostedCheck{Name: "berth/scan", Status: "pass"}, false},
		{PostedCheck{Name: "", Status: "pass"}, false},
		{PostedCheck{Name: "e2e", Status: "success"}, false},
		{PostedCheck{Name: "e2e", Status: "pass", DetailsURL: "file:///etc/passwd"}, false},
		{PostedCheck{Name: "e2e", Status: "pass", Summary: strings.Repeat("x", 1025)}, false},
		{PostedCheck{Name: strings.Repeat("n", 101), Status: "pass"}, false},
	} {
		if err := tc.c.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.c, err)
		}
	}
}

// TestDecide: a failed required check blocks at once; a missing or
// pending one (or a running scan the gate reads) makes the candidate
// wait; then the policy decides and names its false parts.
func TestDecide(t *testing.T) {
	ctx := context.Background()
	scanned := Scan{Status: "scanned"}
	tests := []struct {
		name    string
		cfg     Config
		checks  map[string]string
		scan    Scan
		state   string
		reasons []string
	}{
		{"no policy, no checks", Config{}, nil, scanned, meta.CandidatePromoted, nil},
		{"required check missing", Config{RequiredChecks: []string{"functional"}}, nil, scanned, meta.CandidatePending,
			[]string{`waiting for check "functional"`}},
		{"required check pending", Config{RequiredChecks: []string{"functional"}}, map[string]string{"functional": "pending"}, scanned,
			meta.CandidatePending, []string{`waiting for check "functional" (pending)`}},
		{"failed check blocks though another is missing", Config{RequiredChecks: []string{"functional", "perf"}}, map[string]string{"functional": "fail"},
			scanned, meta.CandidateBlocked, []string{`check "functional" failed`}},
		{"check the policy reads is waited for", Config{Policy: `checks["e2e"] == "pass"`}, nil, scanned, meta.CandidatePending,
			[]string{`waiting for check "e2e"`}},
		{"scan running, policy reads it", Config{Policy: `scan.counts.critical == 0`}, nil, Scan{Status: "pending"}, meta.CandidatePending,
			[]string{"waiting for the vulnerability scan"}},
		{"scan running, policy does not read it", Config{Policy: `tag == "15-alpine"`}, nil, Scan{Status: "pending"}, meta.CandidatePromoted, nil},
		{"no vulnerability data is not clean", Config{Policy: `scan.status == "scanned" && tag == "15-alpine"`}, nil, Scan{Status: "no_data"},
			meta.CandidateBlocked, []string{`policy: scan.status == "scanned" is false`}},
		{"built-in scan check fails without data", Config{RequiredChecks: []string{CheckScan}}, nil, Scan{Status: "no_data"},
			meta.CandidateBlocked, []string{`check "berth/scan" failed`}},
		{"critical vulnerability", Config{RequiredChecks: []string{CheckScan}}, nil, Scan{Status: "scanned", Counts: Severities{Critical: 1}},
			meta.CandidateBlocked, []string{`check "berth/scan" failed`}},
		{"high under a critical threshold passes", Config{RequiredChecks: []string{CheckScan}}, nil, Scan{Status: "scanned", Counts: Severities{High: 3}},
			meta.CandidatePromoted, nil},
		{"high over a high threshold fails", Config{RequiredChecks: []string{CheckScan}, ScanSeverity: "High"}, nil,
			Scan{Status: "scanned", Counts: Severities{High: 3}}, meta.CandidateBlocked, []string{`check "berth/scan" failed`}},
		{"unsigned", Config{RequiredChecks: []string{CheckSignature}}, nil, scanned, meta.CandidatePending, []string{`waiting for check "berth/signature"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Tags = []string{"15-*"}
			cfg := compileConfig(t, tc.cfg)
			in := Input{Tag: "15-alpine", Scan: tc.scan, Checks: map[string]string{}}
			for k, v := range tc.checks {
				in.Checks[k] = v
			}
			for _, n := range cfg.required() {
				if _, ok := in.Checks[n]; !ok {
					in.Checks[n] = StatusMissing
				}
			}
			in.Checks[CheckScan] = scanCheck(in.Scan, cfg.ScanSeverity)
			in.Checks[CheckSignature] = StatusMissing
			in.Checks[CheckBase] = StatusPass
			state, reasons, _ := decide(ctx, cfg, in, "")
			if state != tc.state {
				t.Fatalf("state %s (%v), want %s", state, reasons, tc.state)
			}
			for _, want := range tc.reasons {
				if !slices.ContainsFunc(reasons, func(r string) bool { return strings.HasPrefix(r, want) }) {
					t.Fatalf("reasons %q lack %q", reasons, want)
				}
			}
		})
	}
}

// fakeContent serves manifests from a map.
type fakeContent map[digest.Digest]meta.Manifest

func (f fakeContent) GetManifest(_ context.Context, _, tag string, d digest.Digest, _ bool) (meta.Manifest, error) {
	if m, ok := f[d]; ok && tag == "" {
		return m, nil
	}
	return meta.Manifest{}, meta.ErrManifestNotFound
}

func (f fakeContent) ReferrersAfter(context.Context, string, digest.Digest, string, meta.ReferrerKey, int) ([]meta.Manifest, error) {
	return nil, nil
}

// noBlobs stores no blob.
type noBlobs struct{}

func (noBlobs) RepositoryBlob(context.Context, string, digest.Digest) (meta.Blob, error) {
	return meta.Blob{}, meta.ErrBlobNotFound
}

// fakeScanner answers a scan per digest.
type fakeScanner map[digest.Digest]scan.SecurityInfo

func (f fakeScanner) Security(_ context.Context, _ string, m meta.Manifest, _ bool) (scan.SecurityInfo, error) {
	return f[m.Digest], nil
}

func vulnInfo(cves ...string) scan.SecurityInfo {
	var vs []scan.Vulnerability
	for i, c := range cves {
		fixed := ""
		if i%2 == 0 {
			fixed = "1.2.3-1"
		}
		vs = append(vs, scan.Vulnerability{Name: c, Severity: "Critical", FixedBy: fixed})
	}
	return scan.SecurityInfo{Status: meta.ScanScanned, VulnerabilityData: &scan.DataCoverage{Complete: true},
		Data: &scan.SecurityData{Layer: scan.SecurityLayer{Features: []scan.Feature{{Name: "openssl", Version: "3.0.11-1", Vulnerabilities: vs}}}}}
}

// TestScanInput: an image's scan as the policy sees it, and an index's
// platforms together: the worst status wins (a scan still running is
// pending; scanned without data for the distribution is no_data, with
// the reason), vulnerabilities are counted once per package.
func TestScanInput(t *testing.T) {
	ctx := context.Background()
	amd, arm := digest.FromString("amd64"), digest.FromString("arm64")
	idx := meta.Manifest{Digest: digest.FromString("index"), MediaType: "application/vnd.oci.image.index.v1+json",
		Content: []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
			{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":1,"platform":{"os":"linux","architecture":"amd64"}},
			{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":1,"platform":{"os":"linux","architecture":"arm64"}},
			{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":1,"platform":{"os":"unknown","architecture":"unknown"}}]}`,
			amd, arm, digest.FromString("attestation")))}
	img := func(d digest.Digest) meta.Manifest {
		return meta.Manifest{Digest: d, MediaType: "application/vnd.oci.image.manifest.v1+json", Content: []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)}
	}
	content := fakeContent{idx.Digest: idx, amd: img(amd), arm: img(arm)}
	for _, tc := range []struct {
		name     string
		scans    fakeScanner
		status   string
		critical int64
		fixable  int64
		reason   string
	}{
		{"both scanned", fakeScanner{amd: vulnInfo("CVE-1", "CVE-2"), arm: vulnInfo("CVE-1", "CVE-2")}, "scanned", 2, 1, "2 critical"},
		{"one running", fakeScanner{amd: vulnInfo(), arm: {Status: meta.ScanQueued}}, "pending", 0, 0, "not finished"},
		{"no data for one", fakeScanner{amd: vulnInfo(), arm: {Status: meta.ScanScanned, VulnerabilityData: &scan.DataCoverage{Missing: []string{"Debian:12"},
			Ecosystems: []scan.EcosystemData{{Ecosystem: "Debian:12"}}}}}, "no_data", 0, 0, "no vulnerability data to judge it by"},
		{"failed", fakeScanner{amd: vulnInfo(), arm: {Status: meta.ScanFailed, Reason: "layer unreadable"}}, "failed", 0, 0, "layer unreadable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Stores{Content: content, Blobs: noBlobs{}, Scanner: tc.scans}, nil)
			parsedIdx := mustParse(t, idx)
			sc, reason, err := s.scanInput(ctx, "mirror/node", idx, parsedIdx, "Critical")
			if err != nil {
				t.Fatal(err)
			}
			if sc.Status != tc.status || sc.Counts.Critical != tc.critical || sc.Fixable.Critical != tc.fixable || !strings.Contains(reason, tc.reason) {
				t.Fatalf("scan %+v reason %q", sc, reason)
			}
		})
	}
	s := New(Stores{Content: content, Blobs: noBlobs{}}, nil)
	if sc, reason, _ := s.scanInput(ctx, "mirror/node", idx, mustParse(t, idx), "Critical"); sc.Status != "disabled" || reason == "" {
		t.Fatalf("scanning off: %+v %q", sc, reason)
	}
	if m := s.manifestInput(ctx, "mirror/node", idx, mustParse(t, idx)); len(m.Platforms) != 2 || m.Platforms[1].Architecture != "arm64" {
		t.Fatalf("platforms of an index: %+v", m.Platforms)
	}
}

// fakeLive says which repositories have live candidates; fakeQueue keeps
// what was enqueued.
type fakeLive map[string]bool

func (f fakeLive) HasLiveCandidates(_ context.Context, repo string) (bool, error) {
	return f[repo], nil
}

type fakeQueue struct{ jobs []meta.Job }

func (q *fakeQueue) EnqueueIn(_ context.Context, _ meta.Tx, j meta.Job) (int64, error) {
	q.jobs = append(q.jobs, j)
	return int64(len(q.jobs)), nil
}

// TestSubscriber: a candidate's arrival queues its evaluation; a check,
// a push (a signature), a scan in a repository with live candidates
// queues that repository's; one in a repository without any queues
// nothing; a vulnerability data import queues all, once per batch.
func TestSubscriber(t *testing.T) {
	q := &fakeQueue{}
	s := NewSubscriber(fakeLive{"mirror/node": true}, q)
	ev := func(kind, repo, data string) meta.Event {
		return meta.Event{Kind: kind, Repository: repo, Data: json.RawMessage(data)}
	}
	err := s.Handle(context.Background(), meta.Tx{}, []meta.Event{
		ev(meta.EventPromotionPending, "mirror/node", `{"candidate":7}`),
		ev(meta.EventGateCheck, "mirror/node", `{}`),
		ev(meta.EventRepoPush, "mirror/node", `{}`), // same repository, same batch: once
		ev(meta.EventGraphIndexed, "mirror/node", `{}`),
		ev(meta.EventManifestScanned, "team/app", `{}`),
		ev(meta.EventRepoPush, "team/app", `{}`),
		ev(meta.EventVulnDataUpdated, "", `{}`),
		ev(meta.EventVulnDataUpdated, "", `{}`),
		ev(meta.EventTagDeleted, "mirror/node", `{}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, j := range q.jobs {
		if j.Queue != Queue {
			t.Fatalf("job on queue %s", j.Queue)
		}
		got = append(got, j.OrderingKey+" "+string(j.Payload))
	}
	want := []string{`repo|mirror/node {"candidate":7}`, `repo|mirror/node {"repository":"mirror/node"}`, `all {"all":true}`}
	if !slices.Equal(got, want) {
		t.Fatalf("jobs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func mustParse(t *testing.T, m meta.Manifest) *oci.Manifest {
	t.Helper()
	p, err := oci.ParseManifest(m.Content, m.MediaType)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBaseShownToCheckers: the base a policy reads and the evaluation
// shows (which the candidate's checkers read, and its notifications
// carry) leaves out the name of a private base in another namespace; a
// public base, or a private one of the candidate's own namespace, is
// named. Until the graph has looked at the candidate, its base is
// waited for.
func TestBaseShownToCheckers(t *testing.T) {
	ctx := context.Background()
	db := metatest.Open(t, "sqlite")
	owner, err := db.Users().CreateUser(ctx, meta.User{Username: "owner"})
	if err != nil {
		t.Fatal(err)
	}
	for _, org := range []string{"secret", "library", "team"} {
		if _, err := db.Organizations().CreateOrganization(ctx, org, owner.ID); err != nil {
			t.Fatal(err)
		}
	}
	app := meta.Manifest{Digest: digest.FromString("app"), MediaType: "application/vnd.oci.image.manifest.v1+json", Content: []byte("app")}
	if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "team/app", Manifest: app, Tag: "1"}); err != nil {
		t.Fatal(err)
	}
	s := New(Stores{Bases: db.Graph(), Registry: "reg.example"}, nil)
	if b, err := s.base(ctx, "team/app", app); err != nil || !b.waiting || b.Known {
		t.Fatalf("before the graph looked at it: %+v %v", b, err)
	}
	if err := db.Graph().RecordImage(ctx, meta.GraphImage{Repository: "team/app", Digest: app.Digest, Chain: []digest.Digest{digest.FromString("layer")}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		repo, visibility string
		shown            bool
	}{
		{"secret/ubuntu", "private", false},
		{"library/debian", "public", true},
		{"team/base", "private", true},
	} {
		base := meta.Manifest{Digest: digest.FromString(c.repo), MediaType: "application/vnd.oci.image.manifest.v1+json", Content: []byte(c.repo)}
		if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: c.repo, Manifest: base, Tag: "22.04"}); err != nil {
			t.Fatal(err)
		}
		vis := c.visibility
		if err := db.Repositories().UpdateRepository(ctx, c.repo, &vis, nil, nil, nil); err != nil {
			t.Fatal(err)
		}
		ri, err := db.Repositories().Repository(ctx, c.repo)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Graph().SetBases(ctx, "team/app", app.Digest, []meta.BaseLink{{RepositoryID: ri.ID, Digest: base.Digest, Method: "annotation", Level: 1}}); err != nil {
			t.Fatal(err)
		}
		b, err := s.base(ctx, "team/app", app)
		if err != nil {
			t.Fatal(err)
		}
		want := "reg.example/" + c.repo + ":22.04"
		if !b.Known || b.waiting || c.shown != (b.Reference == want) || !c.shown && b.Reference != "" || b.Digest != base.Digest.String() {
			t.Fatalf("%s (%s): the policy and the evaluation read %+v", c.repo, c.visibility, b)
		}
		if why := detailOf(CheckBase, Input{Base: b}, ""); !c.shown && strings.Contains(why, c.repo) {
			t.Fatalf("%s: the reason names it: %q", c.repo, why)
		}
	}
}
