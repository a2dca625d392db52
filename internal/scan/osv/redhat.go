package osv

import "strings"

// RedHat is the base ecosystem of Red Hat's OSV records.
const RedHat = "Red Hat"

// RedHatEcosystem maps a Red Hat CPE, as repository-to-cpe.json names
// it in URI form ("cpe:/o:redhat:enterprise_linux:8::baseos",
// "cpe:/a:redhat:rhel_eus:8.6::appstream"), to the OSV ecosystem of
// Red Hat's records for that product: "Red Hat:" followed by the CPE
// after its vendor ("Red Hat:enterprise_linux:8::baseos"). ok is false
// for a CPE of another vendor, of hardware, or not in URI form.
func RedHatEcosystem(cpe string) (string, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(cpe), "cpe:/")
	if !ok {
		return "", false
	}
	part, rest, ok := strings.Cut(rest, ":")
	if !ok || (part != "o" && part != "a") {
		return "", false
	}
	vendor, product, ok := strings.Cut(rest, ":")
	if !ok || vendor != "redhat" || product == "" || strings.HasPrefix(product, ":") {
		return "", false
	}
	return RedHat + ":" + product, true
}
