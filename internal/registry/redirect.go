package registry

import (
	"net/http"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/storage"
)

// Redirect configures blob download redirects: a GET of a blob of at least
// MinSize bytes answers 307 Temporary Redirect to a URL of the storage
// itself (an S3 presigned GET) valid for Expiry, so the bytes do not pass
// through Berth. Expiry 0 (the default), or a driver that cannot sign
// URLs, serves every blob locally. HEAD is always answered locally.
type Redirect struct {
	MinSize int64
	Expiry  time.Duration
}

// redirectBlob answers a blob GET with a redirect when configured, and
// reports whether it did. The caller has checked that the client may pull
// the blob (and see it, if a gate holds it).
func (reg *Registry) redirectBlob(w http.ResponseWriter, r *http.Request, b meta.Blob) (bool, error) {
	signer, ok := reg.store.(storage.URLSigner)
	if !ok || reg.opts.Redirect.Expiry <= 0 || r.Method != http.MethodGet || b.Size < reg.opts.Redirect.MinSize {
		return false, nil
	}
	u, err := signer.URLFor(r.Context(), storage.BlobPath(b.Digest), reg.opts.Redirect.Expiry)
	if err != nil {
		reg.log.Warn("presign blob URL; serving it locally", "digest", b.Digest, "err", err)
		return false, nil
	}
	h := w.Header()
	h.Set("Location", u)
	h.Set("Docker-Content-Digest", b.Digest.String())
	h.Set("Cache-Control", "no-store") // the URL expires
	w.WriteHeader(http.StatusTemporaryRedirect)
	return true, nil
}
