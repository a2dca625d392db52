package registry

import (
	"net/http"
	"time"
)

// IdleSends cuts the answers of next, as the registry cuts a blob's or a
// manifest's, when the client does not take them: under the request's
// send idle period (WithSendIdle, set for a GET), each piece of at most
// sendPiece bytes written must reach the connection within the period,
// or the write fails (the handler sees a broken connection and returns,
// releasing its goroutine and its answer). The first deadline is set at
// the first write, not before: the handler may take as long as it needs
// to compose its answer. For handlers that write their answers through
// Write (the API's JSON, the web UI's pages).
func IdleSends(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		idle, _ := r.Context().Value(sendIdleKey{}).(time.Duration)
		if idle <= 0 {
			next.ServeHTTP(w, r)
			return
		}
		iw := &idleResponse{ResponseWriter: w, dl: deadlines{rc: http.NewResponseController(w), idle: idle}}
		next.ServeHTTP(iw, r)
		if iw.wrote {
			// What net/http holds buffered goes out under a deadline too.
			iw.dl.done()
		}
	})
}

// idleResponse is a ResponseWriter whose Write goes in pieces, each under
// a fresh write deadline (idleWriter).
type idleResponse struct {
	http.ResponseWriter
	dl    deadlines
	wrote bool
}

func (w *idleResponse) Write(p []byte) (int, error) {
	w.wrote = true
	return idleWriter{w.ResponseWriter, w.dl}.Write(p)
}

// Unwrap is the ResponseWriter wrapped, for http.ResponseController.
func (w *idleResponse) Unwrap() http.ResponseWriter { return w.ResponseWriter }
