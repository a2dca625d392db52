package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/ingest"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

// Annotations of an index that a mirror built with only some platforms
// of its upstream index: the upstream digest and the platforms kept, so
// that an unchanged upstream costs one HEAD.
const (
	annoSource    = "dev.berth.mirror.source"
	annoPlatforms = "dev.berth.mirror.architectures"
)

// signatureSuffixes are the tags cosign stores next to an image, named
// sha256-<hex><suffix>.
var signatureSuffixes = []string{".sig", ".att", ".sbom"}

type syncResult struct {
	copied, unchanged, deleted int
	// kept are the selected upstream tags that the sync left as they are
	// here: immutable local tags that moved upstream (by name or by an
	// immutability policy), and tags whose upstream content Berth refuses
	// to store (refusal).
	kept keptTags
}

// keptTag is a tag a sync kept as it is: an immutable one (refused nil),
// or one whose upstream content Berth refuses (refused says why).
type keptTag struct {
	tag     string
	refused error
}

type keptTags []keptTag

// count counts the refused tags (refused) or the immutable ones.
func (k keptTags) count(refused bool) int {
	n := 0
	for _, t := range k {
		if (t.refused != nil) == refused {
			n++
		}
	}
	return n
}

// refusal reports whether a tag's copy failed on a refusal of the
// upstream's content itself, which a sync meets again as long as the tag
// stays where it is upstream: a manifest Berth does not store (Docker
// schema 1, a malformed one), one the artifact policy does not allow, one
// over the size cap, one that would bring the namespace past its quota,
// or an index with no platform of the architecture_filter
// (noPlatformError). Such a tag is skipped, not a failure of the sync (an upstream
// error, a timeout, a digest that does not match stay failures).
func refusal(err error) bool {
	var (
		invalid  *ingest.InvalidError
		policy   *ingest.PolicyError
		tooLarge *ingest.TooLargeError
		quota    *meta.QuotaExceededError
	)
	var noPlatform *noPlatformError
	return errors.As(err, &invalid) || errors.As(err, &policy) || errors.As(err, &tooLarge) || errors.As(err, &quota) ||
		errors.As(err, &noPlatform)
}

// noPlatformError is an upstream index with none of the platforms of the
// mirror's architecture_filter (buildx's default of amd64 and an
// attestation, under a filter of arm64): nothing of it is stored, and
// every sync finds the same while the tag stays where it is upstream, so
// it is a refusal.
type noPlatformError struct {
	index     digest.Digest
	platforms string
}

func (e *noPlatformError) Error() string {
	return fmt.Sprintf("upstream index %s has no platform of the architecture_filter (%s)", e.index, e.platforms)
}

// MatchTag reports whether a tag is selected by a tag_glob_csv rule: any
// of the globs (spaces around it ignored) matches it, as Quay's mirror
// decides, with Python's fnmatch (matchGlob).
func MatchTag(globs []string, tag string) bool {
	return compileGlobs(globs)(tag)
}

// compileGlobs reads a rule's globs once, for the tags of a sync: the
// returned function is MatchTag.
func compileGlobs(globs []string) func(tag string) bool {
	parsed := make([][]globToken, len(globs))
	for i, g := range globs {
		parsed[i] = parseGlob(strings.TrimSpace(g))
	}
	return func(tag string) bool {
		s := []rune(tag)
		return slices.ContainsFunc(parsed, func(g []globToken) bool { return matchGlob(g, s) })
	}
}

// globToken is one element of a glob: a star (any run of characters), or
// a class matching one character.
type globToken struct {
	star  bool
	class globClass
}

// globClass matches one character: any (a ?), or one of chars and ranges
// (none of them when negated). A range whose ends are reversed holds
// nothing.
type globClass struct {
	any, negated bool
	chars        []rune
	ranges       [][2]rune
}

func (c globClass) matches(r rune) bool {
	if c.any {
		return true
	}
	in := slices.Contains(c.chars, r)
	for _, rg := range c.ranges {
		in = in || (rg[0] <= r && r <= rg[1])
	}
	return in != c.negated
}

