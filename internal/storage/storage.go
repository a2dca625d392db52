// Package storage defines the driver interface for Berth's content-addressed
// bytes. Storage holds blobs and in-progress uploads and nothing else; what
// exists is decided by the metadata store.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"
)

// ErrNotFound is returned (wrapped) when a path does not exist.
var ErrNotFound = errors.New("storage: path not found")

// ErrInvalidPath is returned for a path outside the driver's grammar.
var ErrInvalidPath = errors.New("storage: invalid path")

// ErrFileTooLarge is wrapped by the error of a write past what the
// backend can hold in one file (S3: 10,000 multipart parts): retrying it
// cannot succeed.
var ErrFileTooLarge = errors.New("storage: file too large for this backend")

// Driver stores bytes under slash-separated paths. Every method takes the
// request's context first. Implementations must be safe for concurrent use
// by many processes sharing the same backing store: Move must be atomic with
// respect to readers of dst.
type Driver interface {
	// GetContent reads a whole small file.
	GetContent(ctx context.Context, path string) ([]byte, error)
	// PutContent writes a whole small file, replacing any previous one.
	PutContent(ctx context.Context, path string, content []byte) error
	// Reader opens path for reading from offset.
	Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error)
	// Writer opens path for writing from offset: 0 starts an empty file;
	// a positive offset continues an existing file of at least that size
	// (resumable uploads), discarding anything stored beyond it. Resuming
	// a file that is gone or shorter than offset fails with ErrNotFound;
	// any other error (a backend that cannot be reached) is transient.
	Writer(ctx context.Context, path string, offset int64) (FileWriter, error)
	// Stat describes path.
	Stat(ctx context.Context, path string) (FileInfo, error)
	// List returns the direct children of a directory path (for maintenance
	// tools and GC; never used to answer a registry request).
	List(ctx context.Context, path string) ([]string, error)
	// Move renames src to dst atomically, replacing dst.
	Move(ctx context.Context, src, dst string) error
	// Delete removes path and everything below it.
	Delete(ctx context.Context, path string) error
}

// FileWriter writes a file. Bytes are durable only after Commit.
type FileWriter interface {
	io.WriteCloser
	// Size is the number of bytes in the file so far, including those
	// before the offset it was opened at.
	Size() int64
	// Commit flushes the file so that a later Reader or Move sees all of it.
	Commit(ctx context.Context) error
	// Cancel discards the file.
	Cancel(ctx context.Context) error
}

// FileInfo describes a stored path.
type FileInfo struct {
	Path    string
	Size    int64
	ModTime time.Time
	IsDir   bool
}

// BlobPath is the storage path of a blob's bytes.
func BlobPath(d digest.Digest) string {
	hex := d.Encoded()
	return fmt.Sprintf("/blobs/%s/%s/%s", d.Algorithm(), hex[:2], hex)
}

// NewUploadID returns the id of a new upload session (or of an ingest's
// staged copy): a UUIDv7, whose bytes live in one file (UploadPath), with
// no directory of its own to create and remove around each blob (on a
// filesystem, about as dear as the file itself). Sessions begun by
// earlier versions have UUIDv4 ids and keep their directory layout; both
// are read, resumed and removed alike.
func NewUploadID() string {
	u, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString() // the random source failed for v7; v4 uses the old layout
	}
	return u.String()
}

// flatUpload reports whether id (a canonical UUID) is a UUIDv7, whose bytes
// are one file rather than a directory holding a file named data.
func flatUpload(id string) bool {
	return len(id) == 36 && id[14] == '7'
}

// UploadPath is the storage path of an upload session's bytes. id must be
// a validated upload id. A UUIDv7's file is /uploads/<its last two hex
// digits>/<id> (its first digits are a timestamp, which would put every
// upload in one directory); an older session's is
// /uploads/<first two>/<id>/data.
func UploadPath(id string) string {
	if flatUpload(id) {
		return "/uploads/" + id[34:] + "/" + id
	}
	return "/uploads/" + id[:2] + "/" + id + "/data"
}

// IsUploadPath reports whether p is inside an upload session's directory:
// scratch data that no one relies on surviving a power cut until the
// upload's commit makes it a blob.
func IsUploadPath(p string) bool {
	return strings.HasPrefix(p, "/uploads/")
}

// UploadRoot is what Delete removes to remove everything an upload session
// stored: its file, or an older session's directory.
func UploadRoot(id string) string {
	if flatUpload(id) {
		return UploadPath(id)
	}
	return "/uploads/" + id[:2] + "/" + id
}

// UploadIDOf returns the upload id that an entry of an /uploads/<xx>
// directory belongs to: the entry's name up to its first dot (a driver may
// keep objects beside an upload's file, such as S3's tails,
// <id>.tail.<n>).
func UploadIDOf(name string) string {
	id, _, _ := strings.Cut(path.Base(name), ".")
	return id
}

