package registry

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"testing"
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
			n, err := reg.copyBody(dst, h, r)
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
	_, err := reg.copyBody(&out, sha256.New(), r)
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
		if _, err := reg.copyBody(io.Discard, sha256.New(), r); err != nil {
			b.Fatal(err)
		}
	}
}
