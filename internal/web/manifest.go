package web

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/storage"
)

// maxConfigBytes caps the image config a page reads.
const maxConfigBytes = 4 << 20

// imageConfig is what the manifest page shows of an image's config.
type imageConfig struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant"`
	Created      string `json:"created"`
	Config       struct {
		Labels map[string]string `json:"Labels"`
	} `json:"config"`
	History []struct {
		Created    string `json:"created"`
		CreatedBy  string `json:"created_by"`
		Comment    string `json:"comment"`
		EmptyLayer bool   `json:"empty_layer"`
	} `json:"history"`
}

// layerRow is a layer with the history step that made it.
type layerRow struct {
	oci.Descriptor
	CreatedBy string
}

// vulnRow is one vulnerability of one package.
type vulnRow struct {
	ID, Severity, Package, Version, FixedBy, Link, Description string
}

// manifestOf reads a manifest the visitor may see: held content (a
// gate's candidate) only for those who may check it, as on /v2.
func (u *UI) manifestOf(ctx context.Context, v *visitor, repo, arg string) (meta.Manifest, error) {
	if _, err := u.readable(ctx, v, repo); err != nil {
		return meta.Manifest{}, err
	}
	d, err := oci.ParseDigest(arg)
	if err != nil {
		return meta.Manifest{}, errNotFound
	}
	m, err := u.db.Content.GetManifest(ctx, repo, "", d, true)
	if errors.Is(err, meta.ErrNotFound) {
		return meta.Manifest{}, errNotFound
	} else if err != nil {
		return meta.Manifest{}, err
	}
	if m.Held {
		if ok, err := u.allowed(ctx, v, repo, auth.ActionChecks); err != nil {
			return meta.Manifest{}, err
		} else if !ok {
			return meta.Manifest{}, errNotFound
		}
	}
	return m, nil
}

// manifestTags is how many of a manifest's tags its page lists.
const manifestTags = 50

// vulnsShown and packagesShown bound the vulnerabilities (those the
// filters keep) and the packages the manifest page lists; the CSV export
// and the security API list them all.
const (
	vulnsShown    = 500
	packagesShown = 500
)

// expiryForm is how the manifest page's expiration field reads a time
// (an HTML datetime-local value, in UTC).
const expiryForm = "2006-01-02T15:04"

// manifestTagPOST runs the manifest page's tag forms, each the API's
// PUT .../tag/{tag}: "add-tag" points a tag, new or existing, at the
// page's manifest; "tag-expiration" sets when a tag expires, or clears it
// (the "never" button). A refusal renders the page again (refused), the
// message in its Tags section and the form as typed: the tag's own
// expiration form is "tag-expiration/<tag>".
func (u *UI) manifestTagPOST(w http.ResponseWriter, r *http.Request, v *visitor, repo, arg, action string) error {
	m, err := u.manifestOf(r.Context(), v, repo, arg)
	if err != nil {
		return err
	}
	tag := strings.TrimSpace(r.PostFormValue("tag"))
	form := action
	if action == "tag-expiration" {
		form += "/" + tag
	}
	refused := func(err error) error {
		return u.refused(r, err, "tags", form, func(status int, flash formFlash) error {
			if action == "tag-expiration" && tag != "" {
				flash.Error = "The expiration of tag " + tag + " was not changed: " + flash.Error
			}
			return u.manifestPage(w, r, v, repo, arg, status, flash)
		})
	}
	if tag == "" {
		return refused(fail(http.StatusBadRequest, "Name the tag."))
	}
	var body any = map[string]string{"manifest_digest": m.Digest.String()}
	switch {
	case action == "add-tag":
	case r.PostFormValue("never") != "":
		body = map[string]any{"expiration": nil}
	default:
		at, err := time.Parse(expiryForm, strings.TrimSpace(r.PostFormValue("expires")))
		if err != nil {
			return refused(fail(http.StatusBadRequest, "The expiration must be a date and time (UTC), such as 2030-01-31T12:00; or choose Never."))
		}
		body = map[string]any{"expiration": at.Unix()}
	}
	var answer json.RawMessage
	if err := u.call(r, v, http.MethodPut, repoAPI(repo, "tag", esc(tag)), body, &answer); err != nil {
		return refused(err)
	}
	to := repoPath(repo) + "/manifest/" + m.Digest.String()
	// A tag the repository's gate guards did not move: the API's 202
	// made the manifest its candidate, which the page then says.
	var held struct {
		Candidate bool `json:"candidate"`
	}
	if action == "add-tag" && json.Unmarshal(answer, &held) == nil && held.Candidate {
		to += "?candidate=" + url.QueryEscape(tag)
	}
	http.Redirect(w, r, to+"#tags", http.StatusSeeOther)
	return nil
}

