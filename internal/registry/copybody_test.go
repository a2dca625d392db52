package registry

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"
)

// trickle returns at most max bytes per Read, as a network body does.
type trickle struct {
	r   io.Reader
	max int
}

func (t *trickle) Read(p []byte) (int, error) {
	return t.r.Read(p[:min(len(p), t.max)])
}

// failAfter accepts limit bytes, then fails (a full disk, a lost claim).
type failAfter struct {
	buf   bytes.Buffer
	limit int
}

var errDiskFull = errors.New("disk full")

func (f *failAfter) Write(p []byte) (int, error) {
	room := f.limit - f.buf.Len()
	if room >= len(p) {
		return f.buf.Write(p)
	}
	f.buf.Write(p[:max(room, 0)])
	return max(room, 0), errDiskFull
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{7}).Read(b)
	return b
}

func TestCopyBodyHashesWhatItWrites(t *testing.T) {
	reg := New(Stores{}, nil, Options{})
	for _, tc := range []struct {
		name        string
		size, chunk int
		failAt      int // 0: the writer never fails
	}{
		{"empty", 0, 1 << 20, 0},
		{"small, one buffer", 20 << 10, 1 << 20, 0},
		{"slow trickle stays small", 300 << 10, 1000, 0},
		{"fast, pipelined", 7<<20 + 12345, 1 << 20, 0},
		{"fast, odd reads", 5<<20 + 1, 40 << 10, 0},
		{"write fails in the pipeline", 9 << 20, 64 << 10, 3<<20 + 777},
		{"write fails before it", 9 << 20, 64 << 10, 50 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := randomBytes(tc.size)
			var dst io.Writer
			var out *bytes.Buffer
			if tc.failAt > 0 {
				f := &failAfter{limit: tc.failAt}
				dst, out = f, &f.buf
			} else {
				out = &bytes.Buffer{}
				dst = out
			}
			r, _ := http.NewRequest(http.MethodPatch, "/", &trickle{bytes.NewReader(data), tc.chunk})
			r.ContentLength = int64(tc.size)
			h := sha256.New()
			n, err := reg.copyBody(dst, 0, h, r)
			if tc.failAt > 0 {
				if !errors.Is(err, errDiskFull) {
					t.Fatalf("err = %v, want the writer's error", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			// What was written is a prefix of the body, its count is
			// what copyBody says, and the hash state is that prefix's:
			// an upload resumes from exactly there.
			if int(n) != out.Len() || !bytes.Equal(out.Bytes(), data[:n]) {
				t.Fatalf("wrote %d bytes (reported %d), not the body's first bytes", out.Len(), n)
			}
			if want := sha256.Sum256(data[:n]); !bytes.Equal(h.Sum(nil), want[:]) {
				t.Fatalf("hash state is not the hash of the %d bytes written", n)
			}
		})
	}
}

func TestCopyBodyShortBody(t *testing.T) {
	reg := New(Stores{}, nil, Options{})
	data := randomBytes(3 << 20)
	r, _ := http.NewRequest(http.MethodPatch, "/", bytes.NewReader(data))
	r.ContentLength = int64(len(data)) + 10
	var out bytes.Buffer
	_, err := reg.copyBody(&out, 0, sha256.New(), r)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeSizeInvalid {
		t.Fatalf("err = %v, want SIZE_INVALID", err)
	}
}

// BenchmarkSHA256 is the single-core SHA-256 rate over 1 MiB buffers: the
// ceiling of a single-stream push, which hashes every byte once.
func BenchmarkSHA256(b *testing.B) {
	buf := make([]byte, 1<<20)
	h := sha256.New()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		h.Write(buf)
	}
}

// BenchmarkCopyBody streams 64 MiB from memory to io.Discard through
// copyBody: receiving, writing and hashing, without a network or a disk.
func BenchmarkCopyBody(b *testing.B) {
	reg := New(Stores{}, nil, Options{})
	data := randomBytes(64 << 20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		r, _ := http.NewRequest(http.MethodPatch, "/", &trickle{bytes.NewReader(data), 256 << 10})
		r.ContentLength = int64(len(data))
		if _, err := reg.copyBody(io.Discard, 0, sha256.New(), r); err != nil {
			b.Fatal(err)
		}
	}
}

// offsets records where in its file each write starts.
type offsets struct {
	at     int64
	starts []int64
	sizes  []int
	buf    bytes.Buffer
}

func (o *offsets) Write(p []byte) (int, error) {
	o.starts = append(o.starts, o.at)
	o.sizes = append(o.sizes, len(p))
	o.at += int64(len(p))
	return o.buf.Write(p)
}

// TestCopyBodyAlignsPipelinedWrites: resuming a file at an unaligned
// offset, the pipeline's first write ends at an aligned offset, so every
// later one starts at one (the filesystem driver's direct writes need
// that), and the bytes are the body's.
func TestCopyBodyAlignsPipelinedWrites(t *testing.T) {
	reg := New(Stores{}, nil, Options{})
	data := randomBytes(9<<20 + 333)
	for _, start := range []int64{0, 1000, 4096*3 + 1} {
		r, _ := http.NewRequest(http.MethodPatch, "/", &trickle{bytes.NewReader(data), 1 << 20})
		r.ContentLength = int64(len(data))
		o := &offsets{at: start}
		if _, err := reg.copyBody(o, start, sha256.New(), r); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(o.buf.Bytes(), data) {
			t.Fatalf("start %d: the bytes written are not the body", start)
		}
		pipelined, unaligned := 0, 0
		for i, s := range o.starts {
			if o.sizes[i] <= 32<<10 {
				continue // before the pipeline
			}
			if pipelined++; pipelined > 1 && s%pipelineAlign != 0 {
				unaligned++
			}
		}
		if pipelined < 10 || unaligned > 0 {
			t.Fatalf("start %d: %d pipelined writes, %d after the first at an unaligned offset", start, pipelined, unaligned)
		}
	}
}

// slowFail writes slowly, so that the pipeline's hasher runs ahead of it,
// and fails part-way through a write once limit bytes are reached.
type slowFail struct {
	failAfter
	delay time.Duration
}

func (s *slowFail) Write(p []byte) (int, error) {
	time.Sleep(s.delay)
	return s.failAfter.Write(p)
}

// TestCopyBodyHashRunsAheadOfAFailedWrite: the hasher does not wait for
// the writer, so when a write fails it has hashed bytes that never
// reached storage; the hash state copyBody leaves must still be that of
// exactly the bytes written, or a resumed upload would get a wrong digest.
func TestCopyBodyHashRunsAheadOfAFailedWrite(t *testing.T) {
	reg := New(Stores{}, nil, Options{})
	data := randomBytes(12 << 20)
	for _, limit := range []int{2<<20 + 4097, 5 << 20, 9<<20 + 1} {
		w := &slowFail{failAfter{limit: limit}, 20 * time.Millisecond}
		r, _ := http.NewRequest(http.MethodPatch, "/", bytes.NewReader(data))
		r.ContentLength = int64(len(data))
		h := sha256.New()
		n, err := reg.copyBody(w, 0, h, r)
		if !errors.Is(err, errDiskFull) {
			t.Fatalf("limit %d: err = %v, want the writer's error", limit, err)
		}
		if int(n) != limit || !bytes.Equal(w.buf.Bytes(), data[:n]) {
			t.Fatalf("limit %d: wrote %d bytes (reported %d)", limit, w.buf.Len(), n)
		}
		if want := sha256.Sum256(data[:n]); !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatalf("limit %d: the hash state is not that of the %d bytes written", limit, n)
		}
	}
}

