package index

import (
	"cmp"
	"path"
	"slices"
	"strings"
)

// Image is the merged result of an image's layers.
type Image struct {
	// OSRelease comes from the top-most layer that has one that still
	// exists (not deleted or rewritten by a later layer).
	OSRelease map[string]string `json:"osRelease,omitempty"`
	// Packages is sorted by kind, name, version, path.
	Packages []Package `json:"packages"`
	// ContentSets are the content sets named by the content manifests
	// that still exist, sorted: the repositories the image's RPMs came
	// from, in Red Hat's naming.
	ContentSets []string `json:"contentSets,omitempty"`
	// Gaps are the OS package databases (and other files read for
	// packages: archives, Go binaries) whose packages are unknown, sorted
	// by path: files still in the image that a layer wrote but could not
	// read (LayerResult.Unread), and databases that held packages until a
	// later layer deleted them (a whiteout or an opaque directory) without
	// writing them again. A report without them would call packages absent
	// that may be there.
	Gaps []Gap `json:"gaps,omitempty"`
}

// pkgKey identifies a package for deduplication and attribution.
type pkgKey struct{ kind, name, version, path string }

func keyOf(p Package) pkgKey { return pkgKey{p.Kind, p.Name, p.Version, p.Path} }

func sortPackages(ps []Package) {
	slices.SortFunc(ps, func(a, b Package) int {
		return cmp.Or(
			cmp.Compare(a.Kind, b.Kind),
			cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.Version, b.Version),
			cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.AddedBy, b.AddedBy),
		)
	})
}

// Merge applies layers bottom to top. A layer's whiteouts remove what earlier
// layers found in the deleted paths (and under deleted or opaque
// directories); a layer that rewrites a path listed in its Files replaces the
// packages earlier layers found there. A package (same kind, name, version,
// path) that was already present keeps the AddedBy of the layer that first
// introduced it, so upgrading one package in a later layer's dpkg status does
// not re-attribute the others. Layers whose Status is not StatusIndexed are
// skipped. Image.Gaps lists what is known to be unknown.
func Merge(layers []LayerResult) Image {
	state := map[string][]Package{} // by path
	var osr map[string]string
	var osrPath string
	manifests := map[string][]string{} // content manifests by path
	unread := map[string]Gap{}         // OS package databases there but unread, by path
	lost := map[string]Gap{}           // OS package databases deleted with their packages, by path
	for _, l := range layers {
		if l.Status != StatusIndexed {
			continue
		}
		if len(l.Whiteouts) > 0 {
			del, opq := whiteoutSets(l.Whiteouts)
			for p := range unread {
				if deleted(p, del, opq) {
					delete(unread, p) // gone: nothing left to read
				}
			}
			for p, pkgs := range state {
				if deleted(p, del, opq) {
					if hasOSPackages(pkgs) {
						lost[p] = Gap{Path: p, Layer: l.Digest,
							Reason: "deleted by a later layer: the OS packages it listed are unknown (removed, or still installed but unlisted)"}
					}
					delete(state, p)
				}
			}
			if osrPath != "" && deleted(osrPath, del, opq) {
				osr, osrPath = nil, ""
			}
			for p := range manifests {
				if deleted(p, del, opq) {
					delete(manifests, p)
				}
			}
		}

		byPath := map[string][]Package{}
		for _, p := range l.Packages {
			byPath[p.Path] = append(byPath[p.Path], p)
		}
		written := map[string]bool{}
		for _, f := range l.Files {
			written[f] = true
		}
		for p := range byPath {
			written[p] = true
		}
		for p := range written {
			state[p] = replace(state[p], byPath[p], l.Digest)
			if len(state[p]) == 0 {
				delete(state, p)
			}
			delete(lost, p) // written again: what this layer found, or Unread
			delete(unread, p)
		}
		for _, g := range l.Unread {
			g.Layer = l.Digest
			unread[g.Path] = g
		}
		for p := range manifests {
			if written[p] {
				delete(manifests, p) // rewritten: what the layer found, if anything, below
			}
		}
		for p, sets := range l.ContentManifests {
			manifests[p] = sets
		}

		switch {
		case len(l.OSRelease) > 0:
			osr, osrPath = l.OSRelease, l.OSReleasePath
			if osrPath == "" {
				osrPath = etcOSRelease
			}
		case written[osrPath]:
			osr, osrPath = nil, ""
		}
	}

	img := Image{OSRelease: osr, Packages: []Package{}, ContentSets: contentSetsOf(manifests)}
	for _, ps := range state {
		img.Packages = append(img.Packages, ps...)
	}
	sortPackages(img.Packages)
	for _, g := range unread {
		img.Gaps = append(img.Gaps, g)
	}
	for _, g := range lost {
		img.Gaps = append(img.Gaps, g)
	}
	slices.SortFunc(img.Gaps, func(a, b Gap) int { return strings.Compare(a.Path, b.Path) })
	return img
}

// hasOSPackages reports whether pkgs holds a package of an OS package
// database.
func hasOSPackages(pkgs []Package) bool {
	return slices.ContainsFunc(pkgs, func(p Package) bool { return IsOSKind(p.Kind) })
}

// IsOSKind reports whether a package kind is an OS package's (dpkg, apk,
// rpm).
func IsOSKind(kind string) bool { return kind == KindDpkg || kind == KindApk || kind == KindRPM }

// replace returns the packages a layer found at a path, attributed to the
// layer unless the same package was already there.
func replace(old, found []Package, digest string) []Package {
	prev := map[pkgKey]string{}
	for _, p := range old {
		prev[keyOf(p)] = p.AddedBy
	}
	out := make([]Package, 0, len(found))
	seen := map[pkgKey]bool{}
	for _, p := range found {
		k := keyOf(p)
		if seen[k] {
			continue
		}
		seen[k] = true
		if by, ok := prev[k]; ok {
			p.AddedBy = by
		} else {
			p.AddedBy = digest
		}
		out = append(out, p)
	}
	return out
}

// whiteoutSets splits whiteouts into deleted paths and opaque directories
// ("." for the root).
func whiteoutSets(whiteouts []string) (del, opq map[string]bool) {
	del, opq = map[string]bool{}, map[string]bool{}
	for _, w := range whiteouts {
		if strings.HasSuffix(w, "/") {
			d := strings.TrimSuffix(w, "/")
			if d == "" {
				d = "."
			}
			opq[d] = true
		} else {
			del[w] = true
		}
	}
	return del, opq
}

// deleted reports whether p is removed by the whiteouts: p or one of its
// directories is deleted, or one of its directories is opaque.
func deleted(p string, del, opq map[string]bool) bool {
	if del[p] {
		return true
	}
	for d := path.Dir(p); ; d = path.Dir(d) {
		if del[d] || opq[d] {
			return true
		}
		if d == "." || d == "/" {
			return false
		}
	}
}