// candidateNotice is the manifest page's notice after "Put this tag on
// the manifest" made the manifest a guarded tag's candidate (the
// candidate query parameter, a tag): the API's message of that 202.
func candidateNotice(r *http.Request, data map[string]any) {
	tag := r.URL.Query().Get("candidate")
	if tag == "" || oci.ValidateTag(tag) != nil {
		return
	}
	data["Candidate"], data["CandidateMessage"] = tag, meta.ErrGuardedTag.Error()
}

func (u *UI) manifest(w http.ResponseWriter, r *http.Request, v *visitor, repo, arg string) error {
	return u.manifestPage(w, r, v, repo, arg, http.StatusOK, formFlash{})
}

// manifestPage renders the manifest page, with a refused form's flash.
func (u *UI) manifestPage(w http.ResponseWriter, r *http.Request, v *visitor, repo, arg string, status int, flash formFlash) error {
	ctx := r.Context()
	m, err := u.manifestOf(ctx, v, repo, arg)
	if err != nil {
		return err
	}
	var om oci.Manifest
	json.Unmarshal(m.Content, &om)
	data := map[string]any{"Repo": repo, "Path": repoPath(repo), "M": m, "OCI": om, "IsIndex": oci.IsIndex(m.MediaType),
		"Registry": u.opts.Registry, "Flash": flash}
	if oci.IsIndex(m.MediaType) {
		data["Platforms"], data["Scanner"] = u.platformRows(repo, om), u.db.Scanner != nil
	}
	if om.Config != nil && u.db.Blobs != nil {
		if cfg, err := u.config(ctx, om.Config.Digest); err == nil {
			data["Config"] = cfg
			data["Layers"] = layersOf(om, cfg)
		} else {
			u.log.Warn("read an image config", "repo", repo, "digest", om.Config.Digest, "err", err)
		}
	}
	if data["Layers"] == nil {
		data["Layers"] = layersOf(om, nil)
	}
	// The tags on the manifest, and for writers the forms that add one
	// and set when one expires (Quay's "Add new tag" and "Change
	// expiration").
	tags, total, err := u.db.Content.TagRows(ctx, repo, meta.TagRowQuery{Filter: m.Digest.String(), Sort: meta.SortName, Limit: manifestTags})
	if errors.Is(err, meta.ErrRepositoryNotFound) {
		return errNotFound // deleted since manifestOf read it
	} else if err != nil {
		return err
	}
	canWrite, err := u.allowed(ctx, v, repo, auth.ActionWrite)
	if err != nil {
		return err
	}
	data["Tags"], data["MoreTags"], data["CanWrite"], data["CSRF"] = tags, total > len(tags), canWrite, v.csrf
	candidateNotice(r, data)
	canCheck, err := u.allowed(ctx, v, repo, auth.ActionChecks)
	if err != nil {
		return err
	}
	refs, more, signed, err := u.referrers(ctx, repo, m.Digest, canCheck)
	if err != nil {
		return err
	}
	data["Referrers"], data["MoreReferrers"] = refs, more
	if signed {
		if data["SigByDigest"], data["Signature"], err = u.manifestSignatures(ctx, repo, m.Digest); err != nil {
			return err
		}
	}
	if u.db.Scanner != nil && !oci.IsIndex(m.MediaType) {
		sec, err := u.db.Scanner.Security(ctx, repo, m, true)
		if err != nil {
			return err
		}
		q := r.URL.Query()
		sev, fixable := q.Get("severity"), q.Get("fixable") == "1"
		all := vulnsOf(sec)
		vulns := filterVulns(all, sev, fixable)
		// A report may list hundreds of thousands of packages: the page
		// shows the first vulnsShown vulnerabilities and packagesShown
		// packages, and says how many more the CSV and the API list.
		data["Scan"], data["Vulns"], data["MoreVulns"], data["Severity"], data["Fixable"] = sec, vulns[:min(len(vulns), vulnsShown)], max(len(vulns)-vulnsShown, 0), sev, fixable
		data["Counts"] = countBySeverity(all)
		// Never clean without the data: the notice says what is missing,
		// and to superusers (who run it) the command that fetches it.
		data["DataComplete"], data["Coverage"] = dataComplete(sec), sec.VulnerabilityData
		if sec.VulnerabilityData != nil && v.id.Superuser {
			data["FetchHint"] = sec.VulnerabilityData.FetchHint()
		}
		if sec.Data != nil {
			pkgs := sec.Data.Layer.Features
			data["Packages"], data["PackageCount"], data["MorePackages"] = pkgs[:min(len(pkgs), packagesShown)], len(pkgs), max(len(pkgs)-packagesShown, 0)
		}
	}
	if u.db.Graph != nil {
		if err := u.graph(ctx, v, repo, m.Digest, data); err != nil {
			return err
		}
	}
	u.render(w, r, v, status, "manifest", repo+"@"+m.Digest.String(), data)
	return nil
}

