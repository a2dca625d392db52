package server

import (
	"io"
	"net/http"
	"time"

	"github.com/berth-dev/berth/internal/registry"
)

// minBodyProgress is the progress a request body must make within every
// idle period to keep its connection: a client that trickles a byte now
// and then is cut like one that stopped.
const minBodyProgress = 16 << 10

// idleBodies cuts request bodies that make too little progress: the
// connection's read deadline starts at idle from the first read and moves
// forward only once the body has delivered another minBodyProgress bytes,
// so a client that stops sending, or sends slower than minBodyProgress
// per idle period (about 550 B/s at the default 30 s), gets a read error
// ("i/o timeout") instead of holding its request, its goroutine and, for
// an upload, its claim, forever. The handler sees the error like a broken
// connection: an upload keeps the bytes it received and can be resumed.
// Once the body has ended, no deadline is left: the handler may take as
// long as it needs to answer.
//
// The same period bounds the other direction: a GET's context carries it
// (registry.WithSendIdle), and the registry writes a blob or a manifest in
// pieces, each under a write deadline of idle, so a client that stops
// reading a download is cut too.
func idleBodies(next http.Handler, idle time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			r = r.WithContext(registry.WithSendIdle(r.Context(), idle))
		}
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			now := time.Now()
			if rc.SetReadDeadline(now.Add(idle)) == nil {
				r.Body = &idleBody{ReadCloser: r.Body, rc: rc, idle: idle, set: now}
			}
		}
		next.ServeHTTP(w, r)
	})
}

type idleBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
	set  time.Time // when the deadline was last moved
	recv int64     // bytes received since then
	done bool      // the body ended: no deadline any more
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.done {
		return n, err
	}
	if err == io.EOF {
		// The whole body is in. net/http then reads the connection in the
		// background to notice a client that goes (clearing the read
		// deadline first): a deadline armed now would end that read as
		// if the client had gone, cancelling the context of a handler
		// that is still at work (finishing an upload of gigabytes, say).
		// No more deadlines, and none left behind.
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
		return n, err
	}
	b.recv += int64(n)
	// Moving the deadline costs a timer update: do it at most a few times
	// per idle period (a fast upload moves it every idle/8).
	if b.recv >= minBodyProgress {
		if now := time.Now(); now.Sub(b.set) > b.idle/8 {
			b.set, b.recv = now, 0
			b.rc.SetReadDeadline(now.Add(b.idle))
		}
	}
	return n, err
}
