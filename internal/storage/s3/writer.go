package s3

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/berth-dev/berth/internal/storage"
)

// ErrTooManyParts is returned (wrapped) when a file would need more than
// S3's 10,000 multipart parts.
var ErrTooManyParts = fmt.Errorf("s3: the file needs more than 10,000 multipart parts; raise storage.s3.partSize: %w", storage.ErrFileTooLarge)

// state is what a writer saves between requests (StatefulWriter.State):
// the multipart upload, its parts, and the tail, fewer than MinPartSize
// bytes that could not be a part yet, kept as a small object of its own.
type state struct {
	Key      string `json:"key"`
	Size     int64  `json:"size"`
	UploadID string `json:"uploadId,omitempty"`
	Parts    []part `json:"parts,omitempty"`
	Tail     string `json:"tail,omitempty"`
	TailSize int64  `json:"tailSize,omitempty"`
	TailETag string `json:"tailETag,omitempty"`
	// PrevTail is the tail of the state this one continued; resuming from
	// this state (so the database recorded it) deletes it.
	PrevTail string `json:"prevTail,omitempty"`
	// Base is the ETag of the completed object whose first bytes this
	// writer began from (Writer at an offset), if it did: an object at the
	// key with that ETag is not a completion of this state (see
	// resumeCompleted).
	Base string `json:"base,omitempty"`
}

type part struct {
	N    int32  `json:"n"`
	ETag string `json:"etag"`
	Size int64  `json:"size"`
}

type writer struct {
	d    *Driver
	ctx  context.Context
	path string
	st   state
	// sent is the bytes in parts; buf holds the rest (at most a part).
	sent   int64
	buf    []byte
	start  int64 // the size it was opened at
	closed bool
	done   bool
	err    error
}

// Writer implements storage.Driver. A positive offset without saved state
// continues the completed object at p from its first offset bytes
// (continueObject); the registry resumes from State instead (see
// ResumeWriter), and continues an object when a PUT completed the upload's
// file but the blob could not be placed.
func (d *Driver) Writer(ctx context.Context, p string, offset int64) (storage.FileWriter, error) {
	if err := storage.CheckPath(p); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("s3 write %s: negative offset %d", p, offset)
	}
	if offset == 0 {
		return d.newWriter(ctx, p), nil
	}
	return d.continueObject(ctx, p, offset, "")
}

// continueObject opens a writer that continues the object at p from its
// first offset bytes: the whole parts of them copied server-side
// (UploadPartCopy) into a new multipart upload at the same key, the rest,
// less than a part, read into the writer's buffer. The object is the only
// copy of those bytes until the new upload completes over it: if anything
// fails, only the new multipart upload is aborted, and the error is
// storage.ErrNotFound only if the object is gone or holds fewer than
// offset bytes. notBase, if set, is the ETag of an object that does not
// hold the bytes (see resumeCompleted).
func (d *Driver) continueObject(ctx context.Context, p string, offset int64, notBase string) (storage.FileWriter, error) {
	w := d.newWriter(ctx, p)
	cctx, cancel := d.bound(ctx, 0)
	out, err := d.c.HeadObject(cctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: &w.st.Key})
	cancel()
	if err != nil {
		return nil, wrap("resume", p, err)
	}
	size, etag := aws.ToInt64(out.ContentLength), aws.ToString(out.ETag)
	if size < offset {
		return nil, fmt.Errorf("s3 resume %s: %w: the object has %d bytes, fewer than %d", p, storage.ErrNotFound, size, offset)
	}
	if notBase != "" && etag == notBase {
		return nil, fmt.Errorf("s3 resume %s at %d: %w: the object at the key is the one the saved state began from, not its completion", p, offset, storage.ErrNotFound)
	}
	w.st.Base = etag
	if err := w.copyBase(offset); err != nil {
		if w.st.UploadID != "" {
			d.abort(w.ctx, w.st.Key, w.st.UploadID)
		}
		if isNotFound(err) {
			// The new multipart upload aborted meanwhile, most likely,
			// not the object gone: that is data gone only if the object is.
			cctx, cancel := d.bound(w.ctx, 0)
			_, herr := d.c.HeadObject(cctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: &w.st.Key})
			cancel()
			if herr == nil || !isNotFound(herr) {
				return nil, fmt.Errorf("s3 resume %s: %w", p, err)
			}
		}
		return nil, wrap("resume", p, err)
	}
	return w, nil
}

