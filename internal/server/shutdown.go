package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/jobs"
)

// Graceful shutdown (SIGTERM), in order:
//  1. /readyz answers 503 so that load balancers stop sending requests;
//     the server keeps serving for http.shutdownDelay meanwhile.
//  2. The listener closes; in-flight requests get http.shutdownTimeout to
//     finish. At the same time the background workers stop: their
//     handlers are cancelled and their jobs go back to the queue, ready at
//     once (the job worker's "interrupted" outcome).
//  3. Requests still running then have their connections closed. An
//     upload cut this way takes the path of any broken connection: what it
//     received is recorded and its claim released, so the client resumes
//     on another replica at once. Handlers get handlerGrace to do that.
//  4. Jobs whose handlers have still not returned have their leases ended,
//     so that other replicas take them over now rather than after a lease.

// handlerGrace is how long shutdown waits for the handlers of requests
// whose connections it closed to record what they did.
const handlerGrace = 10 * time.Second

// inFlight counts the requests being handled.
type inFlight struct{ n atomic.Int64 }

func (f *inFlight) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.n.Add(1)
		defer f.n.Add(-1)
		h.ServeHTTP(w, r)
	})
}

// wait waits until no request is being handled, at most d, and reports
// whether none is.
func (f *inFlight) wait(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for f.n.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// shutdown stops the server as described above once ctx is done; errc
// receives srv.Serve's result.
func (s *Server) shutdown(ctx context.Context, srv *http.Server, errc <-chan error, flight *inFlight, stopBG func(), bg *sync.WaitGroup) error {
	s.draining.Store(true)
	if d := s.cfg.HTTP.ShutdownDelay; d > 0 {
		s.log.Info("shutting down: not ready any more, still serving for http.shutdownDelay", "delay", d)
		time.Sleep(d)
	}
	s.log.Info("shutting down: finishing in-flight requests", "timeout", s.cfg.HTTP.ShutdownTimeout)
	bgDone := make(chan struct{})
	go func() {
		defer close(bgDone)
		s.stopBackground(stopBG, bg, s.cfg.HTTP.ShutdownTimeout)
	}()
	defer func() { <-bgDone }()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.HTTP.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("requests still running at http.shutdownTimeout are cut (uploads keep what they received)", "requests", flight.n.Load())
		err = srv.Close()
		if !flight.wait(handlerGrace) {
			s.log.Warn("handlers still running after their connections closed; their upload claims end with their leases", "requests", flight.n.Load())
		}
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// stopBackground cancels the background workers and waits for them, at
// most d; the leases of jobs whose handlers are still running then are
// ended so that other replicas take them over at once.
func (s *Server) stopBackground(stop func(), wg *sync.WaitGroup, d time.Duration) {
	stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(d):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := s.db.Jobs().ExpireLeasesOf(ctx, jobs.ProcessOwnerPrefix())
	if err != nil {
		s.log.Error("release the leases of jobs still running at shutdown", "err", err)
		return
	}
	s.log.Warn("job handlers still running at shutdown; their jobs were handed back to the queue", "jobs", n)
}
