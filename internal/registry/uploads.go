package registry

import (
	"context"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage"
)

func validUploadID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && u.String() == id
}

func uploadLocation(name, id string) string {
	return "/v2/" + name + "/blobs/uploads/" + id
}

// setUploadHeaders sets the headers of an upload status answer: Location,
// Range (inclusive end, "0-0" when empty, as CNCF Distribution answers) and
// the upload's UUID.
func setUploadHeaders(w http.ResponseWriter, name, id string, size int64) {
	h := w.Header()
	h.Set("Location", uploadLocation(name, id))
	h.Set("Range", fmt.Sprintf("0-%d", max(size-1, 0)))
	h.Set("Docker-Upload-UUID", id)
	h.Set("Content-Length", "0")
}

func (reg *Registry) startUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	if r.Method != http.MethodPost {
		return notAllowed(w, "POST")
	}
	if reg.proxied(r.Context(), rt.name) {
		return errProxyPush
	}
	who, err := reg.authorize(w, r, repoScope(rt.name, ActionPull, ActionPush))
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if m := q.Get("mount"); m != "" {
		d, err := oci.ParseDigest(m)
		if err != nil {
			return errorf(http.StatusBadRequest, CodeDigestInvalid, err.Error(), nil)
		}
		mounted, err := reg.mount(w, r, rt.name, d, q.Get("from"), who)
		if err != nil {
			return err
		}
		if mounted {
			h := w.Header()
			h.Set("Location", "/v2/"+rt.name+"/blobs/"+d.String())
			h.Set("Docker-Content-Digest", d.String())
			h.Set("Content-Length", "0")
			w.WriteHeader(http.StatusCreated)
			return nil
		}
		// Not mountable: fall through to a new upload session, as the spec
		// requires.
	}
	if dg := q.Get("digest"); dg != "" {
		return reg.monolithicUpload(w, r, rt, dg, who)
	}
	id := storage.NewUploadID()
	state, err := marshalHash(sha256.New())
	if err != nil {
		return err
	}
	err = reg.meta.Uploads.CreateUpload(r.Context(), meta.Upload{ID: id, Repository: rt.name, HashState: state, Actor: who.Actor}, reg.opts.MaxOpenUploads)
	if errors.Is(err, meta.ErrTooManyUploads) {
		w.Header().Set("Retry-After", "60")
		return errorf(http.StatusTooManyRequests, CodeTooManyRequests,
			fmt.Sprintf("%d upload sessions are open for this identity: finish or cancel some (abandoned ones expire after gc.uploadExpiry, every one gc.uploadMaxAge after it started)", reg.opts.MaxOpenUploads), nil)
	}
	if err != nil {
		return err
	}
	setUploadHeaders(w, rt.name, id, 0)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// mount links an existing blob into the repository. With from, the blob
