package registry

import (
	"encoding"
	"fmt"
	"hash"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/berth-dev/berth/internal/storage"
)

// copyBody streams the request body into fw, whose file has start bytes
// already, hashing it once on the way. It checks Content-Length when the
// client gave one.
//
// It starts with a small buffer, on the request's goroutine, and moves to
// a pipeline over one pooled 1.5 MiB buffer only once the body fills the small
// one several reads in a row: a fast upload gets large writes and its
// receiving, writing and hashing overlap, while a slow client or a small
// chunk holds 32 KiB, not megabytes (200 trickling uploads held 200 MiB of
// buffers when every upload took a large one).
func (reg *Registry) copyBody(fw io.Writer, start int64, h hash.Hash, r *http.Request) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	full := 0
	// The pipeline records and restores the hash's state; the standard
	// library's SHA-2 hashes allow it, and any other hash is not pipelined.
	ph, pipelined := h.(pipelineHash)
	for {
		k, rerr := r.Body.Read(buf)
		if k > 0 {
			w, werr := fw.Write(buf[:k])
			h.Write(buf[:w])
			n += int64(w)
			if werr == nil && w < k {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return n, fmt.Errorf("receive upload body: %w", werr)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return n, fmt.Errorf("receive upload body: %w", rerr)
		}
		if k < len(buf) {
			full = 0 // in a row: a short read starts the count again
			continue
		}
		if full++; full == 4 && pipelined {
			m, err := reg.copyPipelined(fw, start+n, ph, r.Body)
			n += m
			if err != nil {
				return n, err
			}
			break
		}
	}
	if r.ContentLength >= 0 && n != r.ContentLength {
		return n, errorf(http.StatusBadRequest, CodeSizeInvalid, fmt.Sprintf("received %d bytes, Content-Length said %d", n, r.ContentLength), nil)
	}
	return n, nil
}

// pipelineDepth is how many parts of pipelinePart bytes the pipeline's
// pooled buffer holds: one being received, one being written, one being
// hashed. A fast upload holds 1.5 MiB, whatever its size. Against four
// parts of 256 KiB (1 MiB), parts of 512 KiB make half the write system
// calls (and, with the filesystem driver's direct writes, half the device
// requests): a 1 GiB push went from 440-510 to 590-690 MB/s here, for
// 1.73-2.02 s of CPU per GB instead of 2.38-2.54. A fourth part of 512 KiB
// added nothing measurable and 10 MiB of peak memory with 10 streams; two
// parts (1 MiB) gave 5 % less.
const (
	pipelineDepth = 3
	pipelinePart  = 512 << 10
)

// chunk is a filled part of the buffer passed down the pipeline.
type chunk struct {
	part int // the part's index in the buffer
	n    int
}

// pipelineAlign is the file offset the pipeline's writes start at a
// multiple of, after its first: the filesystem driver writes an aligned
// run from an aligned buffer straight to the device (fs's direct writes),
// and copies it through a bounce buffer otherwise.
const pipelineAlign = 4096

// copyPipelined copies body to dst, whose file has start bytes already,
// and to h, in stages that overlap: this goroutine receives into one part
// of the buffer while a writer goroutine writes an earlier part to
// storage and a hasher goroutine hashes one; a part is received into
// again once both are done with it. Writing and hashing do not wait for
// each other, so the hash, the heaviest stage, never waits for the
// device.
//
// Every byte is still hashed once, in order, and on any error h holds
// exactly the bytes that reached dst, so the upload can resume from its
// saved hash state: the hasher records h's state before each part, and
// when a write fails, h goes back to the state before the failed part and
// takes the bytes of it that were written. No goroutine outlives the
// call, and nothing but the buffers is held.
func (reg *Registry) copyPipelined(dst io.Writer, start int64, h pipelineHash, body io.Reader) (int64, error) {
	pooled := reg.bufs.Get().(*[]byte)
	defer reg.bufs.Put(pooled)
	size := len(*pooled) / pipelineDepth
	var parts [pipelineDepth][]byte
	var refs [pipelineDepth]atomic.Int32
	var states [pipelineDepth][]byte // h's state before the part's bytes
	free := make(chan int, pipelineDepth)
	for i := range pipelineDepth {
		parts[i] = (*pooled)[i*size : (i+1)*size : (i+1)*size]
		free <- i
	}
	release := func(c chunk) {
		if refs[c.part].Add(-1) == 0 {
			free <- c.part
		}
	}
	toWrite := make(chan chunk, pipelineDepth)
	toHash := make(chan chunk, pipelineDepth)
	failed := make(chan struct{}) // closed when a write fails
	// Owned by the writer until wrote is closed.
	var (
		written int64
		werr    error
		lost    chunk // the part whose write failed, and how much of it reached dst
	)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for c := range toWrite {
			if werr != nil {
				release(c) // draining after a failed write
				continue
			}
			w, err := dst.Write(parts[c.part][:c.n])
			if err == nil && w < c.n {
				err = io.ErrShortWrite
			}
			written += int64(w)
			if err != nil {
				// The part stays held, so its recorded state stays.
				werr, lost = err, chunk{c.part, w}
				close(failed)
				continue
			}
			release(c)
		}
	}()
	var herr error // owned by the hasher until hashed is closed
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for c := range toHash {
			if herr == nil {
				states[c.part], herr = h.AppendBinary(states[c.part][:0])
				h.Write(parts[c.part][:c.n])
			}
			release(c)
		}
	}()
	var rerr error
receive:
	for {
		var i int
		select {
		case i = <-free:
		case <-failed:
			break receive
		}
		b := parts[i]
		if r := int(start % pipelineAlign); r != 0 {
			// The first part ends at an aligned offset, so the parts after
			// it start at one.
			b, start = b[:len(b)-r], 0
		}
		k, err := storage.Fill(body, b)
		if k > 0 {
			refs[i].Store(2)
			toWrite <- chunk{i, k}
			toHash <- chunk{i, k}
		} else {
			free <- i
		}
		if err != nil {
			if err != io.EOF {
				rerr = err
			}
			break
		}
	}
	close(toWrite)
	close(toHash)
	<-wrote
	<-hashed // both are done: the buffer may go back to the pool
	switch {
	case herr != nil:
		return written, fmt.Errorf("receive upload body: record the hash state: %w", herr)
	case werr != nil:
		// h took the failed part, and maybe more: back to the state before
		// that part, then the part's bytes that reached dst.
		if err := h.UnmarshalBinary(states[lost.part]); err != nil {
			return written, fmt.Errorf("receive upload body: restore the hash state: %w", err)
		}
		h.Write(parts[lost.part][:lost.n])
		return written, fmt.Errorf("receive upload body: %w", werr)
	case rerr != nil:
		return written, fmt.Errorf("receive upload body: %w", rerr)
	}
	return written, nil
}

// pipelineHash is a hash whose state can be recorded and restored, as the
// standard library's SHA-2 hashes' can (copyPipelined).
type pipelineHash interface {
	hash.Hash
	encoding.BinaryAppender
	encoding.BinaryUnmarshaler
}
