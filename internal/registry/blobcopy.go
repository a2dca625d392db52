package registry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// pullBuffer is how much of the pooled buffer a buffered pull copies
// through at a time: 1 MiB, what was measured for this path.
const pullBuffer = 1 << 20

// sendBlob writes length bytes of a blob's stored bytes to the response.
//
// Two ways, chosen by the connection and the storage (measured in
// bench/README.md, "Performance (issue 17)" and "Through S3"):
//   - A file (the filesystem driver) to a peer on another machine: io.Copy
//     hands the *os.File to the connection's ReadFrom, which uses
//     sendfile(2): the bytes go from the page cache to the network card
//     without a copy through user space, about half the CPU per GB of a
//     buffered copy.
//   - Any other body (an S3 object's HTTP response) has no zero-copy path:
//     io.Copy would end in the connection's generic ReadFrom, which copies
//     through 32 KiB, two system calls per 32 KiB. The 1 MiB buffer below
//     reads what the storage connection holds at once and writes it in one
//     call: 0.75 to 0.94 s of CPU per GB pulled through S3 against 1.47 to
//     1.74 with io.Copy.
//   - On a loopback connection (a reverse proxy or a client on this host),
//     the receiver copies the bytes out of the socket on the same CPUs.
//     After sendfile it reads them from page-cache pages that are cold in
//     the CPU caches; after a copy through a 1 MiB buffer it reads the
//     skb the sender has just filled. The buffered copy is faster there
//     (1.2x to 2.8x on the bench's 2 cores, to a client that reads fast)
//     and far fewer writes than sendfile calls end in EAGAIN and a
//     goroutine wake-up. It costs more CPU than sendfile when the client
//     is the slow side (about twice, to a client that hashes as it reads).
//
// The buffer comes from the pool the upload path uses, so a buffered pull
// holds one (1.5 MiB, of which it uses pullBuffer) while it runs and nothing
// after.
//
// Both ways go out in pieces of at most sendPiece bytes, each under a
// write deadline of the request's send idle period (WithSendIdle, which
// the server sets from http.bodyIdleTimeout): a client that stops reading,
// or reads slower than a piece per period, has its download cut (a write
// error, "i/o timeout") instead of holding a goroutine, an open file or S3
// body and, for a buffered pull, a pooled buffer forever. Without a send
// idle period, or on a ResponseWriter that has no deadlines, nothing is
// cut.
func (reg *Registry) sendBlob(w http.ResponseWriter, r *http.Request, body io.Reader, length int64) (int64, error) {
	dl := sendDeadlines(w, r)
	var n int64
	var err error
	if f, file := body.(*os.File); file && !onLoopback(r) {
		n, err = sendFile(w, f, length, dl)
	} else {
		buf := reg.bufs.Get().(*[]byte)
		defer reg.bufs.Put(buf)
		// readerOnly hides WriteTo, and idleWriter has no ReadFrom, which
		// would take the sendfile path again.
		n, err = io.CopyBuffer(idleWriter{w, dl}, readerOnly{io.LimitReader(body, length)}, (*buf)[:pullBuffer])
	}
	if err != nil {
		return n, err
	}
	return n, dl.done()
}

// sendFile sends length bytes of f in pieces of sendPiece bytes. Each
// piece is an *io.LimitedReader directly over the file, the one wrapper
// the connection's ReadFrom looks through for sendfile.
func sendFile(w http.ResponseWriter, f *os.File, length int64, dl deadlines) (int64, error) {
	var sent int64
	for sent < length {
		piece := min(sendPiece, length-sent)
		dl.arm()
		k, err := io.Copy(w, &io.LimitedReader{R: f, N: piece})
		sent += k
		if err != nil || k < piece { // an error, or the file ended early
			return sent, err
		}
	}
	return sent, nil
}

// sendPiece is the most of a response body written under one write
// deadline: a download must deliver this much per send idle period (at the
// default 30 s, about 8.7 KB/s, a slow mobile link) or be cut. It is a
// quarter of the buffered copy's read, and for sendfile one ReadFrom of
// the connection (a deadline moved per 256 KiB: nothing next to sending
// them; a sendfile call moves about as much per socket buffer anyway).
const sendPiece = 256 << 10

type sendIdleKey struct{}

// WithSendIdle returns a context under which the registry cuts a response
// body (a blob, a manifest) that the client does not take: each piece of
// sendPiece bytes must be written within idle. The server sets it from
// http.bodyIdleTimeout for every GET, beside the read deadlines that cut
// stalled request bodies.
func WithSendIdle(ctx context.Context, idle time.Duration) context.Context {
	return context.WithValue(ctx, sendIdleKey{}, idle)
}

// deadlines moves a response's write deadline; the zero value moves
// nothing.
type deadlines struct {
	rc   *http.ResponseController
	idle time.Duration
}

// sendDeadlines returns the deadlines of the request's send idle period,
// with the first one set; none when the request has no such period or the
// ResponseWriter cannot set deadlines.
func sendDeadlines(w http.ResponseWriter, r *http.Request) deadlines {
	idle, _ := r.Context().Value(sendIdleKey{}).(time.Duration)
	if idle <= 0 {
		return deadlines{}
	}
	rc := http.NewResponseController(w)
	if rc.SetWriteDeadline(time.Now().Add(idle)) != nil {
		return deadlines{}
	}
	return deadlines{rc: rc, idle: idle}
}

// arm gives the next write the idle period from now.
func (d deadlines) arm() {
	if d.rc != nil {
		d.rc.SetWriteDeadline(time.Now().Add(d.idle))
	}
}

// done flushes what the response holds buffered under a deadline of its
// own, so the tail net/http would flush after the handler gets the idle
// period too (net/http removes the deadline after the response, before
// the connection's next request).
func (d deadlines) done() error {
	if d.rc == nil {
		return nil
	}
	d.arm()
	if err := d.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// idleWriter writes in pieces of at most sendPiece bytes, each under a
// fresh write deadline.
type idleWriter struct {
	w  io.Writer
	dl deadlines
}

func (iw idleWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(len(p), sendPiece)
		iw.dl.arm()
		n, err := iw.w.Write(p[:k])
		written += n
		if err != nil {
			return written, err
		}
		p = p[k:]
	}
	return written, nil
}

// onLoopback reports whether the request came in on a loopback address
// (or a socket that is not TCP). The local address is the one the
// connection was accepted on, so a rewritten RemoteAddr cannot change it.
func onLoopback(r *http.Request) bool {
	addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return true
	}
	return tcp.IP.IsLoopback()
}

type readerOnly struct{ io.Reader }
