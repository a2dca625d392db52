package e2e

import (
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// conformanceArtifacts is the artifact allow-list of the conformance run:
// images with any layer, and the two artifact types the suite pushes as
// config media types (Berth's default list refuses unknown config types,
// as Quay's does).
const conformanceArtifacts = `BERTH_ALLOWED_OCI_ARTIFACT_TYPES={` +
	`"application/vnd.oci.image.config.v1+json":["*"],` +
	`"application/vnd.nhl.peanut.butter.bagel":["*"],` +
	`"application/vnd.nba.strawberry.jam.croissant":["*"]}`

// TestOCIConformance runs the OCI distribution spec's own conformance
// suite (pull, push, content discovery and content management) against a
// berth in token mode, as a user pushing to its namespace, once deleting
// manifests before blobs and once blobs first with automatic cross-repository
// mounts: no spec may fail. The scanner's SBOM referrers are off, since
// the suite counts a subject's referrers exactly (docs/registry.md).
func TestOCIConformance(t *testing.T) {
	bin := requireTool(t, "oci-conformance")
	s := startAuthServerBin(t, filepath.Join(runDir, "berth"), conformanceArtifacts, "BERTH_SCAN_SBOM=false")
	for i, variant := range []struct {
		name string
		env  []string
	}{
		{"manifests before blobs", nil},
		{"blobs before manifests, automatic mounts", []string{"OCI_DELETE_MANIFEST_BEFORE_BLOBS=0", "OCI_AUTOMATIC_CROSSMOUNT=1"}},
	} {
		report := t.TempDir()
		cmd := exec.Command(bin, "-ginkgo.no-color")
		cmd.Dir = report
		cmd.Env = append(berthEnv(),
			"OCI_ROOT_URL=http://"+s.host,
			fmt.Sprintf("OCI_NAMESPACE=alice/conformance-%d", i),
			fmt.Sprintf("OCI_CROSSMOUNT_NAMESPACE=alice/crossmount-%d", i),
			"OCI_USERNAME="+s.alice.user, "OCI_PASSWORD="+s.alice.pass,
			"OCI_TEST_PULL=1", "OCI_TEST_PUSH=1", "OCI_TEST_CONTENT_DISCOVERY=1", "OCI_TEST_CONTENT_MANAGEMENT=1",
			"OCI_REPORT_DIR="+report)
		cmd.Env = append(cmd.Env, variant.env...)
		out, err := cmd.CombinedOutput()
		b, rerr := os.ReadFile(filepath.Join(report, "junit.xml"))
		var suites struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
			Errors   int `xml:"errors,attr"`
			Disabled int `xml:"disabled,attr"`
		}
		if rerr == nil {
			rerr = xml.Unmarshal(b, &suites)
		}
		t.Logf("%s: %d specs, %d failed, %d errors, %d skipped", variant.name, suites.Tests, suites.Failures, suites.Errors, suites.Disabled)
		if err != nil || rerr != nil || suites.Failures+suites.Errors != 0 || suites.Tests-suites.Disabled < 70 {
			t.Errorf("conformance (%s): %v; report: %v\n%s", variant.name, err, rerr, tail(out))
		}
	}
}
