package mirror_test

import (
	"context"
	"encoding/json"
	"github.com/berth-dev/berth/internal/wire"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage/fs"
)

// TestMirrorUpstreamRefusedBySSRFGuard: a mirror whose upstream the SSRF
// guard refuses (a registry on loopback) fails its sync with the guard's
// reason, which names notifications.allowedHosts and the keyword that
// allows it, in the mirror's last_error and in the repo_mirror_sync_failed
// event; with "loopback" allowed the same sync succeeds.
func TestMirrorUpstreamRefusedBySSRFGuard(t *testing.T) {
	for _, allow := range [][]string{nil, {"loopback"}} {
		f := newMirrorFixture(t)
		ctx := context.Background()
		f.push(t, "v1", randomImage(t))
		guard, err := events.NewGuard(allow)
		if err != nil {
			t.Fatal(err)
		}
		driver, _ := fs.New(t.TempDir(), fs.Options{})
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		copier := mirror.NewCopier(wire.CopierStores(f.db), driver, oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}, 0, log)
		svc := mirror.NewMirrorService(wire.MirrorStores(f.db), copier, f.sealer, mirror.MirrorOptions{Dial: guard.DialContext, Tries: 1,
			RetryBase: time.Millisecond, Logger: log})
		f.create(t, []string{"v1"}, nil)
		// This service dials through the guard, without the fixture's
		// transport that trusts the upstream's test certificate.
		insecure := f.status(t)
		insecure.VerifyTLS = false
		if err := f.db.Mirrors().UpdateMirror(ctx, insecure, false); err != nil {
			t.Fatal(err)
		}
		if err := svc.Sync(ctx, mrepo); err != nil {
			t.Fatal(err)
		}
		m := f.status(t)
		if allow != nil {
			if m.Status != meta.MirrorSuccess {
				t.Fatalf("sync with allowedHosts %v: %s %s", allow, m.Status, m.LastError)
			}
			continue
		}
		failed := f.events(t, meta.EventMirrorSyncFailed)
		if len(failed) != 1 {
			t.Fatalf("%d repo_mirror_sync_failed events, want 1", len(failed))
		}
		var data struct{ Message string }
		json.Unmarshal(failed[0].Data, &data)
		for _, got := range []string{m.LastError, data.Message} {
			for _, want := range []string{"refusing to connect to 127.0.0.1: a loopback address (SSRF guard)",
				`add "loopback" to notifications.allowedHosts`, `keywords "loopback" and "private"`} {
				if m.Status != meta.MirrorFail || !strings.Contains(got, want) {
					t.Fatalf("sync through a refused upstream: %s %q, want it to say %q", m.Status, got, want)
				}
			}
		}
		t.Logf("last_error: %s", m.LastError)
	}
}
