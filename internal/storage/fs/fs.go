// Package fs is the filesystem storage driver.
package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/berth-dev/berth/internal/storage"
)

// Driver stores files under a root directory.
type Driver struct {
	root  string
	fsync bool
	// openDirect opens a file for direct I/O (direct_linux.go; tests
	// replace it). noDirect is set for good when the file system refuses
	// direct I/O, so that later writers do not try again.
	openDirect func(name string) (*os.File, error)
	noDirect   atomic.Bool
	// datasync flushes a writer's file when it is closed with fsync on
	// (writeback_linux.go; tests replace it).
	datasync func(*os.File) error
	// bounce holds aligned buffers (*[]byte of directBounce bytes) through
	// which direct writes copy bytes that do not start at an aligned
	// address.
	bounce sync.Pool
}

// Options configure the filesystem driver.
type Options struct {
	// Fsync makes Commit and PutContent flush file data to disk before they
	// return, and Move, PutContent and the creation of directories flush
	// the directories they change, so committed blobs survive a machine
	// crash, not only a process crash. A writer's Close flushes the file's
	// data too (fdatasync): an upload's chunk is recorded after its Close,
	// and its recorded size and hash state must never describe bytes that
	// a power cut can take back.
	Fsync bool
}

// New returns a driver rooted at dir, creating it if needed.
func New(dir string, opts Options) (*Driver, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("storage root %q: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o750); err != nil {
		return nil, fmt.Errorf("create storage root: %w", err)
	}
	return &Driver{root: abs, fsync: opts.Fsync, openDirect: openDirect, datasync: datasync}, nil
}

func (d *Driver) full(p string) (string, error) {
	if err := storage.CheckPath(p); err != nil {
		return "", err
	}
	return filepath.Join(d.root, filepath.FromSlash(p)), nil
}

func wrap(op, p string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s %s: %w", op, p, storage.ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", op, p, err)
}

// GetContent implements storage.Driver.
func (d *Driver) GetContent(_ context.Context, p string) ([]byte, error) {
	f, err := d.full(p)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return nil, wrap("read", p, err)
	}
	return b, nil
}

// PutContent implements storage.Driver: it writes a temporary file and
// renames it into place, so readers never see a partial file.
func (d *Driver) PutContent(ctx context.Context, p string, content []byte) error {
	f, err := d.full(p)
	if err != nil {
		return err
	}
	if err := d.mkdirAll(filepath.Dir(f)); err != nil {
		return wrap("put", p, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(f), ".tmp-*")
	if err != nil {
		return wrap("put", p, err)
	}
	placed := false
	defer func() {
		if !placed {
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return wrap("put", p, err)
	}
	if d.fsync {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return wrap("put", p, err)
		}
	}
	if err := tmp.Close(); err != nil {
		return wrap("put", p, err)
	}
	if err := os.Rename(tmp.Name(), f); err != nil {
		return wrap("put", p, err)
	}
	placed = true
	if err := d.syncDir(filepath.Dir(f)); err != nil {
		return wrap("put", p, err)
	}
	return nil
}

// Reader implements storage.Driver. The returned value is an *os.File, so
// net/http can send it with sendfile.
func (d *Driver) Reader(_ context.Context, p string, offset int64) (io.ReadCloser, error) {
	f, err := d.full(p)
	if err != nil {
		return nil, err
	}
	file, err := os.Open(f)
	if err != nil {
		return nil, wrap("open", p, err)
	}
	if offset > 0 {
		if _, err := file.Seek(offset, io.SeekStart); err != nil {
			file.Close()
			return nil, wrap("seek", p, err)
		}
	}
	return file, nil
}

// Writer implements storage.Driver.
func (d *Driver) Writer(_ context.Context, p string, offset int64) (storage.FileWriter, error) {
	f, err := d.full(p)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("write %s: negative offset %d", p, offset)
	}
	if offset == 0 {
		// An upload's directories need not survive a power cut (its bytes
		// are flushed, and moved into a flushed directory, when it becomes
		// a blob): flushing their parents would cost two fsyncs per blob.
		mkdir := d.mkdirAll
		if storage.IsUploadPath(p) {
			mkdir = func(dir string) error { return os.MkdirAll(dir, 0o750) }
		}
		if err := mkdir(filepath.Dir(f)); err != nil {
			return nil, wrap("create", p, err)
		}
	}
	if err := unshare(f, offset); err != nil {
		return nil, wrap("resume", p, err)
	}
	// Only a new file is created: resuming a file that is gone must not
	// leave an empty one behind.
	flags := os.O_WRONLY
	if offset == 0 {
		flags |= os.O_CREATE | os.O_TRUNC
	}
	file, err := os.OpenFile(f, flags, 0o640)
	if err != nil {
		return nil, wrap("create", p, err)
	}
	if offset > 0 {
		fi, err := file.Stat()
		if err == nil && fi.Size() < offset {
			// The bytes the offset names are gone: as for a missing file.
			err = fmt.Errorf("%w: file has %d bytes, fewer than offset %d", storage.ErrNotFound, fi.Size(), offset)
		}
		if err == nil && fi.Size() > offset {
			err = file.Truncate(offset)
		}
		if err == nil {
			_, err = file.Seek(offset, io.SeekStart)
		}
		if err != nil {
			file.Close()
			return nil, wrap("resume", p, err)
		}
	}
	return &writer{d: d, f: file, size: offset, flushed: offset, fsync: d.fsync, path: p}, nil
}

