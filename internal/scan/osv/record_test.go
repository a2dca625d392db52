package osv

import (
	"strings"
	"testing"
)

func TestParseRecord(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		wantErr []string // substrings of the error; nil = success
	}{
		{
			name: "valid",
			json: `{"id":"DSA-1","modified":"2024-01-02T03:04:05Z","affected":[{"package":{"ecosystem":"Debian:12","name":"zlib"},
				"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1:1.2.13.dfsg-1+deb12u1"}]}]}]}`,
		},
		{
			name: "fractional seconds",
			json: `{"id":"X-1","modified":"2024-01-02T03:04:05.123456Z"}`,
		},
		{name: "missing id", json: `{"modified":"2024-01-02T03:04:05Z"}`, wantErr: []string{"missing id"}},
		{name: "missing modified", json: `{"id":"X-1"}`, wantErr: []string{"X-1", "missing modified"}},
		{name: "invalid modified", json: `{"id":"X-1","modified":"yesterday"}`, wantErr: []string{"X-1", "invalid modified"}},
		{name: "bad json", json: `{"id":`, wantErr: []string{"decode"}},
		{
			name: "unknown range type",
			json: `{"id":"X-2","modified":"2024-01-02T03:04:05Z","affected":[{"package":{"ecosystem":"npm","name":"a"},"ranges":[]},
				{"package":{"ecosystem":"npm","name":"b"},"ranges":[{"type":"FOO","events":[{"introduced":"0"}]}]}]}`,
			wantErr: []string{"X-2", "affected[1]", `"FOO"`},
		},
		{
			name: "debian version with empty upstream",
			json: `{"id":"X-3","modified":"2024-01-02T03:04:05Z","affected":[{"package":{"ecosystem":"Debian:12","name":"zlib"},
				"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1:"}]}]}]}`,
			wantErr: []string{"X-3", "zlib", `"1:"`},
		},
		{
			name: "debian version with bad characters",
			json: `{"id":"X-4","modified":"2024-01-02T03:04:05Z","affected":[{"package":{"ecosystem":"Debian","name":"zlib"},
				"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"!!"}]}]}]}`,
			wantErr: []string{"X-4", "zlib", `"!!"`},
		},
		{
			name: "go versions without v",
			json: `{"id":"GO-2024-1","modified":"2024-01-02T03:04:05Z","affected":[{"package":{"ecosystem":"Go","name":"stdlib"},
				"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.21.8"},{"introduced":"1.22.0-0"},{"fixed":"1.22.1"}]}]}]}`,
		},
		{
			name: "unsupported ecosystem is fine",
			json: `{"id":"X-6","modified":"2024-01-02T03:04:05Z","affected":[{"package":{"ecosystem":"NoSuchEco","name":"p"},
				"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"!!whatever"}]}]}]}`,
		},
		{
			name: "git range versions are not checked",
			json: `{"id":"X-7","modified":"2024-01-02T03:04:05Z","affected":[{"package":{"ecosystem":"Debian:12","name":"p"},
				"ranges":[{"type":"GIT","repo":"https://x","events":[{"introduced":"deadbeef"}]}]}]}`,
		},
		{
			name:    "too large",
			json:    `{"id":"X-8","modified":"2024-01-02T03:04:05Z","details":"` + strings.Repeat("a", MaxRecordSize) + `"}`,
			wantErr: []string{"limit"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRecord([]byte(tt.json))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("ParseRecord: %v", err)
				}
				if string(r.Raw) != tt.json {
					t.Errorf("Raw not kept")
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseRecord succeeded, want error containing %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestRecordHelpers(t *testing.T) {
	r := mustRecord(t, `{"id":"GHSA-xxxx","modified":"2024-01-02T03:04:05Z","details":"`+strings.Repeat("é", 600)+`",
		"references":[{"type":"WEB","url":"https://web"},{"type":"ADVISORY","url":"https://adv"}],
		"affected":[{"package":{"ecosystem":"PyPI","name":"Zope.Interface"}},{"package":{"ecosystem":"PyPI","name":"zope_interface"}},
		{"package":{"ecosystem":"Debian","name":"python-zope"}}]}`)
	if got := r.Link(); got != "https://adv" {
		t.Errorf("Link = %q", got)
	}
	if got := []rune(r.Description()); len(got) != 500 {
		t.Errorf("Description has %d runes, want 500", len(got))
	}
	r.Summary = "short"
	if r.Description() != "short" {
		t.Errorf("Description ignores summary")
	}
	r.References = r.References[:1]
	if got := r.Link(); got != "https://web" {
		t.Errorf("Link = %q", got)
	}
	r.References = nil
	if got := r.Link(); got != "https://osv.dev/vulnerability/GHSA-xxxx" {
		t.Errorf("Link = %q", got)
	}
	keys := r.Keys()
	want := []Key{{"PyPI", "zope-interface"}, {"Debian", "python-zope"}}
	if len(keys) != len(want) || keys[0] != want[0] || keys[1] != want[1] {
		t.Errorf("Keys = %v, want %v", keys, want)
	}
	lk := LookupKeys("Debian:12", "zlib")
	if len(lk) != 2 || lk[0] != (Key{"Debian:12", "zlib"}) || lk[1] != (Key{"Debian", "zlib"}) {
		t.Errorf("LookupKeys = %v", lk)
	}
	if r.IsWithdrawn() {
		t.Errorf("IsWithdrawn without withdrawn")
	}
}

func mustRecord(t *testing.T, s string) *Record {
	t.Helper()
	r, err := ParseRecord([]byte(s))
	if err != nil {
		t.Fatalf("ParseRecord: %v", err)
	}
	return r
}
