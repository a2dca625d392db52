package notify

import (
	"context"
	"time"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
)

// Build is build, for tests: the delivery a job would send.
func (s *Service) Build(ctx context.Context, n meta.Notification, dj meta.DeliveryJob) (events.Delivery, error) {
	return s.build(ctx, n, dj)
}

// ErrPaused is errPaused, for tests.
var ErrPaused = errPaused

// SetClock sets the service's clock, for tests.
func (s *Service) SetClock(now func() time.Time) { s.now = now }