// unshare gives the file at f a copy of its own (its first offset bytes)
// when it has another name: an upload's file is linked to its blob's
// address before the upload's row is gone (Link, under the metadata
// store's placement protocol), so after a crash between the two the
// session may be resumed, or started again, on the very file the blob's
// address names; writing it in place (a truncation, new bytes) would
// change a stored blob. Only this name moves to the copy.
func unshare(f string, offset int64) error {
	fi, err := os.Stat(f)
	if err != nil {
		return nil // a missing file: the caller's open says so
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Nlink <= 1 {
		return nil
	}
	old, err := os.Open(f)
	if err != nil {
		return err
	}
	defer old.Close()
	tmp := f + ".unshared"
	nf, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(nf, old, offset); err != nil && !errors.Is(err, io.EOF) {
		nf.Close()
		os.Remove(tmp)
		return err
	}
	if err := nf.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, f)
}

// writebackEvery is how many written bytes a writer with fsync lets
// accumulate before it starts their writeback (startWriteback): a large
// blob then streams to disk while it is received, instead of all at its
// commit's fsync.
const writebackEvery = 8 << 20

// Direct writes. With fsync on, a writer whose file has passed directAfter
// bytes writes each further aligned run of at least directMin bytes with
// direct I/O (O_DIRECT, on a second handle of the same file): from the
// caller's buffer to the device, with no copy into the page cache. The
// commit's fsync has to flush them anyway, so durability costs no more
// wall time, and the copy into the page cache was most of the server's
// CPU on a large push (on a virtual machine whose fresh guest pages the
// host backs lazily, several times SHA-256's cost). It also keeps one
// large push from evicting the page cache's hot content. The bytes around
// the runs (the head and tail of a write that are not aligned, small
// writes, the first directAfter bytes, so small blobs never wait for the
// device) are written through the page cache as before. Every byte is
// written once, by one of the two handles, so no page is written both
// ways. Without fsync, writes stay in the page cache: that mode trades
// durability for speed, and direct writes would wait for the device.
const (
	directAlign  = 4096     // offsets, lengths and buffer addresses of direct writes
	directAfter  = 1 << 20  // bytes a file has before direct writes start
	directMin    = 64 << 10 // the shortest run worth a direct write
	directBounce = 1 << 20  // the bounce buffer for unaligned sources
)

type writer struct {
	d    *Driver
	f    *os.File
	path string
	size int64
	// flushed is the offset up to which writeback was started, dirty how
	// many bytes were written through the page cache since.
	flushed, dirty int64
	fsync          bool
	closed         bool
	// direct is the O_DIRECT handle, opened at the first direct write;
	// noDirect stops trying. seek is set when direct writes moved the end
	// past f's file offset.
	direct   *os.File
	noDirect bool
	seek     bool
	// directBytes counts the bytes written with direct I/O (tests).
	directBytes int64
}

