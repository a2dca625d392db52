package mem_test

import (
	"testing"

	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/mem"
	"github.com/berth-dev/berth/internal/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Driver { return mem.New() },
		func(t *testing.T, d storage.Driver) storage.Driver { return d.(*mem.Driver).Share() })
}
