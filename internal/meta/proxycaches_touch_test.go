package meta_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestTouchProxyTagOfMissingRepository: recording a check of a cached
// tag in a repository that does not exist (deleted meanwhile) is
// ErrRepositoryNotFound, not database/sql's ErrNoRows.
func TestTouchProxyTagOfMissingRepository(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			db := metatest.Open(t, dialect)
			err := db.ProxyCaches().TouchProxyTag(context.Background(), "hub/library/gone", "latest", digest.FromString("m"), time.Now())
			if !errors.Is(err, meta.ErrRepositoryNotFound) {
				t.Fatalf("TouchProxyTag of a missing repository = %v, want ErrRepositoryNotFound", err)
			}
		})
	}
}