func (w *writer) Write(b []byte) (int, error) {
	if !w.fsync || w.noDirect || w.size+int64(len(b)) < directAfter+directMin {
		return w.writeBuffered(b)
	}
	written := 0
	// The head: up to the next aligned offset, through the page cache.
	if r := w.size % directAlign; r != 0 || w.size < directAfter {
		k := int(directAlign - r)
		if w.size < directAfter {
			k = int(directAfter - w.size)
		}
		k = min(k, len(b))
		n, err := w.writeBuffered(b[:k])
		written += n
		if err != nil {
			return written, err
		}
		b = b[k:]
	}
	if run := len(b) &^ (directAlign - 1); run >= directMin {
		n, err := w.writeDirect(b[:run])
		written += n
		if err != nil {
			return written, err
		}
		b = b[run:]
	}
	if len(b) > 0 {
		n, err := w.writeBuffered(b)
		written += n
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// writeBuffered appends b through the page cache, at f's file offset.
func (w *writer) writeBuffered(b []byte) (int, error) {
	if err := w.syncOffset(); err != nil {
		return 0, err
	}
	n, err := w.f.Write(b)
	w.wrote(int64(n))
	return n, err
}

// syncOffset moves f's file offset to the end, after direct writes.
func (w *writer) syncOffset() error {
	if !w.seek {
		return nil
	}
	if _, err := w.f.Seek(w.size, io.SeekStart); err != nil {
		return err
	}
	w.seek = false
	return nil
}

// writeDirect appends b, whose length is a multiple of directAlign at an
// aligned offset, with direct I/O; if the file system refuses it, through
// the page cache, and the writer (and the driver) stop trying.
func (w *writer) writeDirect(b []byte) (int, error) {
	if w.direct == nil {
		if w.d.noDirect.Load() {
			w.noDirect = true
			return w.writeBuffered(b)
		}
		f, err := w.d.openDirect(w.f.Name())
		if err != nil {
			w.refuseDirect(err)
			return w.writeBuffered(b)
		}
		w.direct = f
	}
	written := 0
	for len(b) > 0 {
		src := b
		var bounce *[]byte
		if uintptr(unsafe.Pointer(&b[0]))%directAlign != 0 {
			bounce = w.d.bounceBuffer()
			src = (*bounce)[:copy(*bounce, b)]
		}
		n, err := w.direct.WriteAt(src, w.size)
		if bounce != nil {
			w.d.bounce.Put(bounce)
		}
		if n > 0 {
			w.wroteDirect(int64(n))
			written += n
			b = b[n:]
		}
		if err != nil {
			if n == 0 && errors.Is(err, syscall.EINVAL) {
				// Refused (an alignment this device does not accept):
				// nothing was written; the rest goes through the page
				// cache.
				w.refuseDirect(err)
				n, err := w.writeBuffered(b)
				return written + n, err
			}
			return written, err
		}
	}
	return written, nil
}

// refuseDirect records that direct writes cannot be used here: for this
// writer, and for the driver when the file system refuses them (EINVAL).
func (w *writer) refuseDirect(err error) {
	w.noDirect = true
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, errors.ErrUnsupported) {
		w.d.noDirect.Store(true)
	}
}

// bounceBuffer returns a pooled directBounce-byte buffer at an aligned
// address.
func (d *Driver) bounceBuffer() *[]byte {
	if b, ok := d.bounce.Get().(*[]byte); ok {
		return b
	}
	raw := make([]byte, directBounce+directAlign)
	off := int((directAlign - uintptr(unsafe.Pointer(&raw[0]))%directAlign) % directAlign)
	b := raw[off : off+directBounce : off+directBounce]
	return &b
}

// ReadFrom lets io.Copy from a network connection use splice where the
// kernel can. It writes through the page cache.
func (w *writer) ReadFrom(r io.Reader) (int64, error) {
	if err := w.syncOffset(); err != nil {
		return 0, err
	}
	n, err := w.f.ReadFrom(r)
	w.wrote(n)
	return n, err
}

// wrote counts n bytes written through the page cache, and starts the
// writeback of what they dirtied every writebackEvery such bytes.
func (w *writer) wrote(n int64) {
	w.size += n
	w.dirty += n
	if w.fsync && w.dirty >= writebackEvery {
		startWriteback(w.f, w.flushed, w.size-w.flushed)
		w.flushed, w.dirty = w.size, 0
	}
}

// wroteDirect counts n bytes written with direct I/O: they need no
// writeback.
func (w *writer) wroteDirect(n int64) {
	w.size += n
	w.directBytes += n
	w.seek = true
}

func (w *writer) Size() int64 { return w.size }

// Close keeps the file for a later Writer at its size (the next chunk of
// an upload). With fsync, its data are flushed first (fdatasync): the
// caller records the upload's new size and hash state next, and a power
// cut must not leave a file of that size whose last bytes are not the ones
// hashed (a file system may keep the size and lose the data, reading back
// zeros), which a resumed upload would then finish under a digest they do
// not have.
func (w *writer) Close() error {
	if w.closed {
		return nil
	}
	if w.fsync {
		if err := w.d.datasync(w.f); err != nil {
			w.close()
			return wrap("sync", w.path, err)
		}
	}
	return w.close()
}

// close closes the file's handles.
func (w *writer) close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	var err error
	if w.direct != nil {
		err = w.direct.Close()
	}
	return errors.Join(w.f.Close(), err)
}

