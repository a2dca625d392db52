package fs_test

import (
	"testing"

	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/storage/storagetest"
)

func TestConformance(t *testing.T) {
	for _, fsync := range []bool{false, true} {
		name := "nofsync"
		if fsync {
			name = "fsync"
		}
		t.Run(name, func(t *testing.T) {
			storagetest.Run(t, func(t *testing.T) storage.Driver {
				d, err := fs.New(t.TempDir(), fs.Options{Fsync: fsync})
				if err != nil {
					t.Fatal(err)
				}
				return d
			})
		})
	}
}
