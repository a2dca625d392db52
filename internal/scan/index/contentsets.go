package index

import (
	"encoding/json"
	"path"
	"slices"
	"strings"
)

// contentManifestDir holds the content manifests of images Red Hat's build
// system (OSBS, Konflux) makes, UBI among them: one JSON file per layer it
// built, naming the content sets (repositories) its RPMs came from.
const contentManifestDir = "root/buildinfo/content_manifests"

// buildInfoDir is where Konflux puts the same content manifest
// (content-sets.json), in some images (ubi9-minimal 9.6) only there, next
// to other JSON files (labels.json) that name no content sets.
const buildInfoDir = "usr/share/buildinfo"

// maxContentManifestBytes bounds a content manifest. Real ones are a few
// KiB (their image_contents lists can reach a few hundred KiB).
const maxContentManifestBytes = 8 << 20

// isContentManifest reports whether a layer path may be a content
// manifest: root/buildinfo/content_manifests/<name>.json or
// usr/share/buildinfo/<name>.json.
func isContentManifest(name string) bool {
	dir := path.Dir(name)
	return (dir == contentManifestDir || dir == buildInfoDir) && strings.HasSuffix(name, ".json")
}

// contentManifest is the part of a content manifest the scanner reads:
//
//	{"metadata": {"icm_version": 1, "icm_spec": "...", "image_layer_index": 0},
//	 "content_sets": ["rhel-8-for-x86_64-baseos-rpms", ...], "image_contents": [...]}
type contentManifest struct {
	ContentSets *[]string `json:"content_sets"`
}

// parseContentManifest returns the content sets a content manifest names,
// sorted and without repeats or empty names; ok is false when the JSON
// object has no "content_sets".
func parseContentManifest(data []byte) (sets []string, ok bool, err error) {
	var m contentManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, false, err
	}
	if m.ContentSets == nil {
		return []string{}, false, nil
	}
	return cleanContentSets(*m.ContentSets), true, nil
}

func cleanContentSets(sets []string) []string {
	out := make([]string, 0, len(sets))
	for _, s := range sets {
		if s = validUTF8(strings.TrimSpace(s)); s != "" {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// contentSetsOf returns the union of the content sets of the content
// manifests that remain in the merged image.
func contentSetsOf(manifests map[string][]string) []string {
	var all []string
	for _, sets := range manifests {
		all = append(all, sets...)
	}
	if len(all) == 0 {
		return nil
	}
	return cleanContentSets(all)
}