// parseGlob reads a glob as Python's fnmatch.translate does, which Quay's
// mirror uses: * is any run, ? any character, [...] a class, negated by a
// ! first ([!0-9]; a ^ first is a member, as any other character), whose
// ] first (after the !) is a member; a [ without its ] is literal, and no
// character escapes another (a backslash is literal).
func parseGlob(g string) []globToken {
	p := []rune(g)
	var out []globToken
	for i := 0; i < len(p); {
		c := p[i]
		i++
		switch c {
		case '*':
			if len(out) == 0 || !out[len(out)-1].star {
				out = append(out, globToken{star: true})
			}
		case '?':
			out = append(out, globToken{class: globClass{any: true}})
		case '[':
			j := i
			if j < len(p) && p[j] == '!' {
				j++
			}
			if j < len(p) && p[j] == ']' {
				j++
			}
			for j < len(p) && p[j] != ']' {
				j++
			}
			if j >= len(p) {
				out = append(out, globToken{class: globClass{chars: []rune{c}}})
				continue
			}
			out = append(out, globToken{class: parseClass(p[i:j])})
			i = j + 1
		default:
			out = append(out, globToken{class: globClass{chars: []rune{c}}})
		}
	}
	return out
}

// parseClass reads the inside of a glob's [...] as fnmatch does: a -
// between two characters makes a range of them, unless it is first (after
// the !), last, or right after a range (a-c-e is a to c, -, and e).
func parseClass(body []rune) globClass {
	var c globClass
	if len(body) > 0 && body[0] == '!' {
		c.negated, body = true, body[1:]
	}
	for k := 0; k < len(body); {
		if k+2 < len(body) && body[k+1] == '-' {
			c.ranges = append(c.ranges, [2]rune{body[k], body[k+2]})
			k += 3
			continue
		}
		c.chars = append(c.chars, body[k])
		k++
	}
	return c
}

// matchGlob reports whether the glob's tokens match all of s.
func matchGlob(g []globToken, s []rune) bool {
	gi, si := 0, 0
	star, mark := -1, 0 // the last star seen, and where its run ends
	for si < len(s) {
		switch {
		case gi < len(g) && g[gi].star:
			star, mark = gi, si
			gi++
		case gi < len(g) && g[gi].class.matches(s[si]):
			gi++
			si++
		case star >= 0:
			// The last star takes one character more.
			mark++
			gi, si = star+1, mark
		default:
			return false
		}
	}
	for gi < len(g) && g[gi].star {
		gi++
	}
	return gi == len(g)
}

// ValidGlob reports whether g is a usable glob: any that is not blank, as
// in Quay (fnmatch reads every pattern; a [ without its ] is literal).
func ValidGlob(g string) bool {
	return strings.TrimSpace(g) != ""
}

func mirrorActor(m meta.Mirror) string {
	if m.RobotUsername != "" {
		return m.RobotUsername
	}
	return "mirror"
}

