// Package oci holds the pure parts of the OCI distribution and image specs
// that Berth needs: name and reference grammar, digests, media types, and
// manifest parsing and validation. It imports nothing of Berth's.
package oci

import (
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	// Register the hash functions that go-digest verifies.
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// MaxNameLength is the longest repository name accepted. The distribution
// spec leaves the limit to the registry; clients commonly cap the full
// reference (host included) at 255 characters.
const MaxNameLength = 255

// MaxTagLength is the longest tag (the distribution spec's).
const MaxTagLength = 128

// ErrInvalidName is wrapped by every repository-name validation error.
var ErrInvalidName = errors.New("invalid repository name")

// ErrInvalidTag is wrapped by every tag validation error.
var ErrInvalidTag = errors.New("invalid tag")

// ErrInvalidDigest is wrapped by every digest validation error.
var ErrInvalidDigest = errors.New("invalid digest")

// ValidateName checks a repository name against the distribution spec's
// grammar: path components of [a-z0-9]+ joined by one period, one or two
// underscores or any number of hyphens, components joined by "/". Nested
// names (org/team/app) are allowed to any depth. A valid name can never
// contain "..", an empty component, or a leading or trailing slash, so it is
// safe to use in a storage path.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > MaxNameLength {
		return fmt.Errorf("%w: longer than %d characters", ErrInvalidName, MaxNameLength)
	}
	for i, comp := range strings.Split(name, "/") {
		if err := validateComponent(comp); err != nil {
			return fmt.Errorf("%w: component %d %q: %v", ErrInvalidName, i+1, comp, err)
		}
	}
	return nil
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// validateComponent matches [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*.
func validateComponent(c string) error {
	if c == "" {
		return errors.New("empty path component")
	}
	i := 0
	for {
		start := i
		for i < len(c) && isAlnum(c[i]) {
			i++
		}
		if i == start {
			if i < len(c) {
				return fmt.Errorf("unexpected %q at offset %d", c[i], i)
			}
			return errors.New("must end with a lowercase letter or digit")
		}
		if i == len(c) {
			return nil
		}
		switch sep := c[i]; sep {
		case '.':
			i++
		case '_':
			i++
			if i < len(c) && c[i] == '_' {
				i++
			}
		case '-':
			for i < len(c) && c[i] == '-' {
				i++
			}
		default:
			return fmt.Errorf("unexpected %q at offset %d (allowed: a-z, 0-9, '.', '_', '__', '-')", sep, i)
		}
	}
}

// ValidateTag checks a tag against [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func ValidateTag(tag string) error {
	if tag == "" {
		return fmt.Errorf("%w: empty", ErrInvalidTag)
	}
	if len(tag) > MaxTagLength {
		return fmt.Errorf("%w: longer than %d characters", ErrInvalidTag, MaxTagLength)
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' ||
			(i > 0 && (c == '.' || c == '-'))
		if !ok {
			return fmt.Errorf("%w: unexpected %q at offset %d", ErrInvalidTag, c, i)
		}
	}
	return nil
}

// ParseDigest parses and validates a digest of a supported algorithm
// (sha256 or sha512) with a lowercase hex encoding of the right length.
func ParseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrInvalidDigest, s, err)
	}
	switch d.Algorithm() {
	case digest.SHA256, digest.SHA512:
		return d, nil
	default:
		return "", fmt.Errorf("%w: %q: unsupported algorithm %q (want sha256 or sha512)", ErrInvalidDigest, s, d.Algorithm())
	}
}

// Reference is a manifest reference: exactly one of Tag or Digest is set.
type Reference struct {
	Tag    string
	Digest digest.Digest
}

// String returns the tag or the digest.
func (r Reference) String() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// ParseReference parses the <reference> path element of a manifest URL: a
// digest if it contains a colon, otherwise a tag.
func ParseReference(s string) (Reference, error) {
	if strings.Contains(s, ":") {
		d, err := ParseDigest(s)
		if err != nil {
			return Reference{}, err
		}
		return Reference{Digest: d}, nil
	}
	if err := ValidateTag(s); err != nil {
		return Reference{}, err
	}
	return Reference{Tag: s}, nil
}
