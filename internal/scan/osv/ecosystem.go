package osv

import (
	"strconv"
	"strings"
)

// debianCodenames maps Debian release codenames to their version numbers,
// for os-release files (testing images) that carry no VERSION_ID.
var debianCodenames = map[string]string{
	"jessie":   "8",
	"stretch":  "9",
	"buster":   "10",
	"bullseye": "11",
	"bookworm": "12",
	"trixie":   "13",
	"forky":    "14",
	"duke":     "15",
}

// OSEcosystem derives the OSV ecosystem of an image's distribution from its
// /etc/os-release fields (ID, VERSION_ID, VERSION, VERSION_CODENAME, ...).
//
//   - debian: "Debian:<major>" ("Debian:12"), from VERSION_ID or a known
//     VERSION_CODENAME; bare "Debian" when neither is known (sid), which only
//     matches advisories that name no release.
//   - ubuntu: "Ubuntu:22.04", with ":LTS" appended for LTS releases (VERSION
//     mentions LTS, or an even year's .04 release).
//   - alpine: "Alpine:v3.19" (major.minor of VERSION_ID).
//   - rhel: "Red Hat". OSV's Red Hat data is keyed by CPE-style suffixes that
//     cannot be derived from os-release ("Red Hat:enterprise_linux:8::baseos"):
//     those come from the image's content sets and Red Hat's mapping of them
//     to CPEs (RedHatEcosystem); from os-release alone, only bare "Red Hat"
//     entries match.
//   - rocky, almalinux: "Rocky Linux:9", "AlmaLinux:9".
//   - wolfi, chainguard: "Wolfi", "Chainguard".
//   - opensuse-leap: "openSUSE:Leap 15.5"; opensuse-tumbleweed:
//     "openSUSE:Tumbleweed"; sles: "SUSE:Linux Enterprise Server 15 SP5".
//     These are best effort: OSV's SUSE product names vary.
//
// Anything else returns ("", false).
func OSEcosystem(osRelease map[string]string) (string, bool) {
	get := func(k string) string { return strings.Trim(strings.TrimSpace(osRelease[k]), `"'`) }
	id := strings.ToLower(get("ID"))
	versionID := get("VERSION_ID")
	major, minor := versionParts(versionID)

	switch id {
	case "debian":
		if major != "" {
			return "Debian:" + major, true
		}
		if n, ok := debianCodenames[strings.ToLower(get("VERSION_CODENAME"))]; ok {
			return "Debian:" + n, true
		}
		return "Debian", true
	case "ubuntu":
		if major == "" || minor == "" {
			return "Ubuntu", true
		}
		eco := "Ubuntu:" + major + "." + minor
		if ubuntuLTS(major, minor, get("VERSION")) {
			eco += ":LTS"
		}
		return eco, true
	case "alpine":
		if major == "" || minor == "" {
			return "Alpine", true
		}
		return "Alpine:v" + major + "." + minor, true
	case "rhel":
		return "Red Hat", true
	case "rocky":
		return withMajor("Rocky Linux", major), true
	case "almalinux":
		return withMajor("AlmaLinux", major), true
	case "wolfi":
		return "Wolfi", true
	case "chainguard":
		return "Chainguard", true
	case "opensuse-leap":
		if versionID == "" {
			return "openSUSE", true
		}
		return "openSUSE:Leap " + versionID, true
	case "opensuse-tumbleweed":
		return "openSUSE:Tumbleweed", true
	case "sles":
		if major == "" {
			return "SUSE", true
		}
		eco := "SUSE:Linux Enterprise Server " + major
		if minor != "" && minor != "0" {
			eco += " SP" + minor
		}
		return eco, true
	}
	return "", false
}

func withMajor(base, major string) string {
	if major == "" {
		return base
	}
	return base + ":" + major
}

// versionParts returns the leading numeric major and minor components of a
// VERSION_ID such as "3.19.1" or "12"; "" for a missing or non-numeric part.
func versionParts(v string) (major, minor string) {
	parts := strings.SplitN(v, ".", 3)
	num := func(s string) string {
		end := strings.IndexFunc(s, func(c rune) bool { return c < '0' || c > '9' })
		if end < 0 {
			end = len(s)
		}
		return s[:end]
	}
	major = num(parts[0])
	if major != "" && len(parts) > 1 {
		minor = num(parts[1])
	}
	return major, minor
}

func ubuntuLTS(major, minor, version string) bool {
	if strings.Contains(version, "LTS") {
		return true
	}
	y, err := strconv.Atoi(major)
	return err == nil && minor == "04" && y%2 == 0
}

// LanguageEcosystem maps a language package kind ("go", "pypi", "npm",
// "maven") to its OSV ecosystem; "" for anything else.
func LanguageEcosystem(kind string) string {
	switch strings.ToLower(kind) {
	case "go", "golang":
		return "Go"
	case "pypi", "python":
		return "PyPI"
	case "npm":
		return "npm"
	case "maven":
		return "Maven"
	}
	return ""
}

// OSPackageKind is the kind of package database ("dpkg", "apk", "rpm")
// whose packages the advisories of an OS ecosystem (OSEcosystem's, with or
// without a release) name and version; "" for any other ecosystem.
// Packages of another kind in such an image cannot be matched there: their
// names and versions follow another scheme.
func OSPackageKind(ecosystem string) string {
	switch BaseEcosystem(ecosystem) {
	case "Debian", "Ubuntu":
		return "dpkg"
	case "Alpine", "Wolfi", "Chainguard":
		return "apk"
	case RedHat, "Rocky Linux", "AlmaLinux", "openSUSE", "SUSE":
		return "rpm"
	}
	return ""
}
