package mirror_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
)

// TestCopyIntoADeletedRepositoryMakesNothing: an import whose repository
// (made by the API before the copy) was deleted, with its organization,
// while the copy ran, fails and brings neither back. Before, its writes
// made the repository again, in a new organization without owners.
func TestCopyIntoADeletedRepositoryMakesNothing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	f.pushUpstream(t, "library/img:1", nil, img)
	_, _, err = f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/img:1", Username: "up", Password: "secret",
		Insecure: true, Repo: "gone/app", Tags: []string{"1"}, Create: &meta.RepoCreate{MustExist: true}})
	if !errors.Is(err, meta.ErrRepositoryNotFound) {
		t.Fatalf("import into a repository that no longer exists: %v, want ErrRepositoryNotFound", err)
	}
	if ri, err := f.db.Repositories().Repository(ctx, "gone/app"); err != nil || ri.Exists {
		t.Fatalf("the import made the deleted repository again: %+v %v", ri, err)
	}
	if ns, err := f.db.Users().NamespaceByName(ctx, "gone"); err == nil {
		t.Fatalf("the import made the deleted organization again: %+v", ns)
	}
}
