package osv

import (
	"fmt"
	"testing"
)

const (
	vec75  = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"                    // 7.5
	vec80  = "CVSS:3.1/AV:N/AC:L/PR:L/UI:R/S:U/C:H/I:H/A:H"                    // 8.0
	vec81  = "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H"                    // 8.1
	vec100 = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"                    // 10.0
	vec55  = "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N"                    // 5.5
	vec4   = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N" // 9.3
)

func TestAssess(t *testing.T) {
	debian := func(urgency string, top ...Severity) string {
		return fmt.Sprintf(`{"id":"DEBIAN-CVE-2024-1","modified":"2024-01-01T00:00:00Z","severity":%s,
			"affected":[{"package":{"ecosystem":"Debian:12","name":"p"},"ecosystem_specific":{"urgency":%q}}]}`, sevJSON(top), urgency)
	}
	tests := []struct {
		name string
		json string
		want Assessment
	}{
		{"debian unimportant", debian("unimportant"), Assessment{Severity: "Low", VendorSeverity: "Low", Vendor: "Debian"}},
		{"debian low", debian("low"), Assessment{Severity: "Medium", VendorSeverity: "Medium", Vendor: "Debian"}},
		{"debian medium", debian("medium"), Assessment{Severity: "High", VendorSeverity: "High", Vendor: "Debian"}},
		{"debian high", debian("high"), Assessment{Severity: "Critical", VendorSeverity: "Critical", Vendor: "Debian"}},
		{"debian not yet assigned", debian("not yet assigned"), Assessment{Severity: "Unknown"}},
		{"debian not yet assigned with cvss", debian("not yet assigned", Severity{"CVSS_V3", vec55}),
			Assessment{Severity: "Medium", CVSS: &CVSS{"3.1", vec55, 5.5}}},
		{"debian unimportant reclassified by NVD", debian("unimportant", Severity{"CVSS_V3", vec75}),
			Assessment{Severity: "High", VendorSeverity: "Low", Vendor: "Debian", CVSS: &CVSS{"3.1", vec75, 7.5},
				Reclassified: true, ReclassifiedFrom: "Low", ReclassifiedBy: "NVD"}},
		{"debian low not reclassified at 8.0", debian("low", Severity{"CVSS_V3", vec80}),
			Assessment{Severity: "Medium", VendorSeverity: "Medium", Vendor: "Debian", CVSS: &CVSS{"3.1", vec80, 8.0}}},
		{"debian low reclassified at 8.1", debian("low", Severity{"CVSS_V3", vec81}),
			Assessment{Severity: "High", VendorSeverity: "Medium", Vendor: "Debian", CVSS: &CVSS{"3.1", vec81, 8.1},
				Reclassified: true, ReclassifiedFrom: "Medium", ReclassifiedBy: "NVD"}},
		{"debian medium not reclassified at 10", debian("medium", Severity{"CVSS_V3", vec100}),
			Assessment{Severity: "High", VendorSeverity: "High", Vendor: "Debian", CVSS: &CVSS{"3.1", vec100, 10}}},
		{"ubuntu", `{"id":"UBUNTU-CVE-2024-1","modified":"2024-01-01T00:00:00Z",
			"affected":[{"package":{"ecosystem":"Ubuntu:22.04:LTS","name":"p"},"severity":[{"type":"Ubuntu","score":"medium"}]}]}`,
			Assessment{Severity: "Medium", VendorSeverity: "Medium", Vendor: "Ubuntu"}},
		{"ubuntu negligible", `{"id":"USN-1-1","modified":"2024-01-01T00:00:00Z","severity":[{"type":"Ubuntu","score":"negligible"}],
			"affected":[{"package":{"ecosystem":"Ubuntu:22.04:LTS","name":"p"}}]}`,
			Assessment{Severity: "Negligible", VendorSeverity: "Negligible", Vendor: "Ubuntu"}},
		{"ubuntu untriaged falls back to cvss", `{"id":"UBUNTU-CVE-2024-2","modified":"2024-01-01T00:00:00Z",
			"affected":[{"package":{"ecosystem":"Ubuntu:22.04:LTS","name":"p"},"severity":[{"type":"Ubuntu","score":"untriaged"},{"type":"CVSS_V3","score":"` + vec55 + `"}]}]}`,
			Assessment{Severity: "Medium", VendorSeverity: "Unknown", Vendor: "Ubuntu", CVSS: &CVSS{"3.1", vec55, 5.5}}},
		{"ubuntu low reclassified by vendor vector", `{"id":"UBUNTU-CVE-2024-3","modified":"2024-01-01T00:00:00Z",
			"affected":[{"package":{"ecosystem":"Ubuntu:22.04:LTS","name":"p"},"severity":[{"type":"Ubuntu","score":"low"},{"type":"CVSS_V3","score":"` + vec100 + `"}]}]}`,
			Assessment{Severity: "Critical", VendorSeverity: "Low", Vendor: "Ubuntu", CVSS: &CVSS{"3.1", vec100, 10},
				Reclassified: true, ReclassifiedFrom: "Low", ReclassifiedBy: "Ubuntu"}},
		{"ghsa moderate", `{"id":"GHSA-aaaa-bbbb-cccc","modified":"2024-01-01T00:00:00Z","database_specific":{"severity":"MODERATE"},
			"severity":[{"type":"CVSS_V3","score":"` + vec55 + `"},{"type":"CVSS_V4","score":"` + vec4 + `"}],
			"affected":[{"package":{"ecosystem":"npm","name":"p"}}]}`,
			Assessment{Severity: "Medium", VendorSeverity: "Medium", Vendor: "GitHub", CVSS: &CVSS{"3.1", vec55, 5.5}, CVSSv4: &CVSS{"4.0", vec4, 9.3}}},
		{"red hat important", `{"id":"RHSA-2024:1","modified":"2024-01-01T00:00:00Z","database_specific":{"severity":"Important"},
			"affected":[{"package":{"ecosystem":"Red Hat","name":"p"}}]}`,
			Assessment{Severity: "High", VendorSeverity: "High", Vendor: "Red Hat"}},
		{"cvss only 10", `{"id":"CVE-2024-1","modified":"2024-01-01T00:00:00Z","severity":[{"type":"CVSS_V3","score":"` + vec100 + `"}],
			"affected":[{"package":{"ecosystem":"Alpine:v3.19","name":"p"}}]}`,
			Assessment{Severity: "Critical", CVSS: &CVSS{"3.1", vec100, 10}}},
		{"cvss v4 only", `{"id":"CVE-2024-2","modified":"2024-01-01T00:00:00Z","severity":[{"type":"CVSS_V4","score":"` + vec4 + `"}],
			"affected":[{"package":{"ecosystem":"Alpine:v3.19","name":"p"}}]}`,
			Assessment{Severity: "Critical", CVSS: &CVSS{"4.0", vec4, 9.3}, CVSSv4: &CVSS{"4.0", vec4, 9.3}}},
		{"bad vector ignored", `{"id":"CVE-2024-3","modified":"2024-01-01T00:00:00Z","severity":[{"type":"CVSS_V3","score":"garbage"}],
			"affected":[{"package":{"ecosystem":"Alpine:v3.19","name":"p"}}]}`,
			Assessment{Severity: "Unknown"}},
		{"no data", `{"id":"ALPINE-CVE-2024-4","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"Alpine:v3.19","name":"p"}}]}`,
			Assessment{Severity: "Unknown"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRecord(t, tt.json)
			got := r.Assess(&r.Affected[0])
			if !sameAssessment(got, tt.want) {
				t.Errorf("Assess =\n  %s\nwant\n  %s", fmtAssessment(got), fmtAssessment(tt.want))
			}
		})
	}
}