// CheckPath enforces the path grammar every driver accepts: absolute,
// slash-separated components of [A-Za-z0-9._-], none of them "." or "..".
func CheckPath(p string) error {
	if p == "/" {
		return nil
	}
	if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return fmt.Errorf("%w: %q", ErrInvalidPath, p)
	}
	for _, c := range strings.Split(p[1:], "/") {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("%w: %q", ErrInvalidPath, p)
		}
		for i := 0; i < len(c); i++ {
			b := c[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '_' || b == '-') {
				return fmt.Errorf("%w: %q", ErrInvalidPath, p)
			}
		}
	}
	return nil
}

// StatefulWriter is an optional capability of a FileWriter: after Close,
// State returns an opaque description of what was written (for S3, the
// multipart upload, its parts and a small tail object) that the metadata
// store keeps beside the upload's hash state, so that any process can
// continue the file with Resumer.ResumeWriter. Drivers whose files
// continue from their stored bytes alone (fs, mem) do not implement it.
type StatefulWriter interface {
	FileWriter
	State() ([]byte, error)
}

// Resumer is an optional capability of a Driver whose writers keep state
// (see StatefulWriter).
type Resumer interface {
	// ResumeWriter continues path at offset from the state a previous
	// writer's State returned. A nil state is Writer(ctx, path, offset).
	// As for Writer, ErrNotFound means the data is gone (or no longer what
	// the state describes); other errors are transient.
	ResumeWriter(ctx context.Context, path string, offset int64, state []byte) (FileWriter, error)
}

// OpenWriter opens path for writing at offset, resuming from state when
// the driver keeps writer state and a state was saved.
func OpenWriter(ctx context.Context, d Driver, path string, offset int64, state []byte) (FileWriter, error) {
	if r, ok := d.(Resumer); ok && len(state) > 0 {
		return r.ResumeWriter(ctx, path, offset, state)
	}
	return d.Writer(ctx, path, offset)
}

// WriterState returns the state of a closed writer to save for
// OpenWriter, or nil when the driver keeps none.
func WriterState(w FileWriter) ([]byte, error) {
	if s, ok := w.(StatefulWriter); ok {
		return s.State()
	}
	return nil, nil
}

// Linker is an optional capability of a Driver that can give a file a
// second name while it keeps the first (a hard link; on S3, a server-side
// copy), which lets a blob's bytes be placed before the metadata store's
// transaction while the staged copy stays for a second placement
// (Placement.PlaceEarly); the caller removes the staged copy afterwards.
type Linker interface {
	// Link names src's file dst too; src keeps its name. If dst exists
	// already, it is kept as it is and Link succeeds. Either way, on a
	// driver that flushes, dst's name is durable when Link returns.
	Link(ctx context.Context, src, dst string) error
}

// RangeReader is an optional capability of a Driver whose Reader would
// start a transfer of the whole rest of the file (S3: a GET with an
// open-ended Range): it reads at most length bytes from offset, so that a
// client's small range (lazy-pulling snapshotters ask for thousands)
// costs what it asks for. A range past the file's end is cut there.
type RangeReader interface {
	RangeReader(ctx context.Context, path string, offset, length int64) (io.ReadCloser, error)
}

// OpenRange opens path for reading length bytes from offset: through the
// driver's RangeReader when it has one, else its Reader (the caller
// stops reading at length).
func OpenRange(ctx context.Context, d Driver, path string, offset, length int64) (io.ReadCloser, error) {
	if rr, ok := d.(RangeReader); ok && length > 0 {
		return rr.RangeReader(ctx, path, offset, length)
	}
	return d.Reader(ctx, path, offset)
}

// URLSigner is an optional capability of a Driver that can hand clients a
// time-limited URL to read path directly (S3 presigned GET), so that a
// blob download need not pass through Berth.
type URLSigner interface {
	URLFor(ctx context.Context, path string, expiry time.Duration) (string, error)
}

// MultipartUpload is an unfinished multipart write (see MultipartLister).
type MultipartUpload struct {
	Path      string // the storage path the write would complete
	ID        string // the backend's id of the write
	Initiated time.Time
}

// MultipartLister is an optional capability of a Driver whose unfinished
// writes hold bytes that List does not show: an S3 multipart upload has no
// object until it completes. GC's leftover sweep uses it to abort the
// multipart uploads of upload sessions that no longer exist.
type MultipartLister interface {
	// MultipartUploads lists the unfinished multipart uploads at or below
	// dir that were initiated before before and have had no part uploaded
	// since (idle since before).
	MultipartUploads(ctx context.Context, dir string, before time.Time) ([]MultipartUpload, error)
	// AbortMultipartUpload discards one; one already gone is not an error.
	AbortMultipartUpload(ctx context.Context, u MultipartUpload) error
}
