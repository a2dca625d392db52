// Package registry serves the /v2 API of the OCI distribution spec:
// routing, blobs, uploads, manifests, tags, referrers, catalog and errors.
package registry

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/berth-dev/berth/internal/meta"
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

// inUseError answers a delete refused because manifests of the repository
// still reference what it would remove: the spec's DENIED code and a
// message naming the manifests, with 405, the one status the spec gives a
// delete the registry does not allow (its conformance suite accepts 2xx
// or 405 there, and Zot answers the same; 409 failed it).
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
