package scan

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
)

// Stores are the parts of the metadata store the scanning service uses,
// one small interface each (internal/wire builds them).
type Stores struct {
	Results   Results
	Summaries Summaries
	Rematches Rematches
	Vulns     Vulns
	Manifests Manifests
	Blobs     Blobs
}

// Results are the scans of manifests (meta.Scans).
type Results interface {
	ManifestScan(ctx context.Context, digest string) (meta.ManifestScan, error)
	SaveScan(ctx context.Context, r meta.ScanResult, also ...func(context.Context, meta.Tx) error) error
	AppendEvents(ctx context.Context, evs []meta.Event) error
	LayerIndex(ctx context.Context, digest string) (meta.LayerIndexRow, error)
	ManifestHolders(ctx context.Context, digest string) ([]meta.ManifestHolder, error)
	EnqueueScan(ctx context.Context, repo, digest string) error
	QueueFirstScan(ctx context.Context, repo, digest string) error
	ManifestVulns(ctx context.Context, digest string) ([]meta.ScanVuln, error)
}

// Summaries read and backfill the coverage summaries stored beside the
// reports (Coverages; meta.Scans).
type Summaries interface {
	ScanSummaries(ctx context.Context, digests []string) (map[string]meta.ScanSummary, error)
	FillScanSummary(ctx context.Context, digest string, updatedAt time.Time, summary []byte) (bool, error)
}

// Rematches find and update the manifests an advisory or mapping change
// affects (meta.Scans).
type Rematches interface {
	CPEsOf(ctx context.Context, contentSets []string) (map[string][]string, error)
	ManifestsInEcosystem(ctx context.Context, ecosystem string) ([]string, error)
	ManifestsWithPackages(ctx context.Context, keys []meta.VulnKey) ([]meta.PackageHit, error)
	VulnsOfRecords(ctx context.Context, ids []string) (map[string][]meta.ScanVuln, error)
	ApplyRematch(ctx context.Context, ids []string, changes []meta.VulnChange) error
}

// Vulns are the imported advisories as matching reads them (meta.VulnDB).
type Vulns interface {
	VulnDBVersion(ctx context.Context) (int64, error)
	VulnSources(ctx context.Context) ([]meta.VulnSource, error)
	CPEMappingState(ctx context.Context) (meta.CPEMappingSource, bool, error)
	HasVulnEcosystem(ctx context.Context, ecosystem string) (bool, error)
	PackageEcosystems(ctx context.Context) ([]string, error)
	VulnRecordsFor(ctx context.Context, keys []meta.VulnKey) ([]meta.StoredVuln, error)
	VulnRecordsByID(ctx context.Context, ids []string) ([]meta.StoredVuln, error)
	VulnKeysOf(ctx context.Context, ids []string) ([]meta.VulnKey, error)
}

// Manifests read the scanned manifests and store the SBOM referrers
// (meta.Manifests).
type Manifests interface {
	GetManifest(ctx context.Context, repo, tag string, d digest.Digest, withContent bool) (meta.Manifest, error)
	ReferrerEntries(ctx context.Context, q meta.ReferrerQuery) ([]meta.ReferrerEntry, error)
	PutManifest(ctx context.Context, p meta.PutManifest) error
	PutManifestIn(ctx context.Context, tx meta.Tx, p meta.PutManifest) error
}

// Blobs store the SBOMs' blobs (meta.Blobs).
type Blobs interface {
	StoredBlob(ctx context.Context, d digest.Digest) (meta.Blob, error)
	StoreBlob(ctx context.Context, repo string, b meta.Blob, up meta.UploadClaim, w meta.Writer, bytes meta.BlobBytes) (bool, error)
	StoreBlobIn(ctx context.Context, tx meta.Tx, b meta.Blob, bytes meta.BlobBytes, early bool) (bool, error)
	UnplaceBlob(ctx context.Context, d digest.Digest, bytes meta.BlobBytes) error
}
