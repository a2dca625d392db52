package osv

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Read walks an import source at path: a .zip file (osv.dev's all.zip, one
// JSON record per entry), a single JSON file (one record or an array of
// records), or a directory searched recursively for *.zip and *.json files
// (so osv.dev's <dir>/<Ecosystem>/all.zip layout and loose folders both
// work; other files, and Red Hat's repository-to-cpe.json, are skipped).
//
// fn is called for every record that parses; an error from fn stops the
// walk and is returned. A record that does not parse is reported to bad
// with where set to "file.zip:entry.json", "file.json" or "file.json[i]"
// (the i-th element of an array), and reading continues; an array element
// over MaxRecordSize is reported without being read into memory beyond
// the cap, and, as after malformed JSON, the rest of its array is not
// read. A zip file that cannot be opened as a zip is an error naming the
// file, returned before fn sees any of its records. ctx is checked
// between records.
func Read(ctx context.Context, path string, fn func(*Record) error, bad func(where string, err error)) error {
	return ReadEach(ctx, path, func(_ string, r *Record) error { return fn(r) }, bad)
}

// ReadEach is Read that also tells fn the file each record came from:
// the zip (not its entry) or the JSON file, as found under path.
func ReadEach(ctx context.Context, path string, fn func(file string, r *Record) error, bad func(where string, err error)) error {
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("read osv source: %w", err)
	}
	if !info.IsDir() {
		return readFile(ctx, path, func(r *Record) error { return fn(path, r) }, bad)
	}
	return filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read osv source: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !d.Type().IsRegular() {
			return nil
		}
		if strings.EqualFold(d.Name(), CPEMappingFile) {
			return nil // Red Hat's content set mapping, not OSV
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".zip", ".json":
			err := readFile(ctx, p, func(r *Record) error { return fn(p, r) }, bad)
			if errors.Is(err, ErrBadZip) {
				// One unreadable zip of a tree does not stop the others.
				bad(p, err)
				return nil
			}
			return err
		}
		return nil
	})
}

// CPEMappingFile is the name of Red Hat's mapping from content sets to
// CPEs, which Read skips in a directory.
const CPEMappingFile = "repository-to-cpe.json"

// ErrBadZip is wrapped when a zip cannot be opened (corrupt, truncated).
var ErrBadZip = errors.New("not a readable zip")

// readFile reads one .zip or JSON file.
func readFile(ctx context.Context, path string, fn func(*Record) error, bad func(where string, err error)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read osv source: %w", err)
	}
	defer func() { _ = f.Close() }()
	if strings.EqualFold(filepath.Ext(path), ".zip") {
		info, err := f.Stat()
		if err != nil {
			return fmt.Errorf("read osv source %s: %w", path, err)
		}
		return ReadZip(ctx, f, info.Size(), path, fn, bad)
	}
	return ReadJSON(ctx, f, path, fn, bad)
}

// ReadZip reads an osv.dev-style zip of JSON records held in r (size bytes),
// with the same contract as Read; name identifies the zip in errors and in
// the where argument of bad. Entries not ending in .json are skipped, and
// an entry larger than MaxRecordSize once decompressed is reported to bad
// without being read into memory beyond the cap.
func ReadZip(ctx context.Context, r io.ReaderAt, size int64, name string, fn func(*Record) error, bad func(where string, err error)) error {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return fmt.Errorf("open zip %s: %w: %w", name, ErrBadZip, err)
	}
	for _, f := range zr.File {
		if err := ctx.Err(); err != nil {
			return err
		}
		if f.FileInfo().IsDir() || !strings.EqualFold(filepath.Ext(f.Name), ".json") {
			continue
		}
		where := name + ":" + f.Name
		data, err := readEntry(f)
		if err != nil {
			bad(where, err)
			continue
		}
		if err := readJSONBytes(ctx, data, where, fn, bad); err != nil {
			return err
		}
	}
	return nil
}

// readEntry decompresses one zip entry, refusing more than MaxRecordSize.
func readEntry(f *zip.File) ([]byte, error) {
	if f.UncompressedSize64 > MaxRecordSize {
		return nil, fmt.Errorf("zip entry of %d bytes: %w", f.UncompressedSize64, ErrTooLarge)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("open zip entry: %w", err)
	}
	defer func() { _ = rc.Close() }()
	data, err := io.ReadAll(io.LimitReader(rc, MaxRecordSize+1))
	if err != nil {
		return nil, fmt.Errorf("decompress zip entry: %w", err)
	}
	if len(data) > MaxRecordSize {
		return nil, fmt.Errorf("zip entry decompresses beyond %d bytes: %w", MaxRecordSize, ErrTooLarge)
	}
	return data, nil
}

