// Package uipath is the web UI's rule for the paths of a repository's
// pages, shared by the UI, which routes them, and the event payloads,
// which link to them. It does no I/O.
//
// A page's path under /repository/ is the repository's name followed by
// the page ("acme/app/activity", "acme/app/manifest/<digest>"). A nested
// name may itself end like a page (acme/app/activity), so a "-" segment,
// which no name has, says where the name ends
// ("acme/app/activity/-/settings"). Without it the page words at the end
// decide, as in the paths links have always had.
package uipath

import (
	"net/url"
	"slices"
	"strings"
)

// Split splits a page's path segments under /repository/ into the
// repository name's segments and the page's (nil for the repository's
// main page).
func Split(segs []string) (name, page []string) {
	if i := slices.Index(segs, "-"); i >= 0 {
		return segs[:i], segs[i+1:]
	}
	n := len(segs)
	switch {
	case n >= 5 && segs[n-3] == "manifest" && segs[n-1] == "vulnerabilities.csv":
		return segs[:n-3], segs[n-3:]
	case n >= 4 && segs[n-2] == "manifest":
		return segs[:n-2], segs[n-2:]
	case n >= 3 && (segs[n-1] == "activity" || segs[n-1] == "settings"):
		return segs[:n-1], segs[n-1:]
	}
	return segs, nil
}

// Repository is the path of repo's main page, "/repository/<repo>" with
// each segment escaped, which its other pages extend ("/activity",
// "/manifest/<digest>"): with "/-" after a name that Split would read as
// a page of a shorter name.
//
// The name must also survive each page appended to it: acme/team/manifest
// reads back as itself, but its activity page, without the "-", would be
// the manifest "activity" of acme/team.
func Repository(repo string) string {
	segs := strings.Split(repo, "/")
	// Each page under it, with a digest standing in for the manifest's
	// (no digest is "-" or a page word).
	pages := [][]string{nil, {"activity"}, {"settings"}, {"manifest", "sha256:0"}, {"manifest", "sha256:0", "vulnerabilities.csv"}}
	for _, page := range pages {
		name, _ := Split(append(slices.Clip(segs), page...))
		if len(name) != len(segs) {
			return join(segs, true)
		}
	}
	return join(segs, false)
}

// Action is the path under which repo's forms post their actions:
// "/repository/<repo>/-" whatever the name ends with, so that the
// segments after it (a user or team named "settings", say) are never read
// as the name's.
func Action(repo string) string {
	return join(strings.Split(repo, "/"), true)
}

func join(segs []string, dash bool) string {
	esc := make([]string, len(segs), len(segs)+1)
	for i, s := range segs {
		esc[i] = url.PathEscape(s)
	}
	if dash {
		esc = append(esc, "-")
	}
	return "/repository/" + strings.Join(esc, "/")
}
