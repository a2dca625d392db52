package scan

import (
	"context"
	"time"

	"github.com/berth-dev/berth/internal/meta"
)

// VulnData is the vulnerability database as the importer, the fetcher
// and the updater use it (meta.VulnDB).
type VulnData interface {
	ImportVulns(ctx context.Context, recs []meta.VulnRecord) ([]string, error)
	TouchVulnSource(ctx context.Context, ecosystem string) error
	VulnSources(ctx context.Context) ([]meta.VulnSource, error)
	PackageEcosystems(ctx context.Context) ([]string, error)
	CPEMappingState(ctx context.Context) (meta.CPEMappingSource, bool, error)
	ReplaceCPEMapping(ctx context.Context, mapping map[string][]string) ([]string, error)
	VulnDBFetchState(ctx context.Context) (live bool, ended time.Time, err error)
	EnqueueVulnDBFetch(ctx context.Context, since time.Time) (bool, error)
}