func TestAssessNilAffected(t *testing.T) {
	r := mustRecord(t, `{"id":"CVE-1","modified":"2024-01-01T00:00:00Z","severity":[{"type":"CVSS_V3","score":"`+vec75+`"}]}`)
	if got := r.Assess(nil); got.Severity != SeverityHigh {
		t.Errorf("Assess(nil).Severity = %q, want High", got.Severity)
	}
}

func sevJSON(s []Severity) string {
	out := "["
	for i, v := range s {
		if i > 0 {
			out += ","
		}
		out += fmt.Sprintf(`{"type":%q,"score":%q}`, v.Type, v.Score)
	}
	return out + "]"
}

func sameCVSS(a, b *CVSS) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func sameAssessment(a, b Assessment) bool {
	return sameCVSS(a.CVSS, b.CVSS) && sameCVSS(a.CVSSv4, b.CVSSv4) &&
		a.Severity == b.Severity && a.VendorSeverity == b.VendorSeverity && a.Vendor == b.Vendor &&
		a.Reclassified == b.Reclassified && a.ReclassifiedFrom == b.ReclassifiedFrom && a.ReclassifiedBy == b.ReclassifiedBy
}

func fmtAssessment(a Assessment) string {
	c := func(p *CVSS) string {
		if p == nil {
			return "nil"
		}
		return fmt.Sprintf("%+v", *p)
	}
	return fmt.Sprintf("sev=%s vendor=%s/%s cvss=%s v4=%s reclass=%v from=%s by=%s",
		a.Severity, a.VendorSeverity, a.Vendor, c(a.CVSS), c(a.CVSSv4), a.Reclassified, a.ReclassifiedFrom, a.ReclassifiedBy)
}
