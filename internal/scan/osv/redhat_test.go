package osv

import "testing"

func TestRedHatEcosystem(t *testing.T) {
	for cpe, want := range map[string]string{
		"cpe:/o:redhat:enterprise_linux:8::baseos":          "Red Hat:enterprise_linux:8::baseos",
		"cpe:/a:redhat:enterprise_linux:8::appstream":       "Red Hat:enterprise_linux:8::appstream",
		"cpe:/a:redhat:enterprise_linux:9::crb":             "Red Hat:enterprise_linux:9::crb",
		"cpe:/a:redhat:rhel_eus:8.6::appstream":             "Red Hat:rhel_eus:8.6::appstream",
		"cpe:/a:redhat:enterprise_linux:10.0":               "Red Hat:enterprise_linux:10.0",
		" cpe:/o:redhat:enterprise_linux:7::server ":        "Red Hat:enterprise_linux:7::server",
		"cpe:/h:redhat:something":                           "",
		"cpe:/a:fedoraproject:fedora:38":                    "",
		"cpe:2.3:o:redhat:enterprise_linux:8:*:*:*:*:*:*:*": "",
		"cpe:/o:redhat":   "",
		"cpe:/o:redhat:":  "",
		"cpe:/o:redhat::": "",
		"":                "",
	} {
		got, ok := RedHatEcosystem(cpe)
		if got != want || ok != (want != "") {
			t.Errorf("RedHatEcosystem(%q) = %q, %v; want %q", cpe, got, ok, want)
		}
	}
}
