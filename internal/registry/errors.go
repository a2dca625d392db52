// Package registry serves the /v2 API of the OCI distribution spec:
// routing, blobs, uploads, manifests, tags, referrers, catalog and errors.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/storage"
)

// Error codes of the distribution spec (and the two of CNCF Distribution
// that clients also understand).
const (
	CodeBlobUnknown         = "BLOB_UNKNOWN"
	CodeBlobUploadInvalid   = "BLOB_UPLOAD_INVALID"
	CodeBlobUploadUnknown   = "BLOB_UPLOAD_UNKNOWN"
	CodeDigestInvalid       = "DIGEST_INVALID"
	CodeManifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
	CodeManifestInvalid     = "MANIFEST_INVALID"
	CodeManifestUnknown     = "MANIFEST_UNKNOWN"
	CodeNameInvalid         = "NAME_INVALID"
	CodeNameUnknown         = "NAME_UNKNOWN"
	CodeSizeInvalid         = "SIZE_INVALID"
	CodeTagInvalid          = "TAG_INVALID"
	CodeUnauthorized        = "UNAUTHORIZED"
	CodeDenied              = "DENIED"
	CodeUnsupported         = "UNSUPPORTED"
	CodeTooManyRequests     = "TOOMANYREQUESTS"
	CodePaginationInvalid   = "PAGINATION_NUMBER_INVALID"
	CodeRangeInvalid        = "RANGE_INVALID"
	// CodeUnavailable is CNCF Distribution's code for 503.
	CodeUnavailable = "UNAVAILABLE"
)

// Error is a registry error answered in the spec's JSON format.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
	// RetryAfter, when set, is sent as Retry-After (whole seconds).
	RetryAfter time.Duration `json:"-"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, message string, detail any) *Error {
	return &Error{Status: status, Code: code, Message: message, Detail: detail}
}

func writeError(w http.ResponseWriter, r *http.Request, e *Error) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	body, _ := json.Marshal(struct {
		Errors []*Error `json:"errors"`
	}{[]*Error{e}})
	body = append(body, '\n')
	// A HEAD answer says how long the GET's body would be (RFC 9110).
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

var (
	errUnsupported   = errorf(http.StatusMethodNotAllowed, CodeUnsupported, "the operation is unsupported", nil)
	errBlobUnknown   = errorf(http.StatusNotFound, CodeBlobUnknown, "blob unknown to registry", nil)
	errUploadUnknown = errorf(http.StatusNotFound, CodeBlobUploadUnknown, "blob upload unknown to registry", nil)
	errManifestUnk   = errorf(http.StatusNotFound, CodeManifestUnknown, "manifest unknown", nil)
	errNameUnknown   = errorf(http.StatusNotFound, CodeNameUnknown, "repository name not known to registry", nil)
	errInternal      = errorf(http.StatusInternalServerError, "INTERNAL_ERROR", "internal server error; see the registry log", nil)
	errStorageFull   = errorf(http.StatusInsufficientStorage, CodeUnavailable,
		"the registry's storage is full: nothing was stored; retry once space is freed", nil)
)

// retryAfter is the Retry-After of a failure that may pass.
const retryAfter = 5 * time.Second

// errUnavailable is 503 UNAVAILABLE with a Retry-After: storage or the
// database failed in a way that may pass (S3 unreachable, throttling or
// timing out; a database restarting or busy). Clients retry it
// (go-containerregistry, containerd and docker retry 5xx answers).
func errUnavailable(message string) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: message, RetryAfter: retryAfter}
}

// storageUnavailable answers a failure of the storage or the database
// that may pass while writing or finishing an upload: 507 when it is full
// (retry once space is freed), else 503 UNAVAILABLE with a Retry-After;
// kept says the upload stays as it was recorded (a single-request upload
// has nothing to keep). uploadKept answers the same with the upload's
// Location and Range.
func (reg *Registry) storageUnavailable(w http.ResponseWriter, id, what string, kept bool, err error) error {
	reg.log.Error("upload: storage or database failed", "upload", id, "step", what, "kept", kept, "err", err)
	switch {
	case meta.StorageFull(err) && kept:
		return errorf(http.StatusInsufficientStorage, CodeUnavailable, "the registry's storage is full; retry once space is freed (the upload is kept)", nil)
	case meta.StorageFull(err):
		return errStorageFull
	case kept:
		return errUnavailable("storage is unavailable; retry this request (the upload is kept)")
	}
	return errUnavailable("storage is unavailable; retry this request")
}

// uploadKept answers a failure of the storage or the database, while an
// upload is written or finished, that leaves the session as up records it
// (its size and hash state, no claim): 507 when storage is full, else 503
// UNAVAILABLE with a Retry-After, each with the upload's Location and
// Range, where the client resumes, and a message saying what was kept.
func (reg *Registry) uploadKept(w http.ResponseWriter, up meta.Upload, what string, err error) error {
	reg.log.Error("upload: storage or database failed; the upload is kept", "upload", up.ID, "step", what, "size", up.Size, "err", err)
	setUploadHeaders(w, up.Repository, up.ID, up.Size)
	if meta.StorageFull(err) {
		return errorf(http.StatusInsufficientStorage, CodeUnavailable, fmt.Sprintf(
			"the registry's storage is full: the upload keeps the %d bytes it has recorded (see Range); resume from there once space is freed", up.Size), nil)
	}
	return errUnavailable(fmt.Sprintf("storage is unavailable; retry this request (the upload keeps the %d bytes it has recorded, see Range)", up.Size))
}

// refusesUpload reports whether a failure to finish an upload refuses
// what it holds, so that its session goes: its data is gone
// (storage.ErrNotFound), larger than the storage holds in one file, not
// what its digest names, refused by a quota, for want of its namespace or
// because the pushing account was deleted, or an answer of the registry's
// own. Anything else (a full disk or database, storage or the database
// unreachable, busy or restarting) may pass: the session is kept for the
// client's retry.
func refusesUpload(err error) bool {
	var e *Error
	var quota *meta.QuotaExceededError
	var ns *meta.NamespaceMissingError
	return errors.As(err, &e) || errors.As(err, &quota) || errors.As(err, &ns) ||
		errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrFileTooLarge) ||
		errors.Is(err, storage.ErrDigestMismatch) || errors.Is(err, meta.ErrInvalidText) ||
		errors.Is(err, meta.ErrCreatorGone)
}

// inUseError answers a delete refused because manifests of the repository
// still reference what it would remove: the spec's DENIED code and a
// message naming the manifests, with 405, the one status the spec gives a
// delete the registry does not allow (its conformance suite accepts 2xx
// or 405 there, and Zot answers the same; 409 failed it).
// notAllowed answers a method the route does not serve: 405 UNSUPPORTED,
// with the Allow header naming those it does (RFC 9110 requires it).
func notAllowed(w http.ResponseWriter, methods string) error {
	w.Header().Set("Allow", methods)
	return errUnsupported
}

func inUseError(err error) *Error {
	var e *meta.InUseError
	if !errors.As(err, &e) {
		return nil
	}
	refs := make([]string, len(e.References))
	for i, d := range e.References {
		refs[i] = d.String()
	}
	return errorf(http.StatusMethodNotAllowed, CodeDenied, e.Error(), map[string]any{"referencedBy": refs, "count": e.Count})
}