// TestCopyBodyPlainHash: a hash whose state cannot be recorded is not
// pipelined (copyPipelined could not take back bytes it hashed ahead of a
// failed write), and still hashes what was written.
func TestCopyBodyPlainHash(t *testing.T) {
	reg := New(Stores{}, nil, Options{})
	data := randomBytes(6 << 20)
	r, _ := http.NewRequest(http.MethodPatch, "/", bytes.NewReader(data))
	r.ContentLength = int64(len(data))
	o := &offsets{}
	h := struct{ hash.Hash }{sha256.New()}
	if _, err := reg.copyBody(o, 0, h, r); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(o.buf.Bytes(), data) {
		t.Fatal("the bytes written are not the body")
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("the hash is not the body's")
	}
	for i, n := range o.sizes {
		if n > 32<<10 {
			t.Fatalf("write %d has %d bytes: pipelined with a hash whose state cannot be restored", i, n)
		}
	}
}

// alternating returns a full read of p, then one byte, in turn: a body
// that fills copyBody's small buffer now and then, never several times
// in a row.
type alternating struct {
	r     io.Reader
	short bool
}

func (a *alternating) Read(p []byte) (int, error) {
	if a.short = !a.short; a.short {
		p = p[:min(len(p), 1)]
	}
	n, err := io.ReadFull(a.r, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

// TestCopyBodyPipelinesOnlyFullReadsInARow: a body whose reads fill the
// small buffer only now and then, with short reads between them, stays
// on the small buffer, as copyBody says ("several reads in a row"). The
// count of full reads was never reset, so the fourth full read of any
// upload of more than 128 KiB took the pooled 1.5 MiB buffer.
func TestCopyBodyPipelinesOnlyFullReadsInARow(t *testing.T) {
	reg := New(Stores{}, nil, Options{})
	data := randomBytes(2 << 20)
	r, _ := http.NewRequest(http.MethodPatch, "/", &alternating{r: bytes.NewReader(data)})
	r.ContentLength = int64(len(data))
	o := &offsets{}
	h := sha256.New()
	if _, err := reg.copyBody(o, 0, h, r); err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(o.buf.Bytes(), data) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("the bytes written, or their hash, are not the body's")
	}
	for i, n := range o.sizes {
		if n > 32<<10 {
			t.Fatalf("write %d has %d bytes: pipelined although no two reads in a row filled the buffer", i, n)
		}
	}
}