func (u *UI) config(ctx context.Context, d digest.Digest) (*imageConfig, error) {
	rc, err := u.db.Blobs.Reader(ctx, storage.BlobPath(d), 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxConfigBytes))
	if err != nil {
		return nil, err
	}
	var c imageConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// layersOf pairs layers with the history steps that made them.
func layersOf(om oci.Manifest, cfg *imageConfig) []layerRow {
	var steps []string
	if cfg != nil {
		for _, h := range cfg.History {
			if !h.EmptyLayer {
				steps = append(steps, h.CreatedBy)
			}
		}
	}
	out := make([]layerRow, len(om.Layers))
	for i, l := range om.Layers {
		out[i].Descriptor = l
		if len(steps) == len(om.Layers) {
			out[i].CreatedBy = steps[i]
		}
	}
	return out
}

// referrer is a manifest that refers to the one shown: a signature, an
// SBOM, an attestation, by the referrers API or cosign's tag layout.
type referrer struct {
	Kind, ArtifactType, Via string
	Digest                  digest.Digest
}

// referrersShown caps the referrers the manifest page lists (whoever may
// push may attach thousands).
const referrersShown = 100

// referrersRead is how many referrers the page reads at most (held ones
// it may not show included).
const referrersRead = 1000

// referrers are the manifest's referrers the visitor may see, up to
// referrersShown (the referrers API's first, then cosign's tags); more
// says others were left out, signed that one of those shown is a
// signature.
func (u *UI) referrers(ctx context.Context, repo string, d digest.Digest, canCheck bool) (out []referrer, more, signed bool, err error) {
	var tagged []referrer
	base := strings.Replace(d.String(), ":", "-", 1)
	for _, suffix := range []string{".sig", ".att", ".sbom"} {
		m, err := u.db.Content.GetManifest(ctx, repo, base+suffix, "", false)
		if errors.Is(err, meta.ErrNotFound) {
			continue
		} else if err != nil {
			return nil, false, false, err
		}
		kind := map[string]string{".sig": "signature", ".att": "attestation", ".sbom": "SBOM"}[suffix]
		tagged = append(tagged, referrer{Kind: kind, ArtifactType: m.ArtifactType, Via: "cosign tag " + base + suffix, Digest: m.Digest})
		signed = signed || kind == "signature"
	}
	// Read no further than the page shows, a few at a time, and none of
	// their annotations (each may be up to a manifest's size): the kind
	// needs only whether dev.berth.sbom is set, which the query answers.
	q := meta.ReferrerQuery{Repository: repo, Subject: d, N: 16}
	for read := 0; ; q.N = min(2*q.N, 256) {
		entries, err := u.db.Referrers.ReferrerEntries(ctx, q)
		if err != nil {
			return nil, false, false, err
		}
		for _, e := range entries {
			q.After = e.Key
			if read++; read > referrersRead || len(out)+len(tagged) == referrersShown && (!e.Held || canCheck) {
				return append(out, tagged...), true, signed, nil
			}
			if e.Held && !canCheck {
				continue
			}
			kind := kindOf(e.ArtifactType, e.BerthSBOM)
			signed = signed || kind == "signature"
			out = append(out, referrer{Kind: kind, ArtifactType: e.ArtifactType, Via: "referrers API", Digest: e.Digest})
		}
		if len(entries) < q.N {
			return append(out, tagged...), false, signed, nil
		}
	}
}

