package osv

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/osv-scalibr/semantic"
)

// errUnsupported marks an ecosystem the semantic package cannot order.
var errUnsupported = errors.New("unsupported ecosystem")

// BaseEcosystem strips the release suffix: "Debian:12" → "Debian",
// "Ubuntu:22.04:LTS" → "Ubuntu", "Go" → "Go".
func BaseEcosystem(ecosystem string) string {
	base, _, _ := strings.Cut(ecosystem, ":")
	return base
}

// NormalizeName normalises a package name for comparison: PyPI names per
// PEP 503 (lowercase, runs of "-", "_" and "." become "-"); every other
// ecosystem is compared exactly.
func NormalizeName(ecosystem, name string) string {
	if BaseEcosystem(ecosystem) != "PyPI" {
		return name
	}
	var b strings.Builder
	sep := false
	for _, c := range strings.ToLower(strings.TrimSpace(name)) {
		if c == '-' || c == '_' || c == '.' {
			sep = true
			continue
		}
		if sep && b.Len() > 0 {
			b.WriteByte('-')
		}
		sep = false
		b.WriteRune(c)
	}
	if sep {
		b.WriteByte('-')
	}
	return b.String()
}

// parseRangeVersion parses a version for a range of the given type. SEMVER
// ranges use Semantic Versioning 2.0 regardless of the ecosystem; ECOSYSTEM
// ranges use the ecosystem's rules and return errUnsupported when the
// ecosystem cannot be ordered.
func parseRangeVersion(rangeType, ecosystem, v string) (semantic.Version, error) {
	if rangeType == RangeSemver {
		return semantic.ParseSemverVersion(strings.TrimPrefix(v, "v")), nil
	}
	return parseEcosystemVersion(ecosystem, v)
}

// parseEcosystemVersion parses v under the rules of ecosystem, adding the
// syntax checks semantic leaves out for dpkg versions.
func parseEcosystemVersion(ecosystem, v string) (semantic.Version, error) {
	switch BaseEcosystem(ecosystem) {
	case "Debian", "Ubuntu":
		if err := checkDpkgVersion(v); err != nil {
			return nil, err
		}
	case "Go":
		v = strings.TrimPrefix(v, "v")
	}
	ver, err := semantic.Parse(v, ecosystem)
	if errors.Is(err, semantic.ErrUnsupportedEcosystem) {
		return nil, fmt.Errorf("%w: %s", errUnsupported, ecosystem)
	}
	if err != nil {
		return nil, err
	}
	return ver, nil
}

// parseInstalled parses an installed package's version. It is stricter than
// parseRangeVersion for semver-like and apk ecosystems, whose parsers accept
// any string: an installed version must start with a digit (after a "v").
func parseInstalled(rangeType, ecosystem, v string) (semantic.Version, error) {
	v = strings.TrimSpace(v)
	if BaseEcosystem(ecosystem) == "Go" || rangeType == RangeSemver {
		v = strings.TrimPrefix(v, "v")
	}
	ver, err := parseRangeVersion(rangeType, ecosystem, v)
	if err != nil {
		return nil, err
	}
	switch ver.(type) {
	case semantic.SemverVersion, semantic.AlpineVersion:
		if v == "" || v[0] < '0' || v[0] > '9' {
			return nil, fmt.Errorf("version %q does not start with a digit", v)
		}
	}
	return ver, nil
}

// checkDpkgVersion checks the syntax of a Debian package version
// ([epoch:]upstream[-revision], see deb-version(7)); semantic accepts
// anything.
func checkDpkgVersion(v string) error {
	if v == "" {
		return errors.New("empty version")
	}
	rest := v
	if epoch, after, ok := strings.Cut(v, ":"); ok {
		if epoch == "" || strings.Trim(epoch, "0123456789") != "" {
			return fmt.Errorf("bad epoch in %q", v)
		}
		rest = after
	}
	upstream, revision := rest, ""
	if i := strings.LastIndexByte(rest, '-'); i >= 0 {
		upstream, revision = rest[:i], rest[i+1:]
		if revision == "" || strings.IndexFunc(revision, func(c rune) bool { return !dpkgChar(c) || c == '-' || c == ':' }) >= 0 {
			return fmt.Errorf("bad revision in %q", v)
		}
	}
	if upstream == "" || strings.IndexFunc(upstream, func(c rune) bool { return !dpkgChar(c) }) >= 0 {
		return fmt.Errorf("bad upstream version in %q", v)
	}
	return nil
}

func dpkgChar(c rune) bool {
	switch {
	case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		return true
	}
	return strings.ContainsRune(".+~-:", c)
}
