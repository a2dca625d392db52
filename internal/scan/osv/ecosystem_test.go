package osv

import "testing"

func TestOSEcosystem(t *testing.T) {
	tests := []struct {
		name    string
		release map[string]string
		want    string
		ok      bool
	}{
		{"debian 12", map[string]string{"ID": "debian", "VERSION_ID": "12", "VERSION_CODENAME": "bookworm"}, "Debian:12", true},
		{"debian testing", map[string]string{"ID": "debian", "VERSION_CODENAME": "trixie"}, "Debian:13", true},
		{"debian sid", map[string]string{"ID": "debian", "PRETTY_NAME": "Debian GNU/Linux trixie/sid"}, "Debian", true},
		{"ubuntu 22.04", map[string]string{"ID": "ubuntu", "VERSION_ID": "22.04", "VERSION": "22.04.4 LTS (Jammy Jellyfish)"}, "Ubuntu:22.04:LTS", true},
		{"ubuntu 24.04 no VERSION", map[string]string{"ID": "ubuntu", "VERSION_ID": "24.04"}, "Ubuntu:24.04:LTS", true},
		{"ubuntu 23.10", map[string]string{"ID": "ubuntu", "VERSION_ID": "23.10", "VERSION": "23.10 (Mantic Minotaur)"}, "Ubuntu:23.10", true},
		{"ubuntu 23.04", map[string]string{"ID": "ubuntu", "VERSION_ID": "23.04"}, "Ubuntu:23.04", true},
		{"alpine", map[string]string{"ID": "alpine", "VERSION_ID": "3.19.1"}, "Alpine:v3.19", true},
		{"rocky", map[string]string{"ID": "rocky", "VERSION_ID": "9.3"}, "Rocky Linux:9", true},
		{"alma", map[string]string{"ID": "almalinux", "VERSION_ID": "8.10"}, "AlmaLinux:8", true},
		{"rhel", map[string]string{"ID": "rhel", "VERSION_ID": "9.4"}, "Red Hat", true},
		{"wolfi", map[string]string{"ID": "wolfi", "VERSION_ID": "20230201"}, "Wolfi", true},
		{"leap", map[string]string{"ID": "opensuse-leap", "VERSION_ID": "15.5"}, "openSUSE:Leap 15.5", true},
		{"quoted", map[string]string{"ID": `"debian"`, "VERSION_ID": `"11"`}, "Debian:11", true},
		{"unknown", map[string]string{"ID": "gentoo"}, "", false},
		{"empty", nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := OSEcosystem(tt.release)
			if got != tt.want || ok != tt.ok {
				t.Errorf("OSEcosystem = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestLanguageEcosystem(t *testing.T) {
	for in, want := range map[string]string{"go": "Go", "pypi": "PyPI", "npm": "npm", "maven": "Maven", "gem": ""} {
		if got := LanguageEcosystem(in); got != want {
			t.Errorf("LanguageEcosystem(%q) = %q, want %q", in, got, want)
		}
	}
}
