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

// maxContentManifestBytes bounds a content manifest. Real ones are a few
// KiB (their image_contents lists can reach a few hundred KiB).
const maxContentManifestBytes = 8 << 20

// isContentManifest reports whether a layer path is a content manifest:
// root/buildinfo/content_manifests/<name>.json.
func isContentManifest(name string) bool {
	return path.Dir(name) == contentManifestDir && strings.HasSuffix(name, ".json")
}

// contentManifest is the part of a content manifest the scanner reads:
//
//	{"metadata": {"icm_version": 1, "icm_spec": "...", "image_layer_index": 0},
//	 "content_sets": ["rhel-8-for-x86_64-baseos-rpms", ...], "image_contents": [...]}
type contentManifest struct {
	ContentSets []string `json:"content_sets"`
}

// parseContentManifest returns the content sets a content manifest names,
// sorted and without repeats or empty names.
func parseContentManifest(data []byte) ([]string, error) {
	var m contentManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	return cleanContentSets(m.ContentSets), nil
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
