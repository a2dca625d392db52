package scan_test

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/wire"
)

// statusDLayer is a layer writing one distroless dpkg file
// (var/lib/dpkg/status.d/<file>) of n packages.
func statusDLayer(t *testing.T, file string, n int) v1.Layer {
	var b strings.Builder
	for i := range n {
		b.WriteString(dpkgStanza(fmt.Sprintf("%s-pkg%d", file, i), "1.0", false))
	}
	return layer(t, map[string]string{"var/lib/dpkg/status.d/" + file: b.String()})
}

// TestImagePackageBound: an image whose layers bring more packages than
// the scanner keeps for one image is unsupported, with the reason, and
// nothing of its packages is stored; one within the bound is scanned. A
// layer listed again counts once.
func TestImagePackageBound(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	scan.SetMaxImagePackages(e.svc, 10)
	base := layer(t, map[string]string{"etc/os-release": debian12OSRelease})
	l1, l2 := statusDLayer(t, "l1", 6), statusDLayer(t, "l2", 6)
	within, _ := e.push("acme/within", "1", base, l1, l1, l1)
	over, _ := e.push("acme/over", "1", base, l1, l2)
	e.drain()

	if info := e.security("acme/within", within); info.Status != meta.ScanScanned || info.Data == nil || len(info.Data.Layer.Features) != 6 {
		t.Fatalf("within the bound: %+v", info)
	}
	info := e.security("acme/over", over)
	if info.Status != meta.ScanUnsupported || !strings.Contains(info.Reason, "over 10 packages in the image's layers") || info.Data != nil {
		t.Fatalf("over the bound: status %q reason %q data %+v, want unsupported", info.Status, info.Reason, info.Data)
	}
}

// TestRaisedLimitsTakeEffect: a layer whose package database is over
// scan.maxFileBytes is a gap; with the limit raised, another image on the
// same layer, and the first one scanned again, are read whole: the layer
// cache does not keep what the old limit made. A result a limit did not
// shape is not read again.
func TestRaisedLimitsTakeEffect(t *testing.T) {
	const limit = 4096
	e := newEnv(t, "sqlite", index.Limits{MaxFileBytes: limit})
	e.importJSON(debianRecords[0])
	var big strings.Builder
	n := 0
	for ; big.Len() <= limit; n++ {
		big.WriteString(dpkgStanza(fmt.Sprintf("pkg%d", n), "1.0", true))
	}
	db := layer(t, map[string]string{"etc/os-release": debian12OSRelease, "var/lib/dpkg/status": big.String()})
	first, layers := e.push("acme/first", "1", db)
	e.drain()
	if cov := e.security("acme/first", first).VulnerabilityData; cov == nil || cov.Complete || !strings.Contains(cov.Reason(), "file limit") {
		t.Fatalf("over the file limit: %+v, want a gap", cov)
	}
	indexed := e.layerIndexTimes(t.Context(), layers...)

	// The limit raised (a restart with a larger scan.maxFileBytes).
	e.svc = scan.New(wire.ScanStores(e.db), e.driver, scan.Options{Limits: index.Limits{MaxFileBytes: 1 << 20}, Host: e.host, Version: "test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	second, _ := e.push("acme/second", "1", db, layer(t, map[string]string{"opt/app/README": "app"}))
	again, _ := e.push("acme/again", "1", db) // the first image, in another repository
	e.drain()
	for _, c := range []struct{ repo, dgst string }{{"acme/second", second}, {"acme/again", again}} {
		info := e.security(c.repo, c.dgst)
		if cov := info.VulnerabilityData; info.Status != meta.ScanScanned || cov == nil || !cov.Complete || info.Data == nil || len(info.Data.Layer.Features) != n {
			t.Fatalf("%s with the limit raised: %s %+v, want complete with %d packages", c.repo, info.Status, cov, n)
		}
	}
	if times := e.layerIndexTimes(t.Context(), layers...); times[layers[0]] == indexed[layers[0]] {
		t.Fatalf("the layer was not read again: indexed at %v", times)
	}

	// Read again with the larger limit, the layer is not read once more.
	indexed = e.layerIndexTimes(t.Context(), layers...)
	third, _ := e.push("acme/third", "1", db, layer(t, map[string]string{"opt/app/NOTICE": "app"}))
	e.drain()
	if info := e.security("acme/third", third); info.VulnerabilityData == nil || !info.VulnerabilityData.Complete {
		t.Fatalf("acme/third: %+v", info.VulnerabilityData)
	}
	if times := e.layerIndexTimes(t.Context(), layers...); times[layers[0]] != indexed[layers[0]] {
		t.Fatalf("a layer the limit did not shape was read again: %v then %v", indexed, times)
	}
}
