package storage

import (
	"errors"
	"io"
	"sync"
	"time"
)

// ErrStalled is the cause of a download cut for delivering nothing.
var ErrStalled = errors.New("the upstream sent nothing for too long")

// StallReader reads R and calls Stalled once when no read returns within
// Idle of the one before (or of the first read starting): a remote that
// accepts a download and then sends nothing, or trickles, would otherwise
// hold its reader, and the job or request behind it, for ever. Stalled
// should cancel the context of the request whose body R is, which ends the
// blocked read. Stop releases the timer.
type StallReader struct {
	R       io.Reader
	Idle    time.Duration
	Stalled func()
	once    sync.Once
	timer   *time.Timer
}

// Read reads R, pushing the deadline back.
func (s *StallReader) Read(b []byte) (int, error) {
	s.once.Do(func() { s.timer = time.AfterFunc(s.Idle, s.Stalled) })
	if s.timer != nil { // nil once stopped
		s.timer.Reset(s.Idle)
	}
	return s.R.Read(b)
}

// Stop ends the watch; reads after it are not watched.
func (s *StallReader) Stop() {
	s.once.Do(func() {})
	if s.timer != nil {
		s.timer.Stop()
	}
}