// readJSONBytes handles an in-memory body holding one record or an array.
func readJSONBytes(ctx context.Context, data []byte, where string, fn func(*Record) error, bad func(string, error)) error {
	return ReadJSON(ctx, bytes.NewReader(data), where, fn, bad)
}

// errReader remembers the first read error other than io.EOF, so that I/O
// failures can be told apart from malformed JSON.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && e.err == nil {
		e.err = err
	}
	return n, err
}

// ReadJSON reads a JSON body holding one OSV record or an array of records,
// with the same contract as Read; name identifies the body in the where
// argument of bad. Malformed JSON is reported to bad; a read error from r
// is returned.
func ReadJSON(ctx context.Context, r io.Reader, name string, fn func(*Record) error, bad func(where string, err error)) error {
	er := &errReader{r: r}
	br := bufio.NewReader(er)
	first, err := peekNonSpace(br)
	if err != nil {
		if er.err != nil {
			return fmt.Errorf("read %s: %w", name, er.err)
		}
		bad(name, fmt.Errorf("empty JSON: %w", err))
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if first != '[' {
		data, err := io.ReadAll(io.LimitReader(br, MaxRecordSize+1))
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		return handle(data, name, fn, bad)
	}

	// The decoder reads each element whole before handle can refuse it:
	// capped, it reads no more than MaxRecordSize (and the separators
	// before it) past where the element starts.
	cr := &capReader{r: br, limit: MaxRecordSize + elementSlack}
	dec := json.NewDecoder(cr)
	if _, err := dec.Token(); err != nil { // the opening '['
		return jsonFailure(er, name, err, bad)
	}
	for i := 0; ; i++ {
		cr.limit = dec.InputOffset() + MaxRecordSize + elementSlack
		if !dec.More() {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return jsonFailure(er, fmt.Sprintf("%s[%d]", name, i), err, bad)
		}
		if err := handle(raw, fmt.Sprintf("%s[%d]", name, i), fn, bad); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return jsonFailure(er, name, err, bad)
	}
	return nil
}

// jsonFailure turns a decoder error into a returned I/O error or a bad
// report; the rest of a malformed array, or of one with an element over
// MaxRecordSize, cannot be recovered.
func jsonFailure(er *errReader, where string, err error, bad func(string, error)) error {
	if er.err != nil {
		return fmt.Errorf("read %s: %w", where, er.err)
	}
	if errors.Is(err, ErrTooLarge) {
		bad(where, fmt.Errorf("%w; the rest of the array is not read", err))
		return nil
	}
	bad(where, fmt.Errorf("malformed JSON: %w", err))
	return nil
}

// elementSlack is what an array element may span beyond MaxRecordSize
// before a capReader stops it: the comma and white space before it. An
// element within it but over MaxRecordSize is read and then rejected by
// ParseRecord, and the array read on.
const elementSlack = 64 << 10

// capReader fails a read that would take the bytes read through it past
// limit: it bounds what a json.Decoder buffers of one array element.
type capReader struct {
	r     io.Reader
	n     int64 // bytes read
	limit int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.n >= c.limit {
		return 0, fmt.Errorf("array element beyond %d bytes: %w", MaxRecordSize, ErrTooLarge)
	}
	if int64(len(p)) > c.limit-c.n {
		p = p[:c.limit-c.n]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// handle parses one record and passes it to fn or bad.
func handle(data []byte, where string, fn func(*Record) error, bad func(string, error)) error {
	rec, err := ParseRecord(data)
	if err != nil {
		bad(where, err)
		return nil
	}
	if err := fn(rec); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}

func peekNonSpace(br *bufio.Reader) (byte, error) {
	for {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		case 0xEF: // UTF-8 byte order mark
			if rest, err := br.Peek(2); err == nil && rest[0] == 0xBB && rest[1] == 0xBF {
				_, _ = br.Discard(2)
				continue
			}
		}
		return b, br.UnreadByte()
	}
}
