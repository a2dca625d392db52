package notify

import (
	"context"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
)

// Build is build, for tests: the delivery a job would send.
func (s *Service) Build(ctx context.Context, n meta.Notification, dj meta.DeliveryJob) (events.Delivery, error) {
	return s.build(ctx, n, dj)
}