// kindOf is what a referrer of an artifact type is; berthSBOM: its
// dev.berth.sbom annotation is set.
func kindOf(at string, berthSBOM bool) string {
	switch {
	case berthSBOM:
		return "SBOM (Berth's)"
	case strings.Contains(at, "sig") || strings.Contains(at, "sigstore.bundle"):
		return "signature"
	case strings.Contains(at, "spdx") || strings.Contains(at, "cyclonedx") || strings.Contains(at, "sbom"):
		return "SBOM"
	case strings.Contains(at, "in-toto") || strings.Contains(at, "attestation") || strings.Contains(at, "provenance"):
		return "attestation"
	}
	return "artifact"
}

func vulnsOf(sec scan.SecurityInfo) []vulnRow {
	if sec.Data == nil {
		return nil
	}
	var out []vulnRow
	for _, f := range sec.Data.Layer.Features {
		for _, vu := range f.Vulnerabilities {
			out = append(out, vulnRow{ID: vu.Name, Severity: vu.Severity, Package: f.Name, Version: f.Version, FixedBy: vu.FixedBy,
				Link: vu.Link, Description: vu.Description})
		}
	}
	rank := map[string]int{}
	for i, s := range severities {
		rank[s] = i
	}
	sort.SliceStable(out, func(i, j int) bool { return rank[out[i].Severity] < rank[out[j].Severity] })
	return out
}

func filterVulns(vs []vulnRow, sev string, fixable bool) []vulnRow {
	var out []vulnRow
	for _, v := range vs {
		if (sev == "" || strings.EqualFold(v.Severity, sev)) && (!fixable || v.FixedBy != "") {
			out = append(out, v)
		}
	}
	return out
}

func countBySeverity(vs []vulnRow) map[string]int {
	out := map[string]int{}
	for _, v := range vs {
		out[v.Severity]++
	}
	return out
}

// graph adds what the image is built on and what is built on it, each
// side shown only where the visitor may read the repository (as the
// API's graph endpoints).
func (u *UI) graph(ctx context.Context, v *visitor, repo string, d digest.Digest, data map[string]any) error {
	readable := u.mayRead(ctx, v)
	bases, err := u.db.Graph.Bases(ctx, repo, d)
	if err != nil {
		return err
	}
	var shownBases []meta.GraphBase
	for _, b := range bases {
		if ok, err := readable(b.Repository); err != nil {
			return err
		} else if ok {
			shownBases = append(shownBases, b)
		}
	}
	shownDeps, more, err := u.dependents(ctx, repo, d, readable)
	if err != nil {
		return err
	}
	data["Bases"], data["Dependents"], data["DependentsMore"] = shownBases, shownDeps, more
	return nil
}

// maxDependentsShown bounds the page's "Used by" list, and
// dependentsMaxRead the dependents the page reads to fill it, readable
// or not (one permission decision per distinct repository), so that a
// shared base with thousands of dependents in repositories the visitor
// may not read costs an anonymous view what the repository listing does
// (reposMaxRead), not meta.DefaultMaxDependentRows.
const (
	maxDependentsShown = 100
	dependentsMaxRead  = reposMaxRead
)