// copyBase fills a new writer with the first offset bytes of the object
// at its key, whose ETag is st.Base: the parts server-side, the rest (under
// a part, so that Write's buffer holds less than a part) by a GET. Both
// name the ETag, so that the bytes are of the object looked at.
func (w *writer) copyBase(offset int64) error {
	d := w.d
	rest := offset % d.partSize
	copied := offset - rest
	if copied > 0 {
		cctx, cancel := d.bound(w.ctx, 0)
		mp, err := d.c.CreateMultipartUpload(cctx, &s3.CreateMultipartUploadInput{Bucket: &d.bucket, Key: &w.st.Key})
		cancel()
		if err != nil {
			return err
		}
		w.st.UploadID = aws.ToString(mp.UploadId)
		// Parts of whole multiples of partSize, each at least MinPartSize.
		step := d.partSize * max(1, d.copyPart/d.partSize)
		for off := int64(0); off < copied; off += step {
			end := min(off+step, copied)
			n := int32(len(w.st.Parts) + 1)
			cctx, cancel := d.bound(w.ctx, end-off)
			out, err := d.c.UploadPartCopy(cctx, &s3.UploadPartCopyInput{Bucket: &d.bucket, Key: &w.st.Key, UploadId: &w.st.UploadID,
				PartNumber: aws.Int32(n), CopySource: aws.String(d.bucket + "/" + w.st.Key),
				CopySourceRange: aws.String(fmt.Sprintf("bytes=%d-%d", off, end-1)), CopySourceIfMatch: &w.st.Base})
			cancel()
			if err != nil {
				return err
			}
			if out.CopyPartResult == nil || out.CopyPartResult.ETag == nil {
				return fmt.Errorf("copy of part %d: no ETag in the answer", n)
			}
			w.st.Parts = append(w.st.Parts, part{N: n, ETag: aws.ToString(out.CopyPartResult.ETag), Size: end - off})
			w.sent += end - off
		}
	}
	if rest > 0 {
		cctx, cancel := d.bound(w.ctx, rest)
		defer cancel()
		out, err := d.c.GetObject(cctx, &s3.GetObjectInput{Bucket: &d.bucket, Key: &w.st.Key,
			Range: aws.String(fmt.Sprintf("bytes=%d-%d", copied, offset-1)), IfMatch: &w.st.Base})
		if err != nil {
			return err
		}
		defer out.Body.Close()
		w.buf = make([]byte, rest, max(rest, min(d.partSize, 256<<10)))
		if _, err := io.ReadFull(out.Body, w.buf); err != nil {
			return fmt.Errorf("read the object's bytes %d to %d: %w", copied, offset, err)
		}
	}
	return nil
}

func (d *Driver) newWriter(ctx context.Context, p string) *writer {
	// The writer finishes what it started even if the request that opened
	// it goes away: a chunk received must be recorded. Each call is
	// bounded instead (Timeouts).
	return &writer{d: d, ctx: context.WithoutCancel(ctx), path: p, st: state{Key: d.key(p)}}
}