// sync brings the repository in line with the upstream: copy what moved,
// skip what did not (one HEAD each), and, only when the listing was
// complete and every tag synced, delete local tags gone upstream or no
// longer selected.
func (s *MirrorService) sync(ctx context.Context, m meta.Mirror, link MayLink) (syncResult, error) {
	var res syncResult
	up, err := s.upstream(m)
	if err != nil {
		return res, err
	}
	up.link = link
	opts := append([]remote.Option{remote.WithContext(ctx)}, up.opts...)
	// One authenticated transport for the whole sync, instead of a ping
	// and token round trip for every request.
	puller, err := remote.NewPuller(opts...)
	if err != nil {
		return res, fmt.Errorf("upstream client: %w", err)
	}
	opts = append(opts, remote.Reuse(puller))
	upTags, err := s.listTags(ctx, up)
	if err != nil {
		if ctx.Err() != nil {
			return res, context.Cause(ctx)
		}
		return res, fmt.Errorf("list upstream tags: %w", err)
	}
	all := make(map[string]bool, len(upTags))
	var queue []string
	queued := map[string]bool{}
	selected := compileGlobs(m.RootRule.Value)
	for _, t := range upTags {
		all[t] = true
		if oci.ValidateTag(t) == nil && selected(t) {
			queue, queued[t] = append(queue, t), true
		}
	}
	sort.Strings(queue)
	var errs []error
	wanted := map[string]bool{}
	signed := 0
	// Rounds: the selected tags, then the signatures found for them. In a
	// round, the tags that moved to one upstream digest are copied once,
	// together: one repo_push lists them all (1.9 and 1.9-2 moving to one
	// patched image are one upstream change).
	for round := queue; len(round) > 0; {
		var plans []tagPlan
		for _, tag := range round {
			if err := s.checkCancel(ctx, m.Repository); err != nil {
				return res, err
			}
			p, err := s.planTag(ctx, m, up, opts, tag)
			if err != nil {
				if ctx.Err() != nil {
					return res, context.Cause(ctx)
				}
				errs = append(errs, fmt.Errorf("tag %s: %w", tag, err))
				continue
			}
			plans = append(plans, p)
		}
		var next []string
		done := func(p tagPlan) {
			wanted[p.tag] = true
			// Bring cosign signatures, attestations and SBOMs along.
			for _, suf := range signatureSuffixes {
				st := p.digest.Algorithm().String() + "-" + p.digest.Encoded() + suf
				if all[st] && !queued[st] {
					next, queued[st] = append(next, st), true
					signed++
				}
			}
		}
		for i, p := range plans {
			if !p.copy {
				res.unchanged++
				done(p)
				continue
			}
			if p.tag == "" {
				continue // copied with an earlier tag of its group
			}
			group := []string{p.tag}
			for j := i + 1; j < len(plans); j++ {
				if plans[j].copy && plans[j].tag != "" && plans[j].digest == p.digest && plans[j].filtered == p.filtered {
					group = append(group, plans[j].tag)
				}
			}
			if err := s.checkCancel(ctx, m.Repository); err != nil {
				return res, err
			}
			kept, err := s.copyGroup(ctx, m, up, opts, p, group)
			if err != nil && ctx.Err() != nil {
				return res, context.Cause(ctx)
			}
			for j := i; j < len(plans); j++ {
				if !slices.Contains(group, plans[j].tag) {
					continue
				}
				switch {
				case slices.Contains(kept, plans[j].tag):
					// Selected and upstream: not a tag to delete. Its
					// upstream digest is not here, nor its signatures.
					res.kept = append(res.kept, keptTag{tag: plans[j].tag})
					wanted[plans[j].tag] = true
				case err != nil && refusal(err):
					// Refused as every later sync would refuse it: kept
					// as it is here (not deleted), named in the sync's
					// message, and the sync goes on.
					s.log.Warn("mirror tag skipped: refused", "repository", m.Repository, "tag", plans[j].tag,
						"upstream_digest", p.digest.String(), "err", err)
					res.kept = append(res.kept, keptTag{tag: plans[j].tag, refused: err})
					wanted[plans[j].tag] = true
				case err != nil:
					errs = append(errs, fmt.Errorf("tag %s: %w", plans[j].tag, err))
				default:
					res.copied++
					done(plans[j])
				}
				if j > i {
					plans[j].tag = ""
				}
			}
		}
		round = next
	}
	if signed == 0 && !m.UnsignedImages && len(wanted) > 0 {
		s.log.Debug("no signatures upstream", "repository", m.Repository, "upstream", m.ExternalReference)
	}
	if len(errs) > 0 {
		return res, errors.Join(errs...)
	}
	if err := s.checkCancel(ctx, m.Repository); err != nil {
		return res, err
	}
	local, err := s.localTags(ctx, m.Repository)
	if err != nil {
		return res, err
	}
	for _, t := range local {
		if wanted[t] {
			continue
		}
		if s.keepLocal(ctx, m.Repository, t) {
			continue
		}
		// The repository's state is checked in the deletion's transaction:
		// a tag pushed after it left state MIRROR stays.
		err := s.db.DeleteMirroredTag(ctx, m.Repository, t, mirrorActor(m))
		var immutable *meta.ImmutableTagError
		var inactive *meta.MirrorInactiveError
		switch {
		case errors.As(err, &inactive):
			return res, err
		case errors.As(err, &immutable), errors.Is(err, meta.ErrManifestNotFound):
			continue // a gate's rollback tag, a tag an immutability policy covers: they stay
		case err != nil:
			return res, fmt.Errorf("delete tag %s: %w", t, err)
		}
		res.deleted++
	}
	return res, nil
}

// keepLocal reports whether a local tag upstream does not have stays: a
// cosign signature, attestation or SBOM tag (sha256-<hex>.sig, .att,
// .sbom) of a manifest still stored in the repository, such as the
// signature a pipeline made of a gate's candidate.
func (s *MirrorService) keepLocal(ctx context.Context, repo, tag string) bool {
	for _, suf := range signatureSuffixes {
		hex, ok := strings.CutSuffix(tag, suf)
		if !ok || !strings.HasPrefix(hex, "sha256-") {
			continue
		}
		d, err := digest.Parse("sha256:" + strings.TrimPrefix(hex, "sha256-"))
		if err != nil {
			return false
		}
		_, err = s.tags.GetManifest(ctx, repo, "", d, false)
		return err == nil
	}
	return false
}