// readableDependents is what a GraphStore may do besides (meta.Graph
// does): read on past the dependents the visitor may not read.
type readableDependents interface {
	ReadableDependents(ctx context.Context, repo string, d digest.Digest, q meta.DependentsQuery) ([]meta.GraphDependent, bool, error)
}

// dependents lists the images built directly on the manifest that the
// visitor may read: the store reads past the others (up to
// dependentsMaxRead of them), so that the dependents of other tenants of
// a shared base, however many come first, do not hide theirs. more says
// that the list may go on (more readable dependents follow, or the bound
// stopped the search): the page says so, and where the API lists them.
func (u *UI) dependents(ctx context.Context, repo string, d digest.Digest, readable func(string) (bool, error)) (shown []meta.GraphDependent, more bool, err error) {
	if g, ok := u.db.Graph.(readableDependents); ok {
		return g.ReadableDependents(ctx, repo, d, meta.DependentsQuery{N: maxDependentsShown, MaxRows: dependentsMaxRead, Readable: readable})
	}
	deps, err := u.db.Graph.Dependents(ctx, repo, d, false, maxDependentsShown+1)
	if err != nil {
		return nil, false, err
	}
	if len(deps) > maxDependentsShown {
		deps, more = deps[:maxDependentsShown], true
	}
	for _, dp := range deps {
		if ok, err := readable(dp.Repository); err != nil {
			return nil, false, err
		} else if ok {
			shown = append(shown, dp)
		}
	}
	return shown, more, nil
}

// mayRead answers whether the visitor may read a repository, deciding
// each name once (a page names the same base repositories many times).
func (u *UI) mayRead(ctx context.Context, v *visitor) func(name string) (bool, error) {
	seen := map[string]bool{}
	return func(name string) (bool, error) {
		if ok, done := seen[name]; done {
			return ok, nil
		}
		ok, err := u.allowed(ctx, v, name, auth.ActionRead)
		if err == nil {
			seen[name] = ok
		}
		return ok, err
	}
}

// vulnCSV exports the manifest's vulnerabilities (with the page's
// filters) as CSV; an index has none of its own (refuseIndexCSV).
func (u *UI) vulnCSV(w http.ResponseWriter, r *http.Request, v *visitor, repo, arg string) error {
	ctx := r.Context()
	m, err := u.manifestOf(ctx, v, repo, arg)
	if err != nil {
		return err
	}
	if u.db.Scanner == nil {
		return fail(http.StatusNotFound, "Security scanning is off on this registry (scan.enabled).")
	}
	if oci.IsIndex(m.MediaType) {
		u.refuseIndexCSV(w, r, v, repo, m)
		return nil
	}
	sec, err := u.db.Scanner.Security(ctx, repo, m, true)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	rows := filterVulns(vulnsOf(sec), q.Get("severity"), q.Get("fixable") == "1")
	// A file of no rows is no proof of a clean image: without complete
	// data its name (and a header) says so.
	name, complete := "vulnerabilities-"+m.Digest.Encoded()[:12], "complete"
	if !dataComplete(sec) {
		name, complete = name+"-incomplete", "incomplete"
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.csv"`)
	w.Header().Set("Berth-Vulnerability-Data", complete)
	w.Header().Set("Cache-Control", "no-store")
	cw := csv.NewWriter(w)
	cw.Write([]string{"vulnerability", "severity", "package", "version", "fixed_by", "link"})
	for _, vr := range rows {
		cw.Write([]string{csvSafe(vr.ID), vr.Severity, csvSafe(vr.Package), csvSafe(vr.Version), csvSafe(vr.FixedBy), csvSafe(vr.Link)})
	}
	cw.Flush()
	return cw.Error()
}

// csvSafe keeps a spreadsheet from reading a cell as a formula.
func csvSafe(s string) string {
	if s != "" && strings.ContainsAny(s[:1], "=+-@\t\r") {
		return "'" + s
	}
	return s
}