// ResumeWriter implements storage.Resumer.
func (d *Driver) ResumeWriter(ctx context.Context, p string, offset int64, saved []byte) (storage.FileWriter, error) {
	if len(saved) == 0 {
		return d.Writer(ctx, p, offset)
	}
	if err := storage.CheckPath(p); err != nil {
		return nil, err
	}
	w := d.newWriter(ctx, p)
	if err := json.Unmarshal(saved, &w.st); err != nil {
		return nil, fmt.Errorf("s3 resume %s: %w: bad writer state: %v", p, storage.ErrNotFound, err)
	}
	if w.st.Key != d.key(p) || w.st.Size != offset {
		return nil, fmt.Errorf("s3 resume %s at %d: %w: the saved state is of %s at %d", p, offset, storage.ErrNotFound, w.st.Key, w.st.Size)
	}
	if w.st.PrevTail != "" {
		cctx, cancel := d.bound(ctx, 0)
		d.c.DeleteObject(cctx, &s3.DeleteObjectInput{Bucket: &d.bucket, Key: aws.String(w.st.PrevTail)})
		cancel()
		w.st.PrevTail = ""
	}
	for _, pt := range w.st.Parts {
		w.sent += pt.Size
	}
	if w.st.UploadID != "" {
		// A deleted (aborted) upload fails here, not at the last chunk.
		cctx, cancel := d.bound(ctx, 0)
		_, err := d.c.ListParts(cctx, &s3.ListPartsInput{Bucket: &d.bucket, Key: &w.st.Key, UploadId: &w.st.UploadID, MaxParts: aws.Int32(1)})
		cancel()
		if err != nil {
			if isNotFound(err) {
				return d.resumeCompleted(ctx, p, offset, w.st.Base, err)
			}
			return nil, wrap("resume", p, err)
		}
	}
	if w.st.Tail != "" {
		cctx, cancel := d.bound(ctx, w.st.TailSize)
		defer cancel()
		out, err := d.c.GetObject(cctx, &s3.GetObjectInput{Bucket: &d.bucket, Key: &w.st.Tail})
		if err != nil {
			if isNotFound(err) {
				return d.resumeCompleted(ctx, p, offset, w.st.Base, err)
			}
			return nil, wrap("resume: read tail", p, err)
		}
		w.buf, err = io.ReadAll(io.LimitReader(out.Body, w.st.TailSize+1))
		out.Body.Close()
		if err == nil && (int64(len(w.buf)) != w.st.TailSize || aws.ToString(out.ETag) != w.st.TailETag) {
			err = fmt.Errorf("%w: the tail object changed since the state was saved", storage.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("s3 resume %s: %w", p, err)
		}
	}
	w.start = offset
	if w.sent+int64(len(w.buf)) != offset {
		return nil, fmt.Errorf("s3 resume %s: %w: state holds %d bytes, not %d", p, storage.ErrNotFound, w.sent+int64(len(w.buf)), offset)
	}
	return w, nil
}

// resumeCompleted answers a saved state whose multipart upload or tail
// object is gone (gone is the error that said so). A PUT may have
// completed the file from this state (the upload is an object now, the
// tails dropped) and the state stayed in the database: the process
// stopped, or recording the kept upload failed, before the blob was
// placed. The object at the key then holds the state's bytes, followed by
// the PUT's, and the writer continues from its first offset bytes, as
// Writer does. An object that is missing, shorter, or the very object the
// state began from (its ETag is Base: the state's multipart upload was
// aborted, by a lifecycle rule say, and the bytes past where it began are
// not the state's) does not hold them: the data is gone.
func (d *Driver) resumeCompleted(ctx context.Context, p string, offset int64, base string, gone error) (storage.FileWriter, error) {
	w, err := d.continueObject(ctx, p, offset, base)
	if err != nil {
		return nil, fmt.Errorf("%w (after %v)", err, gone)
	}
	return w, nil
}

func (w *writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, fmt.Errorf("s3 write %s: writer is closed", w.path)
	}
	n := 0
	for len(p) > 0 {
		if w.buf == nil {
			w.buf = make([]byte, 0, min(w.d.partSize, 256<<10))
		}
		k := min(len(p), int(w.d.partSize)-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		n, p = n+k, p[k:]
		if int64(len(w.buf)) == w.d.partSize {
			if err := w.flushPart(); err != nil {
				return n - k, err
			}
		}
	}
	return n, nil
}

// flushPart uploads buf as the next part.
func (w *writer) flushPart() error {
	if len(w.st.Parts) >= maxParts {
		w.err = fmt.Errorf("s3 write %s: %w", w.path, ErrTooManyParts)
		return w.err
	}
	d := w.d
	if w.st.UploadID == "" {
		ctx, cancel := d.bound(w.ctx, 0)
		mp, err := d.c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &d.bucket, Key: &w.st.Key})
		cancel()
		if err != nil {
			w.err = wrap("write", w.path, err)
			return w.err
		}
		w.st.UploadID = aws.ToString(mp.UploadId)
	}
	n := int32(len(w.st.Parts) + 1)
	ctx, cancel := d.bound(w.ctx, int64(len(w.buf)))
	defer cancel()
	out, err := d.c.UploadPart(ctx, &s3.UploadPartInput{Bucket: &d.bucket, Key: &w.st.Key, UploadId: &w.st.UploadID,
		PartNumber: aws.Int32(n), Body: bytes.NewReader(w.buf), ContentLength: aws.Int64(int64(len(w.buf)))})
	if err != nil {
		w.err = wrap("write part", w.path, err)
		return w.err
	}
	w.st.Parts = append(w.st.Parts, part{N: n, ETag: aws.ToString(out.ETag), Size: int64(len(w.buf))})
	w.sent += int64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}

