package web

import (
	"net/http"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

// A multi-platform image (an index) has no vulnerabilities CSV of its
// own: its security answer has no report, so a CSV of it would hold no
// row and could not say whether it is complete. Its page links each
// platform's CSV instead, and its own CSV path answers 404 with those
// links.

// platformRow is an entry of an index's Platforms table; CSV is the path
// of the platform's vulnerabilities CSV, set on the first entry of each
// image manifest the index lists when scanning is on (an attestation has
// none).
type platformRow struct {
	oci.Descriptor
	CSV string
}

// indexCSVLinks caps the platform CSVs the refusal of an index's CSV
// links (the index's page lists every entry).
const indexCSVLinks = 64

// platformRows are the index's entries for its Platforms table.
func (u *UI) platformRows(repo string, om oci.Manifest) []platformRow {
	out := make([]platformRow, len(om.Manifests))
	seen := map[string]bool{}
	for i, c := range om.Manifests {
		out[i].Descriptor = c
		if u.db.Scanner == nil || oci.IsAttestation(c) || seen[c.Digest.String()] {
			continue
		}
		seen[c.Digest.String()] = true
		out[i].CSV = vulnCSVPath(repo, c.Digest.String())
	}
	return out
}

func vulnCSVPath(repo, dgst string) string {
	return repoPath(repo) + "/manifest/" + dgst + "/vulnerabilities.csv"
}

// link is a labelled link of the message page.
type link struct{ Label, Href string }

// refuseIndexCSV answers the CSV path of an index: 404, saying the CSV is
// per platform, with the platforms' CSVs (at most indexCSVLinks) and the
// index's page.
func (u *UI) refuseIndexCSV(w http.ResponseWriter, r *http.Request, v *visitor, repo string, m meta.Manifest) {
	var om oci.Manifest
	if p, err := oci.ParseManifest(m.Content, m.MediaType); err == nil {
		om = *p
	}
	var links []link
	more := false
	for _, row := range u.platformRows(repo, om) {
		if row.CSV == "" {
			continue
		}
		if len(links) == indexCSVLinks {
			more = true
			break
		}
		label := row.Digest.Encoded()
		if len(label) > 12 {
			label = label[:12]
		}
		if p := row.Platform; p != nil {
			plat := p.OS + "/" + p.Architecture
			if p.Variant != "" {
				plat += "/" + p.Variant
			}
			label = plat + " (" + label + ")"
		}
		links = append(links, link{Label: "Vulnerabilities CSV of " + label, Href: row.CSV})
	}
	page := repoPath(repo) + "/manifest/" + m.Digest.String()
	msg := "This is a multi-platform image: the vulnerabilities CSV is per platform. Download the CSV of each platform."
	if len(links) == 0 {
		msg = "This is a multi-platform image: the vulnerabilities CSV is per platform, and it lists no platform image."
	}
	if more {
		links = append(links, link{Label: "More platforms: the image's page lists them all", Href: page})
	} else {
		links = append(links, link{Label: "The image's page", Href: page})
	}
	u.render(w, r, v, http.StatusNotFound, "message", "Error", map[string]any{"Message": msg, "Status": http.StatusNotFound,
		"Links": links, "Back": repoPath(repo)})
}
