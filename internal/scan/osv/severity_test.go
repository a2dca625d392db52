package osv

import "testing"

func TestScoreVector(t *testing.T) {
	tests := []struct {
		vector      string
		wantScore   float64
		wantVersion string
		wantErr     bool
	}{
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8, "3.1", false},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0, "3.1", false},
		{"CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N", 5.5, "3.1", false},
		{"CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8, "3.0", false},
		{"CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 9.3, "4.0", false},
		{"CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:H/SI:H/SA:H", 7.9, "4.0", false},
		{"AV:N/AC:L/Au:N/C:P/I:P/A:P", 7.5, "2.0", false},
		{"garbage", 0, "", true},
		{"", 0, "", true},
		{"CVSS:3.1/AV:N/AC:L", 0, "", true},
		{"CVSS:9.9/AV:N", 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.vector, func(t *testing.T) {
			score, version, err := ScoreVector(tt.vector)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ScoreVector err = %v, wantErr %v", err, tt.wantErr)
			}
			if score != tt.wantScore || version != tt.wantVersion {
				t.Errorf("ScoreVector = %v, %q; want %v, %q", score, version, tt.wantScore, tt.wantVersion)
			}
		})
	}
}

func TestSeverityForScore(t *testing.T) {
	tests := []struct {
		score float64
		want  string
	}{
		{0, SeverityNegligible}, {0.1, SeverityLow}, {3.9, SeverityLow}, {4.0, SeverityMedium},
		{6.9, SeverityMedium}, {7.0, SeverityHigh}, {8.9, SeverityHigh}, {9.0, SeverityCritical},
		{10.0, SeverityCritical}, {0.1 + 0.2 + 3.6, SeverityLow}, {6.9000000001, SeverityMedium},
		{-1, SeverityUnknown},
	}
	for _, tt := range tests {
		if got := SeverityForScore(tt.score); got != tt.want {
			t.Errorf("SeverityForScore(%v) = %q, want %q", tt.score, got, tt.want)
		}
	}
}

func TestSeverityNames(t *testing.T) {
	ranks := map[string]int{"unknown": 0, "NEGLIGIBLE": 1, "Low": 2, "medium": 3, "High": 4, "critical": 5, "bogus": 0}
	for s, want := range ranks {
		if got := SeverityRank(s); got != want {
			t.Errorf("SeverityRank(%q) = %d, want %d", s, got, want)
		}
	}
	parse := []struct {
		in, want string
		ok       bool
	}{
		{"0", SeverityCritical, true}, {"1", SeverityHigh, true}, {"2", SeverityMedium, true},
		{"3", SeverityLow, true}, {"4", SeverityNegligible, true}, {"5", SeverityUnknown, true},
		{"hIgh", SeverityHigh, true}, {"6", "", false}, {"severe", "", false},
	}
	for _, tt := range parse {
		got, ok := ParseSeverity(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseSeverity(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
