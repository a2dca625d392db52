package registry

import (
	"io"
	"net"
	"net/http"
	"os"
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
func (reg *Registry) sendBlob(w http.ResponseWriter, r *http.Request, body io.Reader, length int64) (int64, error) {
	src := io.LimitReader(body, length)
	if _, file := body.(*os.File); file && !onLoopback(r) {
		return io.Copy(w, src)
	}
	buf := reg.bufs.Get().(*[]byte)
	defer reg.bufs.Put(buf)
	// The wrappers hide ReadFrom and WriteTo, which would take the
	// sendfile path again.
	return io.CopyBuffer(writerOnly{w}, readerOnly{src}, (*buf)[:pullBuffer])
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

type writerOnly struct{ io.Writer }

type readerOnly struct{ io.Reader }
