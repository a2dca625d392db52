package scan_test

import (
	"fmt"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
)

// pathsLayer is a layer recording about 64 KiB of paths: eight
// executables and eight whiteouts of 4 KiB names, distinct for tag.
func pathsLayer(t *testing.T, tag string) v1.Layer {
	files := map[string]string{}
	for i := range 8 {
		name := fmt.Sprintf("%s-%d-%s", tag, i, strings.Repeat("n", 4<<10))
		files["usr/local/bin/"+name] = "#!/bin/sh\n"
		files["etc/"+name+"/.wh.x"] = ""
	}
	return layer(t, files)
}

// TestImageRecordedBytesBound: each layer's result is bounded (64 MiB
// of paths and packages recorded), but the scanner holds every distinct
// layer's result of an image at once: an image whose layers together
// record more than the per-image bound is unsupported, with the reason,
// each layer within its own bound. Within the bound, it is scanned; a
// layer listed again counts once.
func TestImageRecordedBytesBound(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	const bound = 150 << 10
	scan.SetMaxImageRecordedBytes(e.svc, bound)
	base := layer(t, map[string]string{"etc/os-release": debian12OSRelease})
	l1, l2, l3 := pathsLayer(t, "a"), pathsLayer(t, "b"), pathsLayer(t, "c")
	within, _ := e.push("acme/within", "1", base, l1, l1, l1)
	over, _ := e.push("acme/over", "1", base, l1, l2, l3)
	e.drain()

	if info := e.security("acme/within", within); info.Status != meta.ScanScanned {
		t.Fatalf("one layer of 64 KiB of paths, listed three times: status %q (%s), want scanned", info.Status, info.Reason)
	}
	info := e.security("acme/over", over)
	if info.Status != meta.ScanUnsupported || !strings.Contains(info.Reason, fmt.Sprintf("over %d bytes", bound)) || info.Data != nil {
		t.Fatalf("three layers of 64 KiB of paths each: status %q reason %q data %v, want unsupported", info.Status, info.Reason, info.Data != nil)
	}
}
