package storage

import (
	"errors"
	"io"
	"sync"
	"time"
)

// ErrStalled is the cause of a download cut for delivering nothing.
var ErrStalled = errors.New("the upstream sent nothing for too long")

// StallReader reads R and calls Stalled once when a read does not return
// within Idle: a remote that accepts a download and then sends nothing,
// or trickles, would otherwise hold its reader, and the job or request
// behind it, for ever. Only the time spent in reads counts: what the
// caller does between them (writing to storage) and after the end (a
// commit, a server-side copy) is not the remote's. Stalled should cancel
// the context of the request whose body R is, which ends the blocked
// read. Stop releases the timer; a read that returns an error (io.EOF
// included) stops the watch too.
type StallReader struct {
	R       io.Reader
	Idle    time.Duration
	Stalled func()
	mu      sync.Mutex
	timer   *time.Timer
	done    bool
}

// Read reads R under the deadline.
func (s *StallReader) Read(b []byte) (int, error) {
	s.mu.Lock()
	if !s.done {
		if s.timer == nil {
			s.timer = time.AfterFunc(s.Idle, s.Stalled)
		} else {
			s.timer.Reset(s.Idle)
		}
	}
	s.mu.Unlock()
	n, err := s.R.Read(b)
	s.mu.Lock()
	if s.timer != nil {
		s.timer.Stop()
	}
	if err != nil {
		s.done = true
	}
	s.mu.Unlock()
	return n, err
}

// Stop ends the watch; reads after it are not watched.
func (s *StallReader) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	if s.timer != nil {
		s.timer.Stop()
	}
}
