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

// exitThreshold is the exit status of `berth vulns --fail-on` when the
// threshold is reached (1 stays "the command failed").
const exitThreshold = 3

// vulndbCmd imports advisories into the database directly.
func vulndbCmd(open func(*cobra.Command) (*meta.DB, error)) *cobra.Command {
	vulndb := &cobra.Command{Use: "vulndb", Short: "Import OSV vulnerability data for offline scanning"}
	imp := &cobra.Command{
		Use:   "import PATH...",
		Short: "Import OSV advisories: osv.dev all.zip files, JSON files, or directories of them",
		Long: `Import OSV advisories as osv.dev publishes them: the per-ecosystem all.zip
(https://osv-vulnerabilities.storage.googleapis.com/<Ecosystem>/all.zip),
a directory laid out as <dir>/<Ecosystem>/all.zip, or loose OSV JSON files.
Only records that are new or whose "modified" changed are applied; the
scanner then re-matches exactly the images whose packages they name.
Records that do not parse are reported and skipped.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			out := cmd.ErrOrStderr()
			start := time.Now()
			im := scan.NewImporter(db, func(s scan.ImportStats) {
				fmt.Fprintf(out, "\rread %d records: %d applied, %d unchanged, %d rejected", s.Read, s.Applied, s.Unchanged, s.Rejected)
			})
			for _, p := range args {
				if err := im.Path(cmd.Context(), p); err != nil {
					fmt.Fprintln(out)
					return err
				}
			}
			st, err := im.Finish(cmd.Context())
			fmt.Fprintln(out)
			if err != nil {
				return err
			}
			for _, e := range st.Errors {
				fmt.Fprintf(out, "rejected: %s\n", e)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported %d records in %s: %d applied (%d withdrawn), %d unchanged, %d rejected; ecosystems: %s\n",
				st.Read, time.Since(start).Round(time.Millisecond), st.Applied, st.Withdrawn, st.Unchanged, st.Rejected, strings.Join(st.Ecosystems, ", "))
			return nil
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "List the imported ecosystems and when each was last updated",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			srcs, err := db.VulnSources(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ECOSYSTEM\tRECORDS\tUPDATED")
			for _, s := range srcs {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", s.Ecosystem, s.Records, s.UpdatedAt.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	vulndb.AddCommand(imp, status)
	return vulndb
}

// vulnsCmd shows an image's vulnerabilities from a running Berth, as a
// table, and gates a pipeline with --fail-on.
func vulnsCmd() *cobra.Command {
	var username, failOn string
	var passwordStdin, insecure, asJSON bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "vulns HOST[:PORT]/REPO[:TAG|@DIGEST]",
		Short: "Show an image's vulnerabilities (exit 3 when --fail-on is reached)",
		Long: `Show the vulnerabilities Berth found in an image: severity, package,
installed version, the version that fixes it, and the advisory. With
--fail-on SEVERITY the command exits with status 3 when any vulnerability
is at or above that severity (Critical, High, Medium, Low, Negligible,
Unknown), for use as a pipeline gate. The password (or token) comes from
standard input with --password-stdin, or from BERTH_PASSWORD.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			threshold := ""
			if failOn != "" {
				s, ok := osv.ParseSeverity(failOn)
				if !ok {
					return fmt.Errorf("--fail-on %q: want Critical, High, Medium, Low, Negligible or Unknown", failOn)
				}
				threshold = s
			}
			password := os.Getenv("BERTH_PASSWORD")
			if passwordStdin {
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				password = strings.TrimRight(line, "\r\n")
			}
			c := apiClient{http: &http.Client{Timeout: time.Minute}, username: username, password: password, scheme: "https"}
			if insecure {
				c.scheme = "http"
			}
			ref, err := name.ParseReference(args[0], name.StrictValidation)
			if err != nil {
				return fmt.Errorf("image %q: %w (want HOST[:PORT]/REPO:TAG or HOST[:PORT]/REPO@DIGEST)", args[0], err)
			}
			c.host = ref.Context().RegistryStr()
			repo := ref.Context().RepositoryStr()
			dgst := ref.Identifier()
			if _, isTag := ref.(name.Tag); isTag {
				if dgst, err = c.tagDigest(cmd.Context(), repo, dgst); err != nil {
					return err
				}
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
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(info); err != nil {
					return err
				}
			} else if err := printVulns(cmd.OutOrStdout(), repo+"@"+dgst, info); err != nil {
				return err
			}
			if info.Status != meta.ScanScanned {
				return fmt.Errorf("%s@%s is not scanned: %s %s", repo, dgst, info.Status, info.Reason)
			}
			if threshold != "" {
				if n := countAtLeast(info, threshold); n > 0 {
					return &exitCodeError{code: exitThreshold, msg: fmt.Sprintf("%d vulnerabilities at or above %s", n, threshold)}
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&username, "username", "u", "", "user, robot (ns+name) or token name")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the password or token from standard input")
	f.BoolVar(&insecure, "insecure", false, "use plain HTTP")
	f.StringVar(&failOn, "fail-on", "", "exit 3 if any vulnerability is at or above this severity")
	f.BoolVar(&asJSON, "json", false, "print the security report as JSON (Quay's shape)")
	f.DurationVar(&wait, "wait", 0, "wait up to this long for a queued scan to finish")
	return cmd
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
type apiClient struct {
	http               *http.Client
	scheme, host       string
	username, password string
}

func (c apiClient) get(ctx context.Context, path string, query url.Values, v any) error {
	u := url.URL{Scheme: c.scheme, Host: c.host, Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	if c.username != "" || c.password != "" {
		req.SetBasicAuth(c.username, c.password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Message string `json:"message"`
			Detail  string `json:"detail"`
		}
		_ = json.Unmarshal(body, &e)
		msg := e.Message
		if msg == "" {
			msg = e.Detail
		}
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, msg)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
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
