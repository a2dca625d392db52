package index

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// TestIndexLayerManifestEndsEarlyNoLeak: the Java archive extractor's
// line reader writes a "\r\r\n" line as "\r\n", which its parser takes
// for the blank line that ends the header; it stops reading there, and
// the goroutine writing the lines after it blocks for good, holding the
// jar (a nested jar: the whole of it, unpacked). A jar whose manifest's
// header ends before the file does is not handed to it and is unread; a
// manifest whose header ends at its last line is read.
func TestIndexLayerManifestEndsEarlyNoLeak(t *testing.T) {
	isolateTemp(t)
	early := "Manifest-Version: 1.0\n\r\r\n" + strings.Repeat("X-Pad: 0\n", 500)
	j := jar(t, map[string]string{
		"META-INF/MANIFEST.MF":                          early,
		"META-INF/maven/com.example/app/pom.properties": "groupId=com.example\nartifactId=app\nversion=1.0\n",
	})
	var entries []entry
	for i := range 10 {
		entries = append(entries, entry{name: fmt.Sprintf("app/lib%d.jar", i), body: j, mode: 0o644})
	}
	entries = append(entries,
		entry{name: "app/fat.jar", body: storedZip(t, map[string][]byte{"BOOT-INF/lib/inner.jar": j}), mode: 0o644},
		// The header ends at the last line: the writer has nothing
		// left to write, and the jar is read.
		entry{name: "app/tail.jar", body: jar(t, map[string]string{
			"META-INF/MANIFEST.MF":                           "Manifest-Version: 1.0\nImplementation-Title: tail\n\r\r\n",
			"META-INF/maven/com.example/tail/pom.properties": "groupId=com.example\nartifactId=tail\nversion=2.0\n",
		}), mode: 0o644},
	)
	runtime.GC()
	before := runtime.NumGoroutine()
	res := indexWith(t, "sha256:early", buildTar(t, entries...), Limits{})
	if n := settledGoroutines(before); n > before {
		t.Errorf("goroutines: %d before indexing, %d after: the extractor's manifest readers were left blocked", before, n)
	}
	if res.Status != StatusIndexed {
		t.Fatalf("status %q: %s", res.Status, res.Reason)
	}
	got := unreadReasons(res)
	for _, p := range []string{"app/lib0.jar", "app/lib9.jar", "app/fat.jar"} {
		if !strings.Contains(got[p], "META-INF/MANIFEST.MF") || !strings.Contains(got[p], "header ends before") {
			t.Errorf("Unread[%s] = %q, want the manifest whose header ends before the file", p, got[p])
		}
	}
	if len(got) != 11 {
		t.Errorf("Unread = %+v, want the ten jars and the fat jar", res.Unread)
	}
	if len(res.Packages) != 1 || res.Packages[0].Name != "com.example:tail" {
		t.Errorf("packages = %+v, want com.example:tail alone", res.Packages)
	}
}
