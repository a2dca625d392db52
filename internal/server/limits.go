package server

import (
	"io"
	"net/http"
	"time"
)

// idleBodies cuts request bodies that make no progress for idle: every
// read that returns data pushes the connection's read deadline forward, so
// a client that stops sending (or trickles a byte now and then slower
// than the deadline moves) gets a read error ("i/o timeout") instead of
// holding its request, its goroutine and, for an upload, its claim,
// forever. The handler sees the error like a broken connection: an upload
// keeps the bytes it received and can be resumed.
func idleBodies(next http.Handler, idle time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			if rc.SetReadDeadline(time.Now().Add(idle)) == nil {
				r.Body = &idleBody{ReadCloser: r.Body, rc: rc, idle: idle, set: time.Now()}
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
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	// Moving the deadline costs a timer update: do it at most a few
	// times per idle period, which keeps the bound within idle*9/8.
	if n > 0 {
		if now := time.Now(); now.Sub(b.set) > b.idle/8 {
			b.set = now
			b.rc.SetReadDeadline(now.Add(b.idle))
		}
	}
	return n, err
}
