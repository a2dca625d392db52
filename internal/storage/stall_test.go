package storage_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/storage"
)

// blocking reads its data, then blocks until ctx ends (a remote that
// stops sending).
type blocking struct {
	ctx  context.Context
	data io.Reader
}

func (b *blocking) Read(p []byte) (int, error) {
	if n, err := b.data.Read(p); err != io.EOF {
		return n, err
	}
	<-b.ctx.Done()
	return 0, context.Cause(b.ctx)
}

// TestStallReader: a source that stops sending is cut after the idle
// bound, with ErrStalled; one that keeps sending is not.
func TestStallReader(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	r := &storage.StallReader{R: &blocking{ctx: ctx, data: strings.NewReader("some bytes")}, Idle: 100 * time.Millisecond,
		Stalled: func() { cancel(storage.ErrStalled) }}
	defer r.Stop()
	began := time.Now()
	b, err := io.ReadAll(r)
	if string(b) != "some bytes" || !errors.Is(err, storage.ErrStalled) {
		t.Fatalf("read %q, %v; want the bytes, then ErrStalled", b, err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("cut after %s", took)
	}

	ok := &storage.StallReader{R: strings.NewReader(strings.Repeat("x", 1<<20)), Idle: time.Hour, Stalled: func() { t.Error("stalled") }}
	if n, err := io.Copy(io.Discard, ok); n != 1<<20 || err != nil {
		t.Fatalf("copy %d, %v", n, err)
	}
	ok.Stop()
}

// TestStallReaderStoppedFirst: a reader stopped before its first read
// reads unwatched (it panicked on the missing timer).
func TestStallReaderStoppedFirst(t *testing.T) {
	r := &storage.StallReader{R: strings.NewReader("x"), Idle: time.Millisecond, Stalled: func() { t.Error("stalled") }}
	r.Stop()
	if b, err := io.ReadAll(r); string(b) != "x" || err != nil {
		t.Fatalf("read %q, %v", b, err)
	}
}

// TestStallReaderWatchesOnlyReads: the time a caller spends between reads
// (writing what it read) and after the end (committing, a server-side
// copy of a large blob) is not the remote's: the reader is not cut for
// it. Before, a fetch whose storage took longer than the idle bound after
// the last byte was cancelled, and a large layer could never be cached.
func TestStallReaderWatchesOnlyReads(t *testing.T) {
	const idle = 50 * time.Millisecond
	stalled := make(chan struct{}, 1)
	r := &storage.StallReader{R: strings.NewReader("abcdef"), Idle: idle, Stalled: func() { stalled <- struct{}{} }}
	defer r.Stop()
	b := make([]byte, 2)
	for {
		_, err := r.Read(b)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * idle) // slow storage between reads
	}
	time.Sleep(3 * idle) // committing after the end
	select {
	case <-stalled:
		t.Fatal("cut for time spent outside its reads")
	default:
	}
}