// must be in that repository and the actor must be allowed to pull from it.
// Without from, any repository the actor may pull from will do.
func (reg *Registry) mount(w http.ResponseWriter, r *http.Request, name string, d digest.Digest, from string, who meta.Writer) (bool, error) {
	ctx := r.Context()
	var candidates []string
	if from != "" {
		if oci.ValidateName(from) != nil {
			return false, nil
		}
		candidates = []string{from}
	} else {
		repos, err := reg.meta.Blobs.RepositoriesWithBlob(ctx, d, 20)
		if err != nil {
			return false, err
		}
		candidates = repos
	}
	for _, src := range candidates {
		b, err := reg.meta.Blobs.RepositoryBlob(ctx, src, d)
		if errors.Is(err, meta.ErrBlobNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		// A source the actor may not read is no source: the client
		// uploads instead (no challenge reaches it).
		if d, err := reg.authz.Authorize(r, repoScope(src, ActionPull)); err != nil || !d.Allowed() {
			continue
		}
		// Nor is a gate's held content, for whoever may not check it: a
		// mount would publish it in another repository.
		if b.Held {
			if ok, err := reg.maySeeHeld(r, src); err != nil || !ok {
				continue
			}
		}
		if err := reg.meta.Blobs.LinkBlob(ctx, name, b, meta.UploadClaim{}, who); err != nil {
			if errors.Is(err, meta.ErrBlobNotFound) {
				continue // collected meanwhile: not mountable
			}
			return false, err
		}
		return true, nil
	}
	return false, nil
}

// monolithicUpload handles POST ?digest=: the whole blob in one request.
func (reg *Registry) monolithicUpload(w http.ResponseWriter, r *http.Request, rt route, dg string, who meta.Writer) error {
	want, err := oci.ParseDigest(dg)
	if err != nil {
		return errorf(http.StatusBadRequest, CodeDigestInvalid, err.Error(), nil)
	}
	if err := reg.limitUpload(r, rt.name, who, r.ContentLength, want); err != nil {
		return err
	}
	id := storage.NewUploadID()
	ctx := r.Context()
	fw, err := reg.store.Writer(ctx, storage.UploadPath(id), 0)
	if err != nil {
		if transientStorage(err) {
			return reg.storageUnavailable(w, id, "open the upload's file", false, err)
		}
		return err
	}
	h := sha256.New()
	if _, err := reg.copyBody(storageWriter{fw}, 0, h, r); err != nil {
		fw.Cancel(context.WithoutCancel(ctx))
		reg.store.Delete(context.WithoutCancel(ctx), storage.UploadRoot(id))
		var sf *storageFailure
		if errors.As(err, &sf) && transientStorage(err) {
			return reg.storageUnavailable(w, id, "write the blob", false, err)
		}
		return err
	}
	return reg.finishUpload(w, r, rt.name, id, fw, h, want, who, nil)
}

func (reg *Registry) upload(w http.ResponseWriter, r *http.Request, rt route) error {
	var actions []string
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		actions = []string{ActionPull}
	case http.MethodPatch, http.MethodPut, http.MethodDelete:
		actions = []string{ActionPull, ActionPush}
	default:
		return notAllowed(w, "GET, HEAD, PATCH, PUT, DELETE")
	}
	who, err := reg.authorize(w, r, repoScope(rt.name, actions...))
	if err != nil {
		return err
	}
	ctx := r.Context()
	if r.Method == http.MethodDelete {
		return reg.cancelUpload(w, r, rt.name, rt.ref)
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		up, err := reg.meta.Uploads.GetUpload(ctx, rt.name, rt.ref)
		if errors.Is(err, meta.ErrUploadNotFound) {
			return errUploadUnknown
		}
		if err != nil {
			return err
		}
		setUploadHeaders(w, rt.name, up.ID, up.Size)
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	up, err := reg.claimUpload(ctx, rt.name, rt.ref)
	if err != nil {
		return err
	}
	claim := reg.holdClaim(ctx, up)
	claimed := true
	defer func() {
		if c := claim.stop(); claimed {
			reg.meta.Uploads.ReleaseUpload(context.WithoutCancel(ctx), up.ID, c)
		}
	}()
	// PATCH or PUT: append the body (a chunk, or for PUT an optional last
	// chunk) at the upload's current offset.
	var want digest.Digest
	if r.Method == http.MethodPut {
		if want, err = oci.ParseDigest(r.URL.Query().Get("digest")); err != nil {
			return errorf(http.StatusBadRequest, CodeDigestInvalid, "PUT needs a valid ?digest=: "+err.Error(), nil)
		}
	}
	rangeLen, err := checkContentRange(r, up.Size)
	if err != nil {
		setUploadHeaders(w, rt.name, up.ID, up.Size)
		return err
	}
	known := r.ContentLength
	if known < 0 {
		known = rangeLen
	}
	if err := reg.limitUpload(r, rt.name, who, known, want); err != nil {
		setUploadHeaders(w, rt.name, up.ID, up.Size)
		return err
	}
	h, err := unmarshalHash(up.HashState)
	if err != nil {
		return fmt.Errorf("upload %s: %w", up.ID, err)
	}
	fw, err := storage.OpenWriter(ctx, reg.store, storage.UploadPath(up.ID), up.Size, up.StorageState)
	if err != nil {
		return reg.resumeError(w, up.ID, err)
	}
	// A streamed body (no Content-Length) is read no further than its
	// Content-Range, which it must fill exactly.
	body, streamed := r.Body, rangeLen >= 0 && r.ContentLength < 0
	if streamed {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.LimitReader(body, rangeLen), body}
	}
	n, copyErr := reg.copyBody(claimedWriter{storageWriter{fw}, claim}, up.Size, h, r)
	if copyErr == nil && streamed {
		if more, _ := io.ReadFull(body, make([]byte, 1)); more > 0 || n != rangeLen {
			// Not the chunk its Content-Range describes: nothing of it
			// is recorded.
			abandon(fw)
			setUploadHeaders(w, rt.name, up.ID, up.Size)
			got := fmt.Sprintf("%d bytes", n)
			if more > 0 {
				got = "more"
			}
			return errorf(http.StatusBadRequest, CodeSizeInvalid, fmt.Sprintf("Content-Range covers %d bytes but the body has %s", rangeLen, got), nil)
		}
	}
	if copyErr == nil && r.Method == http.MethodPut {
		claimed = false // finishing deletes the upload (the claim is renewed until then)
		return reg.finishUpload(w, r, rt.name, up.ID, fw, h, want, who, claim)
	}
	if !claim.held() {
		// Another request may own the upload now: what this writer holds
		// is not sent, and nothing it wrote is recorded (the client asks
		// for the status and resumes from there).
		reg.log.Warn("upload claim lost while writing; the write was stopped and not kept", "upload", up.ID)
		abandon(fw)
		return errClaimLost
	}
	// Record what was written, even after a broken connection: the client
	// can ask for the upload's status and resume from there. Closing keeps
	// the bytes (for S3, the parts and the tail the writer state names).
	if err := fw.Close(); err != nil {
		if transientStorage(err) || meta.StorageFull(err) {
			// Not recorded: the upload stays as it was (the claim is
			// released below), and the client sends the chunk again.
			return reg.uploadKept(w, up, "keep the chunk", err)
		}
		return fmt.Errorf("upload %s: keep the chunk: %w", up.ID, err)
	}
	if n > 0 {
		state, err := marshalHash(h)
		if err != nil {
			return err
		}
		stored, err := storage.WriterState(fw)
		if err != nil {
			return fmt.Errorf("upload %s: %w", up.ID, err)
		}
		claimed = false // advancing ends the claim
		c := claim.stop()
		if err := reg.meta.Uploads.AdvanceUpload(context.WithoutCancel(ctx), up.ID, c, up.Size, up.Size+n, state, stored); err != nil {
			if errors.Is(err, meta.ErrUploadConflict) {
				return errorf(http.StatusConflict, CodeBlobUploadInvalid, err.Error(), nil)
			}
			return err
		}
	}
	if copyErr != nil {
		// What was written is recorded: the answer says where to resume
		// (a full disk, or storage failing partway, keeps the part
		// written; the rest is sent again from there).
		up.Size += n
		var sf *storageFailure
		if errors.As(copyErr, &sf) && (transientStorage(copyErr) || meta.StorageFull(copyErr)) {
			return reg.uploadKept(w, up, "write the chunk", copyErr)
		}
		setUploadHeaders(w, rt.name, up.ID, up.Size)
		return copyErr
	}
	setUploadHeaders(w, rt.name, up.ID, up.Size+n)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// resumeError answers a failure to reopen an upload's data. Only data that
// is gone (storage.ErrNotFound) ends the upload with 404
// BLOB_UPLOAD_UNKNOWN, which makes clients start over; anything else (S3
// unreachable or timing out) is 503 UNAVAILABLE with a Retry-After, which
// clients retry (go-containerregistry, containerd and docker retry 5xx),
// and the upload stays as it was recorded.
func (reg *Registry) resumeError(w http.ResponseWriter, id string, err error) error {
	if errors.Is(err, storage.ErrNotFound) {
		reg.log.Warn("upload data is gone", "upload", id, "err", err)
		return errorf(http.StatusNotFound, CodeBlobUploadUnknown, "upload data is gone; start a new upload", nil)
	}
	reg.log.Error("cannot reopen upload data: storage unavailable", "upload", id, "err", err)
	w.Header().Set("Retry-After", "5")
	return errorf(http.StatusServiceUnavailable, CodeUnavailable, "storage is unavailable; retry this request (the upload is kept)", nil)
}

// transientStorage reports whether a storage error may pass on its own
// (S3 unreachable, timing out, throttling): not data that is gone
// (storage.ErrNotFound), a full disk, nor a file past what the backend
// holds (storage.ErrFileTooLarge), which have answers of their own.
func transientStorage(err error) bool {
	return !errors.Is(err, storage.ErrNotFound) && !meta.StorageFull(err) && !errors.Is(err, os.ErrDeadlineExceeded) &&
		!errors.Is(err, storage.ErrFileTooLarge)
}

// storageFailure marks a storage error, apart from the metadata store's,
// among the errors meta.StoreBlob returns (placement).
type storageFailure struct{ err error }

func (e *storageFailure) Error() string { return e.err.Error() }
func (e *storageFailure) Unwrap() error { return e.err }

func markStorage(err error) error {
	if err == nil {
		return nil
	}
	return &storageFailure{err}
}

// storageWriter marks its writer's errors as storage's (storageFailure),
// apart from the request body's, while a body is copied into it.
type storageWriter struct{ w io.Writer }

func (s storageWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	return n, markStorage(err)
}

// placement is an upload's bytes for meta.StoreBlob with their storage
// errors marked (storageFailure), apart from the database's.
type placement struct {
	p storage.Placement
	// early, when set, is the outcome of an early placement the registry
	// ran itself (placeEarly), which PlaceEarly then answers.
	early *earlyPlacement
}

type earlyPlacement struct {
	ok  bool
	err error
}

func (p placement) PlaceEarly(ctx context.Context) (bool, error) {
	if p.early != nil {
		return p.early.ok, p.early.err
	}
	ok, err := p.p.PlaceEarly(ctx)
	return ok, markStorage(err)
}

// placeEarly places the bytes early now, if the blob is not stored yet,
// for StoreBlob to find done: while the upload's claim is still renewed.
// On S3 an early placement is a server-side copy, minutes for a large
// layer; run by StoreBlob, after the renewals stopped, it outlived the
// claim's lease, and a retried PUT took the session over meanwhile.
//
// The lookup's answer is StoreBlob's too (EarlyDecided), which then does
// not look the blob up again: one point read per PUT fewer.
func (reg *Registry) placeEarly(ctx context.Context, p *placement, d digest.Digest) {
	_, err := reg.meta.Blobs.StoredBlob(ctx, d)
	switch {
	case err == nil:
		p.early = &earlyPlacement{} // stored: nothing is placed early
	case errors.Is(err, meta.ErrBlobNotFound):
		ok, err := p.p.PlaceEarly(ctx)
		p.early = &earlyPlacement{ok: ok, err: markStorage(err)}
	}
	// Any other error: unknown, StoreBlob looks again and decides.
}

// EarlyDecided says placeEarly ran: StoreBlob takes its outcome.
func (p placement) EarlyDecided() bool { return p.early != nil }

func (p placement) Present(ctx context.Context) (bool, error) {
	ok, err := p.p.Present(ctx)
	return ok, markStorage(err)
}

func (p placement) PresentSize(ctx context.Context, size int64) (bool, error) {
	ok, err := p.p.PresentSize(ctx, size)
	return ok, markStorage(err)
}

func (p placement) Place(ctx context.Context) error { return markStorage(p.p.Place(ctx)) }
func (p placement) Clear(ctx context.Context) error { return markStorage(p.p.Clear(ctx)) }

// cancelUpload ends an upload session (DELETE). It claims the session
// first, as a PATCH or PUT does: a request writing or finishing the
// upload holds the claim, and the cancel waits for it to end instead of
// removing the bytes under it. Cancelled after a PUT finished it, the
// upload is unknown (404); still claimed after uploadClaimWait, it is 409.
func (reg *Registry) cancelUpload(w http.ResponseWriter, r *http.Request, name, id string) error {
	ctx := r.Context()
	up, err := reg.claimUpload(ctx, name, id)
	if err != nil {
		return err
	}
	if err := reg.meta.Uploads.DeleteUpload(context.WithoutCancel(ctx), up.ID, up.Claim); err != nil {
		switch {
		case errors.Is(err, meta.ErrUploadNotFound):
			return errUploadUnknown
		case errors.Is(err, meta.ErrUploadClaimLost):
			return errorf(http.StatusConflict, CodeBlobUploadInvalid, err.Error(), nil)
		}
		reg.meta.Uploads.ReleaseUpload(context.WithoutCancel(ctx), up.ID, up.Claim)
		return err
	}
	if err := reg.store.Delete(context.WithoutCancel(ctx), storage.UploadRoot(up.ID)); err != nil && !errors.Is(err, storage.ErrNotFound) {
		reg.log.Warn("remove cancelled upload", "upload", up.ID, "err", err)
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// checkContentRange validates an optional Content-Range of a chunk and
// returns the number of bytes it covers (-1 without one). A malformed one
// is 400; one that does not start where the upload ends is 416, as the
// distribution spec has a chunk out of order answered; one that disagrees
// with Content-Length is 400 SIZE_INVALID.
func checkContentRange(r *http.Request, size int64) (int64, error) {
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		return -1, nil
	}
	spec := strings.TrimPrefix(strings.TrimPrefix(cr, "bytes="), "bytes ")
	spec, _, _ = strings.Cut(spec, "/")
	a, b, ok := strings.Cut(spec, "-")
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || start < 0 || end < start || end == math.MaxInt64 {
		return -1, errorf(http.StatusBadRequest, CodeBlobUploadInvalid, fmt.Sprintf("malformed Content-Range %q", cr), nil)
	}
	if start != size {
		return -1, errorf(http.StatusRequestedRangeNotSatisfiable, CodeBlobUploadInvalid,
			fmt.Sprintf("Content-Range starts at %d but the upload has %d bytes", start, size), nil)
	}
	if r.ContentLength >= 0 && r.ContentLength != end-start+1 {
		return -1, errorf(http.StatusBadRequest, CodeSizeInvalid,
			fmt.Sprintf("Content-Range covers %d bytes but Content-Length is %d", end-start+1, r.ContentLength), nil)
	}
	return end - start + 1, nil
}

// finishUpload verifies the digest of a complete upload, moves the bytes
// to their content address, and links the blob to the repository. The
// upload's bytes are in fw, still open.
//
// claim is the claim held on the upload's session, nil for a single-request
// upload, which has none.
func (reg *Registry) finishUpload(w http.ResponseWriter, r *http.Request, name, id string, fw storage.FileWriter, h hash.Hash, want digest.Digest, who meta.Writer, claim *claimHolder) error {
	ctx := context.WithoutCancel(r.Context()) // finish what we started
	size := fw.Size()
	discard := func() {
		if claim != nil {
			if err := reg.meta.Uploads.DeleteUpload(ctx, id, claim.stop()); err != nil && !errors.Is(err, meta.ErrUploadNotFound) {
				// The session is another request's now (the claim ran
				// out), or it could not be deleted: its bytes stay with
				// it (an idle session expires with them).
				reg.log.Warn("remove failed upload session", "upload", id, "err", err)
				fw.Close()
				return
			}
		}
		fw.Cancel(ctx)
		reg.store.Delete(ctx, storage.UploadRoot(id))
	}
	// A session whose claim is lost may be another request's: completing
	// its file (on S3, its multipart upload) would end what that request
	// writes.
	if claim != nil && !claim.held() {
		reg.log.Warn("upload claim lost before the upload was completed; not completed", "upload", id)
		abandon(fw)
		reg.meta.Uploads.ReleaseUpload(ctx, id, claim.stop())
		return errClaimLost
	}
	if err := fw.Commit(ctx); err != nil {
		if refusesUpload(err) {
			discard()
			if errors.Is(err, storage.ErrNotFound) {
				// The upload's data went from under it (on S3, its
				// multipart upload aborted): the client starts over.
				return reg.resumeError(w, id, err)
			}
			return err
		}
		if claim == nil {
			discard()
			return reg.storageUnavailable(w, id, "complete the upload", false, err)
		}
		// The session stays as recorded (a full disk too: space freed,
		// the retry succeeds): this request's bytes were never recorded,
		// so the client's retry of the PUT sends them again at the
		// recorded offset (a part this request wrote is written over).
		fw.Close()
		if rerr := reg.meta.Uploads.ReleaseUpload(ctx, id, claim.stop()); rerr != nil {
			reg.log.Warn("release upload claim", "upload", id, "err", rerr)
		}
		return reg.uploadKept(w, claim.session, "complete the upload", err)
	}
	got := digest.NewDigest(digest.SHA256, h)
	if want.Algorithm() != digest.SHA256 {
		var err error
		if got, err = reg.digestStored(ctx, storage.UploadPath(id), want.Algorithm()); err != nil {
			if !refusesUpload(err) {
				return reg.keepCompleted(ctx, w, id, "read the upload back for its digest", claim, discard, err)
			}
			discard()
			if errors.Is(err, storage.ErrNotFound) {
				return reg.resumeError(w, id, err)
			}
			return err
		}
	}
	if got != want {
		discard()
		return errorf(http.StatusBadRequest, CodeDigestInvalid, fmt.Sprintf("content digest %s does not match %s", got, want), map[string]string{"computed": got.String()})
	}
	// Placed, recorded and linked under the garbage-collection protocol
	// (meta.StoreBlob; the bytes are linked to their address before the
	// transaction, on S3 copied there, the staged copy kept until the
	// upload's file goes below): if the blob is stored already, these
	// bytes are not needed.
	//
	// A session's claim must still be this request's: if its lease ran out
	// (renewals failed, or a retry took the session over), another request
	// may be writing other bytes into the file hashed here. Renewals stop
	// now; the transaction removes the session only while the claim stands
	// (else ErrUploadClaimLost, and the bytes placed early go again).
	pl := placement{p: storage.Staged(reg.store, storage.UploadPath(id), want)}
	var up meta.UploadClaim
	if claim != nil {
		reg.placeEarly(ctx, &pl, want)
		up = meta.UploadClaim{ID: id, Claim: claim.stop()}
		if !claim.held() {
			reg.log.Warn("upload claim lost before the blob was stored; not stored", "upload", id)
			return errClaimLost
		}
	}
	blob := meta.Blob{Digest: want, Size: size}
	if _, err := reg.meta.Blobs.StoreBlob(ctx, name, blob, up, who, pl); err != nil {
		if errors.Is(err, meta.ErrUploadClaimLost) {
			reg.log.Warn("upload claim lost before the blob was stored; not stored", "upload", id)
			return errClaimLost
		}
		if !refusesUpload(err) {
			// Storage or the database failed (full; on S3, the copy to
			// the bytes' address throttled or timing out, before or
			// inside the transaction; the database restarting, busy or
			// its connection dropped): nothing was recorded, and the
			// completed file is still the upload's. Only content that
			// is refused ends the session.
			return reg.keepCompleted(ctx, w, id, "store the blob", claim, discard, err)
		}
		discard()
		if errors.Is(err, storage.ErrNotFound) {
			// The upload's bytes went from under it (removed by hand):
			// as for a resume, the client starts over.
			return reg.resumeError(w, id, err)
		}
		return err
	}
	if err := reg.store.Delete(ctx, storage.UploadRoot(id)); err != nil && !errors.Is(err, storage.ErrNotFound) {
		reg.log.Warn("remove finished upload", "upload", id, "err", err)
	}
	hd := w.Header()
	hd.Set("Location", "/v2/"+name+"/blobs/"+want.String())
	hd.Set("Docker-Content-Digest", want.String())
	hd.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// keepCompleted answers a failure of the storage or the database that may
// pass after a PUT completed the upload's file (reading it back, moving it
// into place, recording the blob): 507 when storage is full, else 503 with
// a Retry-After (uploadKept), and the session kept at its recorded size and
// hash state, so that the client's retry of the PUT sends its body again
// at the recorded offset. The session's bytes are one completed file now
// (on S3 its multipart upload is completed and its tail objects are
// gone), so its writer state is dropped: the next writer continues the
// file from its stored bytes (storage.OpenWriter with no state; on S3 the
// recorded bytes are copied into a new multipart upload). A
// single-request upload (no claim) has nothing to keep.
func (reg *Registry) keepCompleted(ctx context.Context, w http.ResponseWriter, id, what string, claim *claimHolder, discard func(), err error) error {
	if claim == nil {
		discard()
		return reg.storageUnavailable(w, id, what, false, err)
	}
	s := claim.session
	if aerr := reg.meta.Uploads.AdvanceUpload(ctx, id, claim.stop(), s.Size, s.Size, s.HashState, nil); aerr != nil {
		if errors.Is(aerr, meta.ErrUploadConflict) {
			reg.log.Warn("upload claim lost before the upload could be kept", "upload", id)
			return errClaimLost
		}
		reg.log.Error("keep the upload after a storage failure", "upload", id, "err", aerr)
		reg.meta.Uploads.ReleaseUpload(ctx, id, claim.stop())
		return reg.storageUnavailable(w, id, what, false, err)
	}
	return reg.uploadKept(w, s, what, err)
}

// digestStored hashes stored bytes with another algorithm than the one
// computed while streaming (sha512 pushes are rare; sha256 is hashed once).
func (reg *Registry) digestStored(ctx context.Context, path string, alg digest.Algorithm) (digest.Digest, error) {
	rc, err := reg.store.Reader(ctx, path, 0)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	return alg.FromReader(rc)
}

func marshalHash(h hash.Hash) ([]byte, error) {
	m, ok := h.(encoding.BinaryMarshaler)
	if !ok {
		return nil, errors.New("hash state cannot be saved")
	}
	return m.MarshalBinary()
}

func unmarshalHash(state []byte) (hash.Hash, error) {
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
		return nil, fmt.Errorf("restore hash state: %w", err)
	}
	return h, nil
}
