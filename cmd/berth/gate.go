package main

import (
	"bytes"
	"cmp"
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
)

// The commands of gated promotion (docs/gates.md): `berth promote`,
// `berth check` and `berth gate`, clients of a running Berth's API like
// `berth deps`.

// clientFlags are the connection flags every API client command shares.
type clientFlags struct {
	username      string
	passwordStdin bool
	insecure      bool
}

func (cf *clientFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&cf.username, "username", "u", "", "user, robot (ns+name) or token name")
	f.BoolVar(&cf.passwordStdin, "password-stdin", false, "read the password or token from standard input")
	f.BoolVar(&cf.insecure, "insecure", false, "use plain HTTP")
}

const credentialsHelp = `The password (or token) comes from standard input with --password-stdin,
or from BERTH_PASSWORD.`

// explicitHost refuses a reference that names no registry: name's
// default (Docker Hub) is never meant here.
func explicitHost(ref string) error {
	first, _, ok := strings.Cut(ref, "/")
	if !ok || !strings.ContainsAny(first, ".:") && first != "localhost" {
		return fmt.Errorf("%q names no registry: want HOST[:PORT]/REPO (e.g. registry.example.com/team/app)", ref)
	}
	return nil
}

// manifestClient reads the manifest arguments of promote and check,
// HOST[:PORT]/REPO@DIGEST (or :TAG, resolved to its digest) or
// HOST[:PORT]/REPO DIGEST, and makes the API client.
func manifestClient(cmd *cobra.Command, args []string, cf clientFlags) (apiClient, string, string, error) {
	image := args[0]
	if len(args) == 2 {
		if strings.ContainsAny(args[0], "@") || !strings.Contains(args[1], ":") {
			return apiClient{}, "", "", fmt.Errorf("want HOST[:PORT]/REPO@DIGEST or HOST[:PORT]/REPO DIGEST, not %q %q", args[0], args[1])
		}
		image = args[0] + "@" + args[1]
	}
	if err := explicitHost(image); err != nil {
		return apiClient{}, "", "", err
	}
	return imageClient(cmd, image, cf.username, cf.passwordStdin, cf.insecure)
}

// repoClient reads a HOST[:PORT]/REPO argument and makes the API client.
func repoClient(cmd *cobra.Command, arg string, cf clientFlags) (apiClient, string, error) {
	if err := explicitHost(arg); err != nil {
		return apiClient{}, "", err
	}
	r, err := name.NewRepository(arg, name.StrictValidation)
	if err != nil {
		return apiClient{}, "", fmt.Errorf("repository %q: %w (want HOST[:PORT]/REPO)", arg, err)
	}
	c, err := newAPIClient(cmd, r.RegistryStr(), cf.username, cf.passwordStdin, cf.insecure)
	return c, r.RepositoryStr(), err
}

// apiStatusError is an API answer other than 2xx.
type apiStatusError struct {
	method, path string
	status       string
	code         int
	msg          string
	body         []byte
}

func (e *apiStatusError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("%s %s: %s", e.method, e.path, e.status)
	}
	return fmt.Sprintf("%s %s: %s: %s", e.method, e.path, e.status, e.msg)
}

