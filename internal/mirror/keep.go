package mirror

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/oci"
)

// defaultRenew is how often a copy confirms what it holds when the
// copier was not told garbage collection's delay (WithGCDelay): enough
// for a delay of a few minutes and more (the default is an hour).
const defaultRenew = time.Minute

// keeper keeps, while one copy runs, what the copy stored or found in
// its repository and no manifest stored there references yet (the
// config and layers of the image being copied, the children of the index
// being copied, stored untagged) from garbage collection: a copy opens
// no upload session, and each link or child would otherwise be
// collectable gc.delay after it was stored, long before a slow copy
// stores the manifest that references it. It confirms each as a client's
// HEAD does (meta.Blobs.TouchBlobLink, meta.Manifests.ConfirmManifest)
// when the copy finds it already there, and again every renewal while the
// copy runs; what a stored manifest references is released. What a pass
// takes all the same (a link first made longer ago than gc.uploadExpiry,
// a copy paused longer than the delay) the copy fetches again once
// (ingest.Fetch).
type keeper struct {
	db    Stores
	repo  string
	every time.Duration
	log   *slog.Logger

	mu   sync.Mutex
	held map[digest.Digest]heldRef

	stop chan struct{}
	done chan struct{}
}

// heldRef is one thing a keeper holds: a manifest or a blob link, and
// when the copy last stored or confirmed it.
type heldRef struct {
	manifest bool
	at       time.Time
}

func newKeeper(db Stores, repo string, every time.Duration, log *slog.Logger) *keeper {
	return &keeper{db: db, repo: repo, every: every, log: log, held: map[digest.Digest]heldRef{}}
}

// start renews what the keeper holds, every half renewal, until end or
// ctx ends.
func (k *keeper) start(ctx context.Context) {
	if k.every <= 0 {
		return
	}
	k.stop, k.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(k.done)
		t := time.NewTicker(k.every / 2)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-k.stop:
				return
			case <-t.C:
				k.renew(ctx)
			}
		}
	}()
}

// end stops the renewals and waits for them.
func (k *keeper) end() {
	if k.stop == nil {
		return
	}
	close(k.stop)
	<-k.done
	k.stop = nil
}

// hold records that the copy just stored d in the repository (a blob
// link, or a manifest no stored manifest references).
func (k *keeper) hold(d digest.Digest, manifest bool) {
	k.mu.Lock()
	k.held[d] = heldRef{manifest: manifest, at: time.Now()}
	k.mu.Unlock()
}

// release forgets what a manifest just stored references: the manifest
// keeps it.
func (k *keeper) release(refs []oci.Ref) {
	k.mu.Lock()
	for _, r := range refs {
		delete(k.held, r.Digest)
	}
	k.mu.Unlock()
}

// confirm confirms something the copy found in the repository, unless it
// was stored or confirmed in the last half renewal, and holds it. It
// reports false if it is gone (collected since it was found).
func (k *keeper) confirm(ctx context.Context, d digest.Digest, manifest bool) (bool, error) {
	ok, err := k.touch(ctx, d, manifest, time.Now().Add(-k.every/2))
	if ok {
		k.hold(d, manifest)
	}
	return ok, err
}

// touch confirms a link or a manifest of the repository stored or
// confirmed before stale, reporting whether it is still there.
func (k *keeper) touch(ctx context.Context, d digest.Digest, manifest bool, stale time.Time) (bool, error) {
	if manifest {
		return k.db.Manifests.ConfirmManifest(ctx, k.repo, d, stale)
	}
	return k.db.Blobs.TouchBlobLink(ctx, k.repo, d, stale)
}

// renew confirms what the keeper holds and the copy stored or confirmed
// half a renewal ago or more. What is gone is forgotten (the store of
// the manifest that needs it fetches it again); an error is logged, and
// the next renewal tries again.
func (k *keeper) renew(ctx context.Context) {
	due := time.Now().Add(-k.every / 2)
	k.mu.Lock()
	var ds []digest.Digest
	var kinds []bool
	for d, h := range k.held {
		if !h.at.After(due) {
			ds, kinds = append(ds, d), append(kinds, h.manifest)
		}
	}
	k.mu.Unlock()
	for i, d := range ds {
		now := time.Now()
		ok, err := k.touch(ctx, d, kinds[i], now)
		if err != nil {
			if ctx.Err() == nil {
				k.log.Warn("copy: confirm what the copy holds", "repository", k.repo, "digest", d.String(), "err", err)
			}
			continue
		}
		k.mu.Lock()
		switch h, held := k.held[d]; {
		case !held: // released meanwhile: a stored manifest keeps it
		case ok:
			h.at = now
			k.held[d] = h
		default:
			delete(k.held, d)
		}
		k.mu.Unlock()
		if !ok {
			k.log.Info("copy: garbage collection took what the copy holds; it is fetched again", "repository", k.repo, "digest", d.String())
		}
	}
}