func (w *writer) Size() int64 { return w.sent + int64(len(w.buf)) }

// Close keeps what was written for a later ResumeWriter: a rest of at least
// MinPartSize becomes a part, a smaller one the tail object. Nothing
// appears at the path before Commit.
func (w *writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err != nil {
		return w.err
	}
	if len(w.buf) >= MinPartSize {
		if err := w.flushPart(); err != nil {
			return err
		}
	}
	w.st.Size = w.Size()
	if w.st.Size == w.start {
		w.buf = nil
		return nil // nothing new: the saved state stands
	}
	w.st.PrevTail, w.st.Tail, w.st.TailSize, w.st.TailETag = w.st.Tail, "", 0, ""
	if len(w.buf) > 0 {
		tail := w.st.Key + tailInfix + strconv.FormatInt(w.st.Size, 10)
		ctx, cancel := w.d.bound(w.ctx, int64(len(w.buf)))
		defer cancel()
		out, err := w.d.c.PutObject(ctx, &s3.PutObjectInput{Bucket: &w.d.bucket, Key: &tail,
			Body: bytes.NewReader(w.buf), ContentLength: aws.Int64(int64(len(w.buf)))})
		if err != nil {
			w.err = wrap("write tail", w.path, err)
			return w.err
		}
		w.st.Tail, w.st.TailSize, w.st.TailETag = tail, int64(len(w.buf)), aws.ToString(out.ETag)
	}
	w.buf = nil
	return nil
}

// Abandon lets the writer go without keeping what it holds: unlike
// Close, it sends nothing (no part, no tail object), and State and Commit
// fail after it. The registry abandons the writer of a request whose
// claim on its upload was lost: another request may own the upload by
// then, and a part Close sent would write over the part of the same
// number that request recorded, so that the multipart upload could never
// complete. Parts sent before stay, for the next writer to write over or
// the upload's end to abort.
func (w *writer) Abandon() {
	w.closed, w.buf = true, nil
	if w.err == nil {
		w.err = fmt.Errorf("s3 write %s: writer abandoned", w.path)
	}
}

// tailInfix names a writer's tail objects: <key>.tail.<size>, beside the
// key (not below it, which a filesystem-backed S3 server could not store
// next to the key's own object), so that Delete finds them by prefix.
const tailInfix = ".tail."

// State implements storage.StatefulWriter.
func (w *writer) State() ([]byte, error) {
	if !w.closed || w.err != nil {
		return nil, fmt.Errorf("s3 write %s: no state to save (closed: %v, error: %v)", w.path, w.closed, w.err)
	}
	return json.Marshal(w.st)
}

