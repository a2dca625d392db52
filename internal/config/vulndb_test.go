package config

import (
	"strings"
	"testing"
	"time"
)

// TestVulnDBSettings: scan.vulndb.* come from the environment by their
// documented names, default to OSV's bucket with scheduled fetches off,
// and bad values are refused with their field path.
func TestVulnDBSettings(t *testing.T) {
	c := Default()
	if c.Scan.VulnDB.BaseURL != "https://osv-vulnerabilities.storage.googleapis.com" || c.Scan.VulnDB.UpdateInterval != 0 ||
		c.Scan.VulnDB.StaleAfter != 7*24*time.Hour || !strings.HasSuffix(c.Scan.VulnDB.CPEMappingURL, "/repository-to-cpe.json") {
		t.Fatalf("defaults: %+v", c.Scan.VulnDB)
	}
	env := map[string]string{"BERTH_SCAN_VULNDB_BASE_URL": "http://osv-mirror.internal:8080/osv", "BERTH_SCAN_VULNDB_UPDATE_INTERVAL": "24h",
		"BERTH_SCAN_VULNDB_CPE_MAPPING_URL": "https://mirror.internal/repository-to-cpe.json", "BERTH_SCAN_VULNDB_STALE_AFTER": "72h"}
	if err := c.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || c.Scan.VulnDB.BaseURL != env["BERTH_SCAN_VULNDB_BASE_URL"] || c.Scan.VulnDB.UpdateInterval != 24*time.Hour ||
		c.Scan.VulnDB.StaleAfter != 72*time.Hour || c.Scan.VulnDB.CPEMappingURL != env["BERTH_SCAN_VULNDB_CPE_MAPPING_URL"] {
		t.Fatalf("from the environment: %+v %v", c.Scan.VulnDB, err)
	}
	c.Scan.VulnDB = VulnDB{BaseURL: "ftp://x", CPEMappingURL: "", UpdateInterval: time.Minute, StaleAfter: time.Minute}
	err := c.Validate()
	for _, want := range []string{"scan.vulndb.baseURL", "scan.vulndb.cpeMappingURL", "scan.vulndb.updateInterval", "scan.vulndb.staleAfter"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("no error for %s: %v", want, err)
		}
	}
}
