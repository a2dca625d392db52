// Package mem is an in-memory storage driver for tests. It passes the same
// conformance suite as the filesystem and S3 drivers.
package mem

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/storage"
)

// Driver keeps files in a map. Drivers made by Share see the same files,
// like two processes sharing one bucket.
type Driver struct {
	b *backing
}

type backing struct {
	mu    sync.RWMutex
	files map[string]file
}

type file struct {
	data []byte
	mod  time.Time
}

// New returns an empty driver.
func New() *Driver {
	return &Driver{b: &backing{files: map[string]file{}}}
}

// Share returns another driver over the same files.
func (d *Driver) Share() *Driver { return &Driver{b: d.b} }

func notFound(op, p string) error {
	return fmt.Errorf("%s %s: %w", op, p, storage.ErrNotFound)
}

// isDir reports whether any file lies below p; the caller holds the lock.
func (b *backing) isDir(p string) bool {
	prefix := strings.TrimSuffix(p, "/") + "/"
	for k := range b.files {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// GetContent implements storage.Driver.
func (d *Driver) GetContent(_ context.Context, p string) ([]byte, error) {
	if err := storage.CheckPath(p); err != nil {
		return nil, err
	}
	d.b.mu.RLock()
	defer d.b.mu.RUnlock()
	f, ok := d.b.files[p]
	if !ok {
		return nil, notFound("read", p)
	}
	return bytes.Clone(f.data), nil
}

// PutContent implements storage.Driver.
func (d *Driver) PutContent(_ context.Context, p string, content []byte) error {
	if err := storage.CheckPath(p); err != nil {
		return err
	}
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	d.b.files[p] = file{data: bytes.Clone(content), mod: time.Now()}
	return nil
}

// Reader implements storage.Driver.
func (d *Driver) Reader(_ context.Context, p string, offset int64) (io.ReadCloser, error) {
	if err := storage.CheckPath(p); err != nil {
		return nil, err
	}
	d.b.mu.RLock()
	defer d.b.mu.RUnlock()
	f, ok := d.b.files[p]
	if !ok {
		return nil, notFound("read", p)
	}
	if offset < 0 || offset > int64(len(f.data)) {
		return nil, fmt.Errorf("read %s: offset %d outside its %d bytes", p, offset, len(f.data))
	}
	// Stored slices are never modified in place, so the reader needs no copy.
	return io.NopCloser(bytes.NewReader(f.data[offset:])), nil
}

// Writer implements storage.Driver.
func (d *Driver) Writer(_ context.Context, p string, offset int64) (storage.FileWriter, error) {
	if err := storage.CheckPath(p); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("write %s: negative offset %d", p, offset)
	}
	w := &writer{b: d.b, path: p}
	if offset > 0 {
		d.b.mu.RLock()
		f, ok := d.b.files[p]
		d.b.mu.RUnlock()
		if !ok {
			return nil, notFound("resume", p)
		}
		if int64(len(f.data)) < offset {
			return nil, fmt.Errorf("resume %s: %w: file has %d bytes, fewer than offset %d", p, storage.ErrNotFound, len(f.data), offset)
		}
		w.buf.Write(f.data[:offset])
	}
	return w, nil
}

type writer struct {
	b    *backing
	path string
	buf  bytes.Buffer
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("write %s: writer is closed", w.path)
	}
	return w.buf.Write(p)
}

func (w *writer) Size() int64 { return int64(w.buf.Len()) }

// Close stores what was written, as closing a file does: a later Writer at
// this size continues it.
func (w *writer) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	w.b.mu.Lock()
	defer w.b.mu.Unlock()
	w.b.files[w.path] = file{data: bytes.Clone(w.buf.Bytes()), mod: time.Now()}
	return nil
}

func (w *writer) Commit(context.Context) error { return w.Close() }

func (w *writer) Cancel(context.Context) error {
	w.done = true
	w.b.mu.Lock()
	defer w.b.mu.Unlock()
	delete(w.b.files, w.path)
	return nil
}

// Stat implements storage.Driver.
func (d *Driver) Stat(_ context.Context, p string) (storage.FileInfo, error) {
	if err := storage.CheckPath(p); err != nil {
		return storage.FileInfo{}, err
	}
	d.b.mu.RLock()
	defer d.b.mu.RUnlock()
	if f, ok := d.b.files[p]; ok {
		return storage.FileInfo{Path: p, Size: int64(len(f.data)), ModTime: f.mod}, nil
	}
	if p == "/" || d.b.isDir(p) {
		return storage.FileInfo{Path: p, IsDir: true}, nil
	}
	return storage.FileInfo{}, notFound("stat", p)
}

// List implements storage.Driver.
func (d *Driver) List(_ context.Context, p string) ([]string, error) {
	if err := storage.CheckPath(p); err != nil {
		return nil, err
	}
	prefix := strings.TrimSuffix(p, "/") + "/"
	d.b.mu.RLock()
	defer d.b.mu.RUnlock()
	seen := map[string]bool{}
	for k := range d.b.files {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		child, _, _ := strings.Cut(rest, "/")
		seen[prefix+child] = true
	}
	if len(seen) == 0 && p != "/" {
		return nil, notFound("list", p)
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

// Move implements storage.Driver.
func (d *Driver) Move(_ context.Context, src, dst string) error {
	return d.name("move", src, dst, func(f file) {
		d.b.files[dst] = f
		delete(d.b.files, src)
	})
}

// Link implements storage.Linker: dst gets src's bytes (which no writer
// changes in place), unless dst exists.
func (d *Driver) Link(_ context.Context, src, dst string) error {
	return d.name("link", src, dst, func(f file) {
		if _, exists := d.b.files[dst]; !exists {
			d.b.files[dst] = f
		}
	})
}

// name runs fn on src's file under the lock, for Move and Link.
func (d *Driver) name(op, src, dst string, fn func(f file)) error {
	if err := storage.CheckPath(src); err != nil {
		return err
	}
	if err := storage.CheckPath(dst); err != nil {
		return err
	}
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	f, ok := d.b.files[src]
	if !ok {
		return notFound(op, src)
	}
	fn(f)
	return nil
}

// Delete implements storage.Driver.
func (d *Driver) Delete(_ context.Context, p string) error {
	if err := storage.CheckPath(p); err != nil {
		return err
	}
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	found := false
	if _, ok := d.b.files[p]; ok {
		delete(d.b.files, p)
		found = true
	}
	prefix := strings.TrimSuffix(p, "/") + "/"
	for k := range d.b.files {
		if strings.HasPrefix(k, prefix) {
			delete(d.b.files, k)
			found = true
		}
	}
	if !found {
		return notFound("delete", p)
	}
	return nil
}