// Commit completes the file at its path: one PutObject if it never reached
// a part, otherwise the rest as the last part and CompleteMultipartUpload.
func (w *writer) Commit(ctx context.Context) error {
	if w.done {
		return w.err
	}
	if w.closed {
		return fmt.Errorf("s3 commit %s: writer is closed", w.path)
	}
	if w.err != nil {
		return w.err
	}
	d := w.d
	ctx = context.WithoutCancel(ctx)
	if w.st.UploadID == "" {
		if err := d.put(ctx, w.path, w.st.Key, w.buf); err != nil {
			return err
		}
	} else {
		if len(w.buf) > 0 {
			if err := w.flushPart(); err != nil {
				return err
			}
		}
		parts := make([]types.CompletedPart, len(w.st.Parts))
		for i, pt := range w.st.Parts {
			parts[i] = types.CompletedPart{PartNumber: aws.Int32(pt.N), ETag: aws.String(pt.ETag)}
		}
		cctx, cancel := d.bound(ctx, w.Size())
		_, err := d.c.CompleteMultipartUpload(cctx, &s3.CompleteMultipartUploadInput{Bucket: &d.bucket, Key: &w.st.Key,
			UploadId: &w.st.UploadID, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
		cancel()
		if err != nil && isNotFound(err) {
			err = w.completedMeanwhile(ctx, err)
		}
		if err != nil {
			return wrap("commit", w.path, err)
		}
	}
	w.closed, w.done, w.buf = true, true, nil
	w.dropTails(ctx)
	return nil
}

// completedMeanwhile answers a CompleteMultipartUpload that failed with
// NoSuchUpload (notFound): nil if the upload was completed nonetheless,
// which is what a retry meets when S3 completed the upload and its answer
// was lost (the SDK retries the call, and S3 may answer the retry
// NoSuchUpload, the upload being an object now: AWS documents the code
// for an upload completed as well as aborted). Taking that
// for data that is gone would delete the completed object with the
// upload. The object at the key must have the written size and, if its
// ETag has the multipart shape (<md5>-<parts>), as many parts. If the
// object cannot be looked for, the error is transient: whether the data
// is gone is not known.
func (w *writer) completedMeanwhile(ctx context.Context, notFound error) error {
	d := w.d
	cctx, cancel := d.bound(ctx, 0)
	out, err := d.c.HeadObject(cctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: &w.st.Key})
	cancel()
	if err != nil {
		if isNotFound(err) {
			return notFound
		}
		// Not notFound wrapped: whether the data is gone is not known.
		return fmt.Errorf("looking for the object after %v: %w", notFound, err)
	}
	if size := aws.ToInt64(out.ContentLength); size != w.Size() {
		return fmt.Errorf("%w; the object at the key has %d bytes, not %d", notFound, size, w.Size())
	}
	etag := strings.Trim(aws.ToString(out.ETag), `"`)
	if i := strings.LastIndexByte(etag, '-'); i >= 0 {
		if n, err := strconv.Atoi(etag[i+1:]); err == nil && n != len(w.st.Parts) {
			return fmt.Errorf("%w; the object at the key has %d parts, not %d", notFound, n, len(w.st.Parts))
		}
	}
	return nil
}

func (w *writer) dropTails(ctx context.Context) {
	for _, k := range []string{w.st.Tail, w.st.PrevTail} {
		if k != "" {
			cctx, cancel := w.d.bound(ctx, 0)
			w.d.c.DeleteObject(cctx, &s3.DeleteObjectInput{Bucket: &w.d.bucket, Key: aws.String(k)})
			cancel()
		}
	}
}

// Cancel aborts the multipart upload and deletes the tail and the path.
func (w *writer) Cancel(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	w.closed, w.done, w.buf = true, true, nil
	var err error
	if w.st.UploadID != "" {
		err = w.d.abort(ctx, w.st.Key, w.st.UploadID)
	}
	w.dropTails(ctx)
	dctx, cancel := w.d.bound(ctx, 0)
	defer cancel()
	if _, derr := w.d.c.DeleteObject(dctx, &s3.DeleteObjectInput{Bucket: &w.d.bucket, Key: &w.st.Key}); err == nil && derr != nil && !isNotFound(derr) {
		err = derr
	}
	if err != nil {
		return wrap("cancel", w.path, err)
	}
	return nil
}
