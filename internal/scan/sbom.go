package scan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage"
)

// SBOMAnnotation marks the SBOM referrers Berth computed (value "spdx"),
// for clients. The SBOM goes with its image because it is stored
// DeletedWithSubject, not because of this annotation.
const SBOMAnnotation = "dev.berth.sbom"

// attachSBOM stores the report as an SPDX 2.3 document referring to the
// image, unless the repository already holds Berth's SBOM for it. It goes
// in like any push: blobs linked to the repository, then the manifest with
// its subject, so that the referrers API, oras discover and any client
// find it. A new scan stores its SBOM with its result instead, in one
// transaction (storeIn); this is for a scan known already, and for
// when that transaction failed.
func (s *Service) attachSBOM(ctx context.Context, repo string, img meta.Manifest, rep *Report) error {
	sb, err := s.prepareSBOM(ctx, repo, img, rep)
	if err != nil || sb == nil {
		return err
	}
	for _, b := range sb.blobs {
		if _, err := s.stores.Blobs.StoreBlob(ctx, "", b.blob, meta.UploadClaim{}, meta.Writer{}, b.bytes); err != nil {
			return err
		}
	}
	return s.stores.Manifests.PutManifest(ctx, sb.put)
}

// sbom is an SBOM ready to be stored: its blobs not stored yet, and the
// push of its manifest.
type sbom struct {
	blobs []sbomBlob
	put   meta.PutManifest
}

type sbomBlob struct {
	blob  meta.Blob
	bytes storage.Placement
	early bool // placed at its address before the transaction
}

// prepareSBOM builds the SBOM of the image from the report, or returns nil
// if the repository already holds Berth's SBOM for it (one its scanner
// stored, whatever clients pushed with dev.berth.sbom).
func (s *Service) prepareSBOM(ctx context.Context, repo string, img meta.Manifest, rep *Report) (*sbom, error) {
	// Berth's SBOM is the one its scanner stored to go with its subject
	// (meta.ReferrerEntry.BerthSBOM): a client's referrer carrying the
	// annotation, or one copied from another registry, is not.
	existing, err := s.stores.Manifests.ReferrerEntries(ctx, meta.ReferrerQuery{Repository: repo, Subject: img.Digest, ArtifactType: oci.MediaTypeSPDX})
	if err != nil {
		return nil, err
	}
	for _, r := range existing {
		if r.BerthSBOM {
			return nil, nil
		}
	}
	created := time.Now().UTC().Format(time.RFC3339)
	doc, err := spdxDocument(s.opts.Host, s.opts.Version, repo, img.Digest, rep, created)
	if err != nil {
		return nil, err
	}
	docDigest := digest.FromBytes(doc)
	sb := &sbom{}
	var blobs []meta.Blob
	for _, b := range []struct {
		d       digest.Digest
		content []byte
	}{{oci.EmptyJSONDigest, oci.EmptyJSON}, {docDigest, doc}} {
		blob := meta.Blob{Digest: b.d, Size: int64(len(b.content))}
		// The empty config is shared by every SBOM: written once.
		if _, err := s.stores.Blobs.StoredBlob(ctx, b.d); err != nil {
			if !errors.Is(err, meta.ErrNotFound) {
				return nil, err
			}
			sb.blobs = append(sb.blobs, sbomBlob{blob: blob, bytes: storage.Content(s.driver, b.content, b.d)})
		}
		blobs = append(blobs, blob)
	}
	man := map[string]any{
		"schemaVersion": 2,
		"mediaType":     oci.MediaTypeImageManifest,
		"artifactType":  oci.MediaTypeSPDX,
		"config":        map[string]any{"mediaType": oci.MediaTypeEmptyJSON, "digest": oci.EmptyJSONDigest, "size": 2, "data": "e30="},
		"layers": []map[string]any{{
			"mediaType": oci.MediaTypeSPDX, "digest": docDigest, "size": len(doc),
			"annotations": map[string]string{"org.opencontainers.image.title": "sbom.spdx.json"},
		}},
		"subject": map[string]any{"mediaType": img.MediaType, "digest": img.Digest, "size": img.Size},
		"annotations": map[string]string{
			"org.opencontainers.image.created": created,
			SBOMAnnotation:                     "spdx",
		},
	}
	content, err := json.Marshal(man)
	if err != nil {
		return nil, fmt.Errorf("encode SBOM manifest: %w", err)
	}
	sb.put = meta.PutManifest{
		Repository: repo,
		Manifest: meta.Manifest{Digest: digest.FromBytes(content), MediaType: oci.MediaTypeImageManifest, ArtifactType: oci.MediaTypeSPDX,
			Size: int64(len(content)), Content: content, Subject: img.Digest,
			Annotations: map[string]string{"org.opencontainers.image.created": created, SBOMAnnotation: "spdx"}},
		Refs:      []meta.Ref{{Digest: oci.EmptyJSONDigest}, {Digest: docDigest}},
		LinkBlobs: blobs,
		Actor:     Actor,
		Generated: true,
		// Berth's SBOM goes with its image (a client's stays).
		DeletedWithSubject: true,
	}
	return sb, nil
}