func (s *MirrorService) checkCancel(ctx context.Context, repo string) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if c, err := s.db.MirrorCancelRequested(ctx, repo); err != nil {
		return err
	} else if c {
		return errCancelled
	}
	return nil
}

func (s *MirrorService) localTags(ctx context.Context, repo string) ([]string, error) {
	var out []string
	last := ""
	for {
		page, err := s.tags.ListTags(ctx, repo, last, 1000)
		if errors.Is(err, meta.ErrRepositoryNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(page) < 1000 {
			return out, nil
		}
		last = page[len(page)-1]
	}
}

// tagPlan is what syncing one tag takes: the upstream digest, and
// whether it must be copied (the local tag is elsewhere).
type tagPlan struct {
	tag       string
	digest    digest.Digest
	copy      bool
	filtered  bool
	platforms string
}

// planTag asks upstream where a tag points (one HEAD) and whether the
// local tag is already there (or at the platform-filtered index made
// from it).
func (s *MirrorService) planTag(ctx context.Context, m meta.Mirror, up upstream, opts []remote.Option, tag string) (tagPlan, error) {
	desc, err := remote.Head(up.repo.Tag(tag), opts...)
	if err != nil {
		return tagPlan{}, fmt.Errorf("head: %w", err)
	}
	p := tagPlan{tag: tag, digest: digest.Digest(desc.Digest.String()), copy: true}
	p.filtered = len(m.ArchFilter) > 0 && oci.IsIndex(string(desc.MediaType))
	p.platforms = strings.Join(sortedCopy(m.ArchFilter), ",")
	if local, err := s.tags.GetManifest(ctx, m.Repository, tag, "", p.filtered); err == nil {
		if !p.filtered && local.Digest == p.digest {
			p.copy = false
		}
		if p.filtered {
			var idx struct {
				Annotations map[string]string `json:"annotations"`
			}
			if json.Unmarshal(local.Content, &idx) == nil && idx.Annotations[annoSource] == p.digest.String() && idx.Annotations[annoPlatforms] == p.platforms {
				p.copy = false
			}
		}
	} else if !errors.Is(err, meta.ErrManifestNotFound) {
		return tagPlan{}, err
	}
	return p, nil
}

// copyGroup copies a plan for the tags of its group, less those that the
// store refuses to move because they are immutable (by name, or by an
// immutability policy): each refusal drops its tag and the copy runs
// again for the others. The refusal, in the put's transaction, decides,
// not an earlier look: a policy may cover a tag at any moment. It
// returns the tags it kept where they are, and the copy's error, if
// another error stopped it.
func (s *MirrorService) copyGroup(ctx context.Context, m meta.Mirror, up upstream, opts []remote.Option, p tagPlan, group []string) ([]string, error) {
	var kept []string
	tags := slices.Clone(group)
	for len(tags) > 0 {
		err := s.copyTags(ctx, m, up, opts, p, tags)
		var immutable *meta.ImmutableTagError
		if err == nil || !errors.As(err, &immutable) || !slices.Contains(tags, immutable.Tag) {
			return kept, err
		}
		s.log.Info("mirror tag kept: immutable", "repository", m.Repository, "tag", immutable.Tag,
			"upstream_digest", p.digest.String(), "reason", immutable.Reason)
		kept = append(kept, immutable.Tag)
		tags = slices.DeleteFunc(tags, func(t string) bool { return t == immutable.Tag })
	}
	return kept, nil
}

// keptMessage is what a successful sync's message adds when it kept
// immutable tags that moved upstream, skipped tags Berth refuses, each
// with why, or skipped upstream indexes with no platform of the
// architecture_filter ("" when it kept none).
func keptMessage(kept keptTags) string {
	var immutable, refused, unfiltered []string
	why := map[string]string{}
	var noPlatform *noPlatformError
	for _, k := range kept {
		switch {
		case k.refused == nil:
			immutable = append(immutable, k.tag)
		case errors.As(k.refused, &noPlatform):
			unfiltered = append(unfiltered, k.tag)
		default:
			refused = append(refused, k.tag)
			why[k.tag] = k.refused.Error()
		}
	}
	msg := ""
	if len(immutable) > 0 {
		msg += fmt.Sprintf("; kept %d immutable tag(s) that moved upstream where they are: %s", len(immutable), shownTags(immutable, nil))
	}
	if len(refused) > 0 {
		msg += fmt.Sprintf("; skipped %d tag(s) whose upstream content Berth refuses (kept as they are here): %s", len(refused), shownTags(refused, why))
	}
	if len(unfiltered) > 0 {
		msg += fmt.Sprintf("; skipped %d tag(s) whose upstream index has no platform of the architecture_filter %s (kept as they are here): %s",
			len(unfiltered), noPlatform.platforms, shownTags(unfiltered, nil))
	}
	return msg
}

// shownTags names the first tags in order, each with why (if any, cut
// short), and how many more there are.
func shownTags(tags []string, why map[string]string) string {
	const shown, reasonBytes = 10, 300
	names := sortedCopy(tags)
	more := ""
	if len(names) > shown {
		more = fmt.Sprintf(" and %d more", len(names)-shown)
		names = names[:shown]
	}
	for i, t := range names {
		if w, ok := why[t]; ok {
			if len(w) > reasonBytes {
				w = strings.ToValidUTF8(w[:reasonBytes], "") + "..."
			}
			names[i] = fmt.Sprintf("%s (%s)", t, w)
		}
	}
	return strings.Join(names, ", ") + more
}

// copyTags copies the upstream content of a plan (or its filtered index)
// and points all the tags at it, in one transaction.
func (s *MirrorService) copyTags(ctx context.Context, m meta.Mirror, up upstream, opts []remote.Option, p tagPlan, tags []string) error {
	release, err := s.hosts.acquire(ctx, up.repo.RegistryStr())
	if err != nil {
		return err
	}
	defer release()
	req := Request{Source: up.repo.Digest(p.digest.String()), Options: opts, Repo: m.Repository, Tags: tags, Actor: mirrorActor(m),
		Create:  &meta.RepoCreate{MustExist: true}, // a deleted repository's mirror copies nothing
		MayLink: up.link}
	if !p.filtered {
		_, _, err := s.copier.Copy(ctx, req)
		return err
	}
	return s.copyFiltered(ctx, req, p.digest, m.ArchFilter, p.platforms)
}

// copyFiltered stores an index of only the upstream index's children for
// the given architectures (a different digest) and tags it.
func (s *MirrorService) copyFiltered(ctx context.Context, req Request, upD digest.Digest, archs []string, platforms string) error {
	desc, err := remote.Get(req.Source, req.Options...)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", req.Source, err)
	}
	if got := digest.FromBytes(desc.Manifest); upD.Algorithm() == digest.SHA256 && got != upD {
		return fmt.Errorf("upstream index %s: %w", upD, ErrDigestMismatch)
	}
	var idx map[string]json.RawMessage
	if err := json.Unmarshal(desc.Manifest, &idx); err != nil {
		return fmt.Errorf("upstream index %s: %w", upD, err)
	}
	var children []map[string]any
	if err := json.Unmarshal(idx["manifests"], &children); err != nil {
		return fmt.Errorf("upstream index %s: %w", upD, err)
	}
	var kept []map[string]any
	for _, c := range children {
		p, _ := c["platform"].(map[string]any)
		if arch, _ := p["architecture"].(string); slices.Contains(archs, arch) {
			kept = append(kept, c)
		}
	}
	if len(kept) == 0 {
		return &noPlatformError{index: upD, platforms: platforms}
	}
	annotations := map[string]string{}
	json.Unmarshal(idx["annotations"], &annotations)
	annotations[annoSource], annotations[annoPlatforms] = upD.String(), platforms
	idx["manifests"], _ = json.Marshal(kept)
	idx["annotations"], _ = json.Marshal(annotations)
	body, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	var st Stats
	opts := append([]remote.Option{remote.WithContext(ctx)}, req.Options...)
	run := s.copier.newCopyRun(ctx, req, opts, &st)
	defer run.end()
	return s.copier.copyManifest(ctx, run, digest.FromBytes(body), body, string(desc.MediaType), req.Tags, 1)
}

func sortedCopy(in []string) []string {
	out := slices.Clone(in)
	sort.Strings(out)
	return out
}