// Commit flushes the file (fsync of either handle flushes the file's data,
// whichever handle wrote it, its metadata, and the device's cache).
func (w *writer) Commit(context.Context) error {
	if w.fsync {
		if err := w.f.Sync(); err != nil {
			return wrap("sync", w.path, err)
		}
	}
	return w.close()
}

func (w *writer) Cancel(context.Context) error {
	w.close()
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return wrap("cancel", w.path, err)
	}
	return nil
}

// Stat implements storage.Driver.
func (d *Driver) Stat(_ context.Context, p string) (storage.FileInfo, error) {
	f, err := d.full(p)
	if err != nil {
		return storage.FileInfo{}, err
	}
	fi, err := os.Stat(f)
	if err != nil {
		return storage.FileInfo{}, wrap("stat", p, err)
	}
	return storage.FileInfo{Path: p, Size: fi.Size(), ModTime: fi.ModTime(), IsDir: fi.IsDir()}, nil
}

// List implements storage.Driver.
func (d *Driver) List(_ context.Context, p string) ([]string, error) {
	f, err := d.full(p)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(f)
	if err != nil {
		return nil, wrap("list", p, err)
	}
	out := make([]string, 0, len(entries))
	prefix := p
	if prefix != "/" {
		prefix += "/"
	}
	for _, e := range entries {
		if len(e.Name()) > 0 && e.Name()[0] == '.' {
			continue // temporary files
		}
		out = append(out, prefix+e.Name())
	}
	sort.Strings(out)
	return out, nil
}

// Move implements storage.Driver with rename(2), atomic on one filesystem.
func (d *Driver) Move(_ context.Context, src, dst string) error {
	return d.name("move", src, dst, func(from, to string) error { return os.Rename(from, to) })
}

// Link implements storage.Linker with link(2). A dst that exists is kept;
// its directory is flushed either way, since the name may be another
// request's link that is not flushed yet.
func (d *Driver) Link(_ context.Context, src, dst string) error {
	return d.name("link", src, dst, func(from, to string) error {
		if err := os.Link(from, to); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		return nil
	})
}

// name gives src's file the name dst with op (rename or link), in dst's
// directory made if missing, and flushes that directory: the new name
// must survive a power cut too, not only the data.
func (d *Driver) name(op, src, dst string, fn func(from, to string) error) error {
	from, err := d.full(src)
	if err != nil {
		return err
	}
	to, err := d.full(dst)
	if err != nil {
		return err
	}
	if err := d.mkdirAll(filepath.Dir(to)); err != nil {
		return wrap(op, dst, err)
	}
	if err := fn(from, to); err != nil {
		return wrap(op, src, err)
	}
	if err := d.syncDir(filepath.Dir(to)); err != nil {
		return wrap(op, dst, err)
	}
	return nil
}

// mkdirAll creates dir and its missing parents. With fsync, it flushes the
// directory that gained each new entry, so that a file placed in a new
// directory is not lost with the directory after a power cut.
func (d *Driver) mkdirAll(dir string) error {
	if !d.fsync {
		return os.MkdirAll(dir, 0o750)
	}
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || filepath.Dir(p) == p {
			break
		}
		missing = append(missing, p)
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := d.syncDir(filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}

// syncDir flushes a directory's entries (creations, renames) to disk when
// fsync is on.
func (d *Driver) syncDir(dir string) error {
	if !d.fsync {
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Delete implements storage.Driver.
func (d *Driver) Delete(_ context.Context, p string) error {
	f, err := d.full(p)
	if err != nil {
		return err
	}
	if p == "/" {
		return fmt.Errorf("%w: refusing to delete the root", storage.ErrInvalidPath)
	}
	// A file (an upload's, a blob) goes with one unlink; a directory needs
	// RemoveAll, which lists it.
	err = os.Remove(f)
	if err == nil {
		return nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return wrap("delete", p, err)
	}
	if err := os.RemoveAll(f); err != nil {
		return wrap("delete", p, err)
	}
	return nil
}
