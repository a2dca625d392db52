package ingest

import (
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/storage"
)

// The refusals of Ingest, each its own type so that a caller can answer it
// in its own terms (the /v2 API with the distribution spec's codes). A
// manifest that names content its repository lacks is refused with the
// store's *meta.MissingRefsError, wrapped.

// ErrDigestMismatch is wrapped by a *DigestError for bytes that do not
// match their digest (the storage package's error, which the copier and
// the cache also return for blobs).
var ErrDigestMismatch = storage.ErrDigestMismatch

// TooLargeError refuses a manifest over the size cap.
type TooLargeError struct {
	// Size is the manifest's size in bytes, or -1 when it is only known
	// to exceed the limit (a read stopped at the cap).
	Size  int64
	Limit int64
}

func (e *TooLargeError) Error() string {
	if e.Size < 0 {
		return fmt.Sprintf("manifest exceeds the limit of %d bytes", e.Limit)
	}
	return fmt.Sprintf("manifest of %d bytes exceeds the limit of %d bytes", e.Size, e.Limit)
}

// DigestError refuses a manifest whose bytes do not have the digest they
// are expected to have (Got is what they have), or whose expected digest
// is unusable (Err says why; Got is empty).
type DigestError struct {
	Want, Got digest.Digest
	Err       error
}

func (e *DigestError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("manifest digest %q: %v", e.Want, e.Err)
	}
	return fmt.Sprintf("manifest digest %s does not match the expected %s", e.Got, e.Want)
}

// Unwrap returns ErrDigestMismatch for a mismatch, else why the expected
// digest is unusable.
func (e *DigestError) Unwrap() error {
	if e.Err != nil {
		return e.Err
	}
	return ErrDigestMismatch
}

// InvalidError refuses a body that is not a manifest Berth stores. Its
// message is the parser's (oci.ErrInvalidManifest is wrapped).
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return e.Err.Error() }

// Unwrap returns the parser's error.
func (e *InvalidError) Unwrap() error { return e.Err }

// PolicyError refuses a manifest the artifact policy does not allow. Its
// message names the type and what is allowed.
type PolicyError struct{ Err error }

func (e *PolicyError) Error() string { return e.Err.Error() }

// Unwrap returns the policy's error.
func (e *PolicyError) Unwrap() error { return e.Err }
