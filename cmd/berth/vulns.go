package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/osv"
)

// exitCodeError ends the command with a chosen exit status (a pipeline
// gate); its message is printed like any error.
type exitCodeError struct {
	code int
	msg  string
}

func (e *exitCodeError) Error() string { return e.msg }

// Exit statuses of `berth vulns` besides 0 and 1 ("the command failed").
const (
	// exitThreshold: a vulnerability reached --fail-on.
	exitThreshold = 3
	// exitMissingData: some ecosystem of the image had no vulnerability
	// data, or only stale data, so the report may miss vulnerabilities
	// (--allow-missing-data accepts that).
	exitMissingData = 4
)

// vulnsCmd shows an image's vulnerabilities from a running Berth, as a
// table, and gates a pipeline with --fail-on.
func vulnsCmd() *cobra.Command {
	var username, failOn string
	var passwordStdin, insecure, asJSON, allowMissing bool
	var wait, maxAge time.Duration
	cmd := &cobra.Command{
		Use:   "vulns HOST[:PORT]/REPO[:TAG|@DIGEST]",
		Short: "Show an image's vulnerabilities (exit 3 when --fail-on is reached, 4 when data is missing)",
		Long: `Show the vulnerabilities Berth found in an image: severity, package,
installed version, the version that fixes it, and the advisory. For an
index, each platform's. The password (or token) comes from standard input
with --password-stdin, or from BERTH_PASSWORD.

Exit status, for use as a pipeline gate:
  0  scanned, and nothing reached --fail-on
  1  the command failed, or the image is not scanned (yet)
  3  a vulnerability is at or above --fail-on (Critical, High, Medium, Low,
     Negligible, Unknown)
  4  the registry has no vulnerability data for an ecosystem of the image
     (for example nothing was imported for Debian), or only stale data
     (older than the server's scan.vulndb.staleAfter), so its report cannot
     be complete; --allow-missing-data accepts that, with a warning.
     With --max-data-age, data older than that counts as missing too.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for flag, d := range map[string]time.Duration{"--max-data-age": maxAge, "--wait": wait} {
				if err := notNegative(flag, d); err != nil {
					return err
				}
			}
			threshold := ""
			if failOn != "" {
				s, ok := osv.ParseSeverity(failOn)
				if !ok {
					return fmt.Errorf("--fail-on %q: want Critical, High, Medium, Low, Negligible or Unknown", failOn)
				}
				threshold = s
			}
			c, repo, dgst, err := imageClient(cmd, args[0], username, passwordStdin, insecure)
			if err != nil {
				return err
			}
			deadline := time.Now().Add(wait)
			var info scan.SecurityInfo
			for {
				if info, err = c.security(cmd.Context(), repo, dgst); err != nil {
					return err
				}
				if info.Status != meta.ScanQueued || time.Now().After(deadline) {
					break
				}
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(time.Second):
				}
			}
			// An index's report is its platforms' union: the table shows
			// (and --fail-on counts) each platform's instead.
			reports := []scan.SecurityInfo{info}
			labels := []string{repo + "@" + dgst}
			if info.Status == meta.ScanScanned && len(info.Manifests) > 0 {
				reports[0].Data = nil
				for i, m := range info.Manifests {
					if m.Status != meta.ScanScanned {
						continue
					}
					pi, err := c.security(cmd.Context(), repo, m.Digest)
					if err != nil {
						return err
					}
					reports = append(reports, pi)
					labels = append(labels, repo+"@"+m.Digest+platformLabel(m))
					info.Manifests[i].Data = pi.Data // in the JSON, with its platform
				}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(info); err != nil {
					return err
				}
			} else {
				for i, r := range reports {
					if err := printVulns(cmd.OutOrStdout(), labels[i], r); err != nil {
						return err
					}
				}
			}
			if info.Status != meta.ScanScanned {
				return fmt.Errorf("%s@%s is not scanned: %s %s", repo, dgst, info.Status, info.Reason)
			}
			missing := dataProblems(info.VulnerabilityData, maxAge, time.Now())
			if missing != "" && allowMissing {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+missing+" (allowed by --allow-missing-data)")
			}
			if threshold != "" {
				n := 0
				for _, r := range reports {
					n += countAtLeast(r, threshold)
				}
				if n > 0 {
					msg := fmt.Sprintf("%d vulnerabilities at or above %s", n, threshold)
					if missing != "" && !allowMissing {
						msg += "; besides, " + missing
					}
					return &exitCodeError{code: exitThreshold, msg: msg}
				}
			}
			if missing != "" && !allowMissing {
				return &exitCodeError{code: exitMissingData, msg: missing + " (--allow-missing-data accepts this)"}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&username, "username", "u", "", "user, robot (ns+name) or token name")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the password or token from standard input")
	f.BoolVar(&insecure, "insecure", false, "use plain HTTP")
	f.StringVar(&failOn, "fail-on", "", "exit 3 if any vulnerability is at or above this severity")
	f.BoolVar(&allowMissing, "allow-missing-data", false, "exit 0, with a warning, when an ecosystem of the image has no (or only stale) vulnerability data (else exit 4)")
	f.DurationVar(&maxAge, "max-data-age", 0, "count vulnerability data older than this (e.g. 72h) as missing (stale data, past the server's limit, always is)")
	f.BoolVar(&asJSON, "json", false, "print the security report as JSON (Quay's shape)")
	f.DurationVar(&wait, "wait", 0, "wait up to this long for a queued scan to finish")
	return cmd
}

// notNegative refuses a duration flag below 0, which would otherwise
// read as "off" (0) where a sign slipped in: a token that never expires,
// a staleness gate that never fires.
func notNegative(flag string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%s %s: must not be negative (0 turns it off)", flag, d)
	}
	return nil
}

func platformLabel(m scan.PlatformSecurity) string {
	if m.Platform == nil {
		return ""
	}
	return " (" + m.Platform.OS + "/" + m.Platform.Architecture + ")"
}

// dataProblems says, in one line, what vulnerability data the report
// lacked (exit 4): missing or unsupported ecosystems, stale ones (past
// the server's limit: a report on them is not clean, as the server's
// coverage says) and, when maxAge is set, those of data older than that.
func dataProblems(cov *scan.DataCoverage, maxAge time.Duration, now time.Time) (missing string) {
	if cov == nil {
		return "the registry did not say whether it has vulnerability data for this image (a Berth older than this command?)"
	}
	var gone []string
	old := false // some data is there, but too old
	for _, e := range cov.Ecosystems {
		name := e.Ecosystem
		if e.Release != "" {
			name = e.Release
		}
		switch {
		case e.Status == scan.DataMissing || e.Status == scan.DataUnsupported:
			gone = append(gone, fmt.Sprintf("%s (%d packages: %s)", name, e.Packages, e.Reason))
		case maxAge > 0 && e.UpdatedAt != nil && now.Sub(*e.UpdatedAt) > maxAge:
			gone, old = append(gone, fmt.Sprintf("%s (%d packages: data from %s, older than --max-data-age %s)", name, e.Packages,
				e.UpdatedAt.Format(time.RFC3339), maxAge)), true
		case e.Status == scan.DataStale:
			gone, old = append(gone, fmt.Sprintf("%s (%d packages: stale, %s)", name, e.Packages, e.Reason)), true
		}
	}
	if len(gone) == 0 && !cov.Complete {
		// Incomplete for a reason no ecosystem states (an index past the
		// bounds of one answer).
		what := strings.Join(append(slices.Clone(cov.Missing), cov.Stale...), ", ")
		if what == "" {
			what = "part of the image"
		}
		gone = append(gone, what)
	}
	if len(gone) > 0 {
		missing = "no vulnerability data for "
		if old {
			missing = "no current vulnerability data for "
		}
		missing += strings.Join(gone, "; ") + ", so vulnerabilities there are unknown"
		if hint := cov.FetchHint(); hint != "" {
			missing += "; an administrator can fetch it: " + hint
		}
	}
	return missing
}

// printVulns writes the table: one row per (advisory, package).
func printVulns(w io.Writer, image string, info scan.SecurityInfo) error {
	if info.Data == nil {
		fmt.Fprintf(w, "%s: %s %s\n", image, info.Status, info.Reason)
		for _, m := range info.Manifests {
			plat := ""
			if m.Platform != nil {
				plat = m.Platform.OS + "/" + m.Platform.Architecture
			}
			fmt.Fprintf(w, "  %s %s: %s %s\n", plat, m.Digest, m.Status, m.Reason)
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tPACKAGE\tINSTALLED\tFIXED BY\tADVISORY")
	counts := map[string]int{}
	total := 0
	for _, f := range info.Data.Layer.Features {
		for _, v := range f.Vulnerabilities {
			fixed := v.FixedBy
			if fixed == "" {
				fixed = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Severity, f.Name, f.Version, fixed, v.Name)
			counts[v.Severity]++
			total++
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var parts []string
	for _, s := range []string{osv.SeverityCritical, osv.SeverityHigh, osv.SeverityMedium, osv.SeverityLow, osv.SeverityNegligible, osv.SeverityUnknown} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	summary := "none"
	if len(parts) > 0 {
		summary = strings.Join(parts, ", ")
	}
	if cov := info.VulnerabilityData; cov != nil && (!cov.Complete || len(cov.Stale) > 0) {
		var parts []string
		if len(cov.Missing) > 0 {
			parts = append(parts, "no vulnerability data for "+strings.Join(cov.Missing, ", "))
		}
		if len(cov.Stale) > 0 {
			parts = append(parts, "stale vulnerability data for "+strings.Join(cov.Stale, ", "))
		}
		if len(parts) == 0 {
			parts = append(parts, "vulnerability data incomplete")
		}
		summary += " (INCOMPLETE: " + strings.Join(parts, "; ") + ")"
	}
	_, err := fmt.Fprintf(w, "%s (%s): %d packages, %d vulnerabilities: %s\n", image, info.Data.Layer.NamespaceName,
		len(info.Data.Layer.Features), total, summary)
	return err
}

func countAtLeast(info scan.SecurityInfo, threshold string) int {
	if info.Data == nil {
		return 0
	}
	n := 0
	for _, f := range info.Data.Layer.Features {
		for _, v := range f.Vulnerabilities {
			if osv.SeverityRank(v.Severity) >= osv.SeverityRank(threshold) {
				n++
			}
		}
	}
	return n
}

// apiClient calls a Berth's /api/v1 with Basic credentials.
// imageClient reads the password (BERTH_PASSWORD, or standard input with
// --password-stdin), makes the API client for the image's registry, and
// resolves the image's tag, if it has one, to its digest.
func imageClient(cmd *cobra.Command, image, username string, passwordStdin, insecure bool) (apiClient, string, string, error) {
	ref, err := name.ParseReference(image, name.StrictValidation)
	if err != nil {
		return apiClient{}, "", "", fmt.Errorf("image %q: %w (want HOST[:PORT]/REPO:TAG or HOST[:PORT]/REPO@DIGEST)", image, err)
	}
	c, err := newAPIClient(cmd, ref.Context().RegistryStr(), username, passwordStdin, insecure)
	if err != nil {
		return apiClient{}, "", "", err
	}
	repo := ref.Context().RepositoryStr()
	dgst := ref.Identifier()
	if _, isTag := ref.(name.Tag); isTag {
		if dgst, err = c.tagDigest(cmd.Context(), repo, dgst); err != nil {
			return apiClient{}, "", "", err
		}
	}
	return c, repo, dgst, nil
}

// newAPIClient reads the password (BERTH_PASSWORD, or standard input
// with --password-stdin) and makes the API client for a registry host.
func newAPIClient(cmd *cobra.Command, host, username string, passwordStdin, insecure bool) (apiClient, error) {
	password := os.Getenv("BERTH_PASSWORD")
	if passwordStdin {
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return apiClient{}, err
		}
		password = strings.TrimRight(line, "\r\n")
	}
	c := apiClient{http: &http.Client{Timeout: time.Minute}, host: host, username: username, password: password, scheme: "https"}
	if insecure {
		c.scheme = "http"
	}
	return c, nil
}

type apiClient struct {
	http               *http.Client
	scheme, host       string
	username, password string
}

func (c apiClient) get(ctx context.Context, path string, query url.Values, v any) error {
	return c.call(ctx, http.MethodGet, path, query, nil, v)
}

func (c apiClient) tagDigest(ctx context.Context, repo, tag string) (string, error) {
	var out struct {
		Tags []struct {
			Name           string `json:"name"`
			ManifestDigest string `json:"manifest_digest"`
		} `json:"tags"`
	}
	if err := c.get(ctx, "/api/v1/repository/"+repo+"/tag/", url.Values{"specificTag": {tag}, "onlyActiveTags": {"true"}}, &out); err != nil {
		return "", err
	}
	for _, t := range out.Tags {
		if t.Name == tag {
			return t.ManifestDigest, nil
		}
	}
	return "", fmt.Errorf("tag %s not found in %s", tag, repo)
}

func (c apiClient) security(ctx context.Context, repo, dgst string) (scan.SecurityInfo, error) {
	var info scan.SecurityInfo
	err := c.get(ctx, "/api/v1/repository/"+repo+"/manifest/"+dgst+"/security", url.Values{"vulnerabilities": {"true"}}, &info)
	return info, err
}