// call sends a request with a JSON body (none when in is nil) and
// decodes a 2xx answer into out (when not nil); any other answer is an
// *apiStatusError that keeps the body.
func (c apiClient) call(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	u := url.URL{Scheme: c.scheme, Host: c.host, Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.username != "" || c.password != "" {
		req.SetBasicAuth(c.username, c.password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			ErrorMessage string `json:"error_message"`
			Message      string `json:"message"`
			Detail       string `json:"detail"`
		}
		_ = json.Unmarshal(raw, &e)
		msg := cmp.Or(e.ErrorMessage, e.Message, e.Detail)
		return &apiStatusError{method: method, path: path, status: resp.Status, code: resp.StatusCode, msg: msg, body: raw}
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

func repoPath(repo string) string { return "/api/v1/repository/" + repo }

// gateInfo is a gate as GET .../gate answers it.
type gateInfo struct {
	Tags           []string  `json:"tags"`
	Policy         string    `json:"policy"`
	RequiredChecks []string  `json:"required_checks"`
	KeyIDs         []string  `json:"key_ids"`
	RollbackTag    string    `json:"rollback_tag"`
	Checkers       []string  `json:"checkers"`
	ScanSeverity   string    `json:"scan_severity"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// candidateInfo is a candidate as GET .../gate/candidates answers it.
type candidateInfo struct {
	ID          int64         `json:"id"`
	Tag         string        `json:"tag"`
	Digest      string        `json:"digest"`
	State       string        `json:"state"`
	Reasons     []string      `json:"reasons"`
	RollbackTag string        `json:"rollback_tag"`
	Actor       string        `json:"actor"`
	CreatedAt   time.Time     `json:"created_at"`
	Checks      []postedCheck `json:"checks"`
	Evaluation  *struct {
		RequiredChecks []string          `json:"required_checks"`
		Checks         map[string]string `json:"checks"`
		Override       string            `json:"override"`
	} `json:"evaluation"`
}

// gateStatusReport is what `berth gate status --json` prints: the API's
// answers as they are (gate is null for a caller who may not read it).
type gateStatusReport struct {
	Repository string          `json:"repository"`
	Gate       json.RawMessage `json:"gate"`
	Candidates json.RawMessage `json:"candidates"`
}

// gateCmd groups the gate commands.
func gateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gate",
		Short: "Show, set or delete a repository's gate (gated promotion)",
		Long: `A gate holds what is pushed to a repository's guarded tags as candidates,
invisible to ordinary readers, until the required checks and the gate's
CEL policy pass; then it moves the tag (see docs/gates.md).`,
	}
	cmd.AddCommand(gateStatusCmd(), gateSetCmd(), gateDeleteCmd())
	return cmd
}

func gateStatusCmd() *cobra.Command {
	var cf clientFlags
	var all, asJSON bool
	cmd := &cobra.Command{
		Use:   "status HOST[:PORT]/REPO",
		Short: "Show a gate and its candidates (pending and blocked ones; --all for every state)",
		Long: `Show a repository's gate (guarded tags, policy, required checks, checkers,
trusted keys, rollback tag template) and its candidates, newest first: the
pending and blocked ones, or, with --all, the last 100 in any state
(promoted, superseded, withdrawn). Each candidate shows its required and
posted checks with their status and why it waits or is blocked.

Seeing the candidates needs the checks permission; the gate's
configuration needs admin on the repository (without it, only the
candidates are shown).

` + credentialsHelp,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, repo, err := repoClient(cmd, args[0], cf)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			rep := gateStatusReport{Repository: repo, Gate: json.RawMessage("null")}
			var gateErr error
			var g json.RawMessage
			if err := c.call(ctx, http.MethodGet, repoPath(repo)+"/gate", nil, nil, &g); err != nil {
				var se *apiStatusError
				if !errors.As(err, &se) || se.code != http.StatusForbidden {
					return err
				}
				gateErr = err
			} else {
				rep.Gate = g
			}
			q := url.Values{"limit": {"100"}}
			if !all {
				q.Set("live", "true")
			}
			var cands struct {
				Candidates json.RawMessage `json:"candidates"`
			}
			if err := c.call(ctx, http.MethodGet, repoPath(repo)+"/gate/candidates", q, nil, &cands); err != nil {
				return err
			}
			rep.Candidates = cands.Candidates
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			if gateErr != nil {
				fmt.Fprintf(w, "GATE %s/%s\n  (its configuration needs admin on the repository)\n", c.host, repo)
			} else {
				var gi gateInfo
				if err := json.Unmarshal(rep.Gate, &gi); err != nil {
					return fmt.Errorf("gate: %w", err)
				}
				printGate(w, c.host+"/"+repo, gi)
			}
			var cs []candidateInfo
			if err := json.Unmarshal(rep.Candidates, &cs); err != nil {
				return fmt.Errorf("candidates: %w", err)
			}
			which := "pending and blocked; --all for every state"
			if all {
				which = "all states, newest first"
			}
			fmt.Fprintf(w, "\nCANDIDATES (%s)\n", which)
			return printCandidates(w, cs)
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.BoolVar(&all, "all", false, "also promoted, superseded and withdrawn candidates (the last 100)")
	f.BoolVar(&asJSON, "json", false, "print the gate and the candidates as the API answers them")
	return cmd
}

func listOr(list []string, none string) string {
	if len(list) == 0 {
		return none
	}
	return strings.Join(list, ", ")
}

func printGate(w io.Writer, repo string, g gateInfo) {
	fmt.Fprintf(w, "GATE %s\n", repo)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	policy := g.Policy
	if strings.TrimSpace(policy) == "" {
		policy = "(none: the required checks decide)"
	}
	fmt.Fprintf(tw, "  guarded tags\t%s\n", listOr(g.Tags, "(none)"))
	fmt.Fprintf(tw, "  policy\t%s\n", strings.Join(strings.Fields(policy), " "))
	fmt.Fprintf(tw, "  required checks\t%s\n", listOr(g.RequiredChecks, "(none)"))
	fmt.Fprintf(tw, "  checkers\t%s\n", listOr(g.Checkers, "(none: repository admins, superusers and tokens with checks only)"))
	fmt.Fprintf(tw, "  trusted keys\t%s\n", listOr(g.KeyIDs, "(none: no signature verifies)"))
	fmt.Fprintf(tw, "  rollback tag\t%s\n", g.RollbackTag)
	fmt.Fprintf(tw, "  scan severity\t%s\n", g.ScanSeverity)
	tw.Flush()
}

// candidateChecks are a candidate's checks to show: the ones its last
// evaluation required and the posted ones, each with its freshest status
// (a posted result may be newer than the evaluation).
func candidateChecks(c candidateInfo) string {
	status := map[string]string{}
	var names []string
	add := func(n, s string) {
		if _, ok := status[n]; !ok {
			names = append(names, n)
		}
		status[n] = s
	}
	if c.Evaluation != nil {
		for _, n := range c.Evaluation.RequiredChecks {
			s := c.Evaluation.Checks[n]
			if s == "" {
				s = "missing"
			}
			add(n, s)
		}
	}
	for _, p := range c.Checks {
		add(p.Name, p.Status)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=" + status[n]
	}
	return listOr(parts, "-")
}

func printCandidates(w io.Writer, cs []candidateInfo) error {
	if len(cs) == 0 {
		fmt.Fprintln(w, "  (none)")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ID\tTAG\tDIGEST\tSTATE\tCHECKS\tREASONS")
	for _, c := range cs {
		reasons := strings.Join(c.Reasons, "; ")
		switch {
		case c.State == "promoted":
			reasons = "rollback tag " + c.RollbackTag
			if c.Evaluation != nil && c.Evaluation.Override != "" {
				reasons += "; override: " + c.Evaluation.Override
			}
		case c.State == "pending" && reasons == "":
			reasons = "not evaluated yet"
		case reasons == "":
			reasons = "-"
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Tag, short(c.Digest), c.State, candidateChecks(c), reasons)
	}
	return tw.Flush()
}

func gateSetCmd() *cobra.Command {
	var cf clientFlags
	var file string
	cmd := &cobra.Command{
		Use:   "set HOST[:PORT]/REPO --file gate.json",
		Short: "Create or replace a repository's gate from a JSON file",
		Long: `Create or replace a repository's gate: the file is the body of
PUT /api/v1/repository/{repo}/gate, for example
  {"tags": ["15-*"], "required_checks": ["e2e"],
   "policy": "scan.status == \"scanned\" && scan.counts.critical == 0"}
(fields: tags, policy, required_checks, keys, rollback_tag, checkers,
scan_severity; see docs/gates.md). A policy that does not compile is
refused with the line and column of each error. --file - reads standard
input (not with --password-stdin). Needs admin on the repository.

` + credentialsHelp,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return errors.New("--file is required")
			}
			if file == "-" && cf.passwordStdin {
				return errors.New("--file - and --password-stdin both read standard input: use BERTH_PASSWORD or a file")
			}
			var raw []byte
			var err error
			if file == "-" {
				raw, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20))
			} else {
				raw, err = os.ReadFile(file)
			}
			if err != nil {
				return err
			}
			var body json.RawMessage
			if err := json.Unmarshal(raw, &body); err != nil {
				return fmt.Errorf("%s: not JSON: %w", file, err)
			}
			c, repo, err := repoClient(cmd, args[0], cf)
			if err != nil {
				return err
			}
			var g gateInfo
			if err := c.call(cmd.Context(), http.MethodPut, repoPath(repo)+"/gate", nil, body, &g); err != nil {
				return err
			}
			printGate(cmd.OutOrStdout(), c.host+"/"+repo, g)
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "", "the gate's configuration, JSON (- for standard input)")
	return cmd
}

func gateDeleteCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "delete HOST[:PORT]/REPO",
		Short: "Delete a repository's gate: what it held becomes readable, its live candidates are withdrawn",
		Long: `Delete a repository's gate. Everything it held becomes readable, its
pending and blocked candidates are withdrawn (their tags stay where they
are: nothing is promoted), and pushes to its tags move them again. Needs
admin on the repository.

` + credentialsHelp,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, repo, err := repoClient(cmd, args[0], cf)
			if err != nil {
				return err
			}
			if err := c.call(cmd.Context(), http.MethodDelete, repoPath(repo)+"/gate", nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted the gate of %s/%s: held content is readable, pending and blocked candidates are withdrawn\n", c.host, repo)
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}
