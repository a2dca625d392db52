package meta_test

import (
	"testing"

	"github.com/berth-dev/berth/internal/storage"
)

// TestStoreBlobReplacesDamagedBytes: a file of the wrong size at a blob's
// address is no copy of the blob. Recorded or not, a store of the blob's
// verified bytes replaces it: the early placement (a link, which keeps a
// file already at the address) is checked by size too.
func TestStoreBlobReplacesDamagedBytes(t *testing.T) {
	forPlacement(t, func(t *testing.T, e *placeEnv) {
		damage := func() {
			t.Helper()
			if err := e.store.PutContent(e.ctx, storage.BlobPath(e.d), e.content[:len(e.content)/2]); err != nil {
				t.Fatal(err)
			}
		}
		damage() // not recorded yet: left over, say, from a crash
		if err := e.storeBlob(e.ctx, "org/app", storage.Staged(e.store, e.stage(), e.d)); err != nil {
			t.Fatal(err)
		}
		e.wantRow(true)
		e.wantBytes(true)
		damage() // recorded
		if err := e.storeBlob(e.ctx, "org/other", storage.Staged(e.store, e.stage(), e.d)); err != nil {
			t.Fatal(err)
		}
		e.wantBytes(true)
	})
}