// place writes the SBOM's new blobs to their addresses, before the
// transaction that records them (storeIn), as meta.StoreBlob does.
func (sb *sbom) place(ctx context.Context) error {
	for i := range sb.blobs {
		b := &sb.blobs[i]
		early, err := b.bytes.PlaceEarly(ctx)
		if err != nil {
			return fmt.Errorf("place SBOM blob %s: %w", b.blob.Digest, err)
		}
		b.early = early
	}
	return nil
}

// storeIn records the SBOM's blobs and pushes its manifest in tx (the
// scan's SaveScan): the result and its SBOM commit together, one write
// instead of three.
func (s *Service) storeIn(sb *sbom) func(context.Context, meta.Tx) error {
	return func(ctx context.Context, tx meta.Tx) error {
		for _, b := range sb.blobs {
			if _, err := s.stores.Blobs.StoreBlobIn(ctx, tx, b.blob, b.bytes, b.early); err != nil {
				return err
			}
		}
		return s.stores.Manifests.PutManifestIn(ctx, tx, sb.put)
	}
}

// unplace deletes what place wrote, after storeIn's transaction failed
// (each blob's bytes stay if a concurrent store recorded it meanwhile).
func (s *Service) unplace(ctx context.Context, sb *sbom) error {
	var errs []error
	for _, b := range sb.blobs {
		if b.early {
			errs = append(errs, s.stores.Blobs.UnplaceBlob(ctx, b.blob.Digest, b.bytes))
		}
	}
	return errors.Join(errs...)
}

type spdxDoc struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreation       `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreation struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	Name             string        `json:"name"`
	SPDXID           string        `json:"SPDXID"`
	VersionInfo      string        `json:"versionInfo,omitempty"`
	DownloadLocation string        `json:"downloadLocation"`
	FilesAnalyzed    bool          `json:"filesAnalyzed"`
	SourceInfo       string        `json:"sourceInfo,omitempty"`
	PrimaryPurpose   string        `json:"primaryPackagePurpose,omitempty"`
	ExternalRefs     []spdxExtRef  `json:"externalRefs,omitempty"`
	Annotations      []spdxComment `json:"annotations,omitempty"`
}

type spdxExtRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

type spdxComment struct {
	Annotator string `json:"annotator"`
	Date      string `json:"annotationDate"`
	Type      string `json:"annotationType"`
	Comment   string `json:"comment"`
}

type spdxRelationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

// spdxDocument renders a report as SPDX 2.3 JSON: the image as the
// described package, containing one package per package found, each with
// its purl and the layer that added it.
func spdxDocument(host, version, repo string, d digest.Digest, rep *Report, created string) ([]byte, error) {
	if host == "" {
		host = "berth.invalid"
	}
	if version == "" {
		version = "dev"
	}
	doc := spdxDoc{
		SPDXVersion: "SPDX-2.3", DataLicense: "CC0-1.0", SPDXID: "SPDXRef-DOCUMENT",
		Name:              repo + "@" + d.String(),
		DocumentNamespace: "https://" + host + "/spdx/" + url.PathEscape(repo) + "/" + d.String(),
		CreationInfo:      spdxCreation{Created: created, Creators: []string{"Tool: berth-" + version, "Organization: Berth"}},
	}
	imageID := "SPDXRef-Image"
	doc.Packages = append(doc.Packages, spdxPackage{
		Name: repo, SPDXID: imageID, VersionInfo: d.String(), DownloadLocation: "NOASSERTION", PrimaryPurpose: "CONTAINER",
		ExternalRefs: []spdxExtRef{{Category: "PACKAGE-MANAGER", Type: "purl", Locator: "pkg:oci/" + lastPathElem(repo) + "@" + url.QueryEscape(d.String()) + "?repository_url=" + url.QueryEscape(host+"/"+repo)}},
	})
	doc.Relationships = append(doc.Relationships, spdxRelationship{Element: "SPDXRef-DOCUMENT", Type: "DESCRIBES", Related: imageID})
	pkgs := append(rep.Packages[:0:0], rep.Packages...)
	sort.SliceStable(pkgs, func(i, j int) bool {
		return pkgs[i].Kind+pkgs[i].Name+pkgs[i].Version < pkgs[j].Kind+pkgs[j].Name+pkgs[j].Version
	})
	for i, p := range pkgs {
		id := fmt.Sprintf("SPDXRef-Package-%d", i+1)
		sp := spdxPackage{Name: p.Name, SPDXID: id, VersionInfo: p.Version, DownloadLocation: "NOASSERTION", PrimaryPurpose: "LIBRARY",
			SourceInfo: fmt.Sprintf("found in %s, added by layer %s", p.Path, p.AddedBy)}
		if p.PURL != "" {
			sp.ExternalRefs = []spdxExtRef{{Category: "PACKAGE-MANAGER", Type: "purl", Locator: p.PURL}}
		}
		doc.Packages = append(doc.Packages, sp)
		doc.Relationships = append(doc.Relationships, spdxRelationship{Element: imageID, Type: "CONTAINS", Related: id})
	}
	b, err := json.MarshalIndent(doc, "", " ")
	if err != nil {
		return nil, fmt.Errorf("encode SBOM: %w", err)
	}
	return b, nil
}

func lastPathElem(repo string) string {
	for i := len(repo) - 1; i >= 0; i-- {
		if repo[i] == '/' {
			return repo[i+1:]
		}
	}
	return repo
}
