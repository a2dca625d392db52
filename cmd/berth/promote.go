package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/spf13/cobra"
)

// berth promote and berth check: a gate's manual promotion and a
// pipeline's check result (docs/gates.md).

// promoteAnswer is the answer of POST .../promote: 200 when promoted,
// 409 policy_not_passed with the reasons when not.
type promoteAnswer struct {
	Candidate   int64           `json:"candidate"`
	State       string          `json:"state"`
	Tag         string          `json:"tag"`
	Digest      string          `json:"digest"`
	RollbackTag string          `json:"rollback_tag"`
	Reasons     []string        `json:"reasons"`
	ErrorType   string          `json:"error_type"`
	Evaluation  json.RawMessage `json:"evaluation"`
}

// promoteCmd promotes a manifest to a guarded tag.
func promoteCmd() *cobra.Command {
	var cf clientFlags
	var tag, reason string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "promote HOST[:PORT]/REPO@DIGEST --tag TAG",
		Short: "Promote a manifest to a guarded tag if the gate's policy passes now (exit 1 with the reasons if not)",
		Long: `Ask the repository's gate to promote a manifest to one of its guarded
tags: the manifest becomes the tag's candidate (superseding the tag's other
pending or blocked candidates) and is evaluated at once. When the policy
passes, the tag moves to it and an immutable rollback tag is made; the
command prints both. When it does not, the command prints the reasons and
exits 1; the candidate stays pending or blocked, and the gate still
promotes it by itself once its inputs pass (a check posted, a signature
pushed, a scan finished).

The manifest is HOST[:PORT]/REPO@DIGEST, HOST[:PORT]/REPO DIGEST, or
HOST[:PORT]/REPO:TAG (the digest that tag points at). Needs admin on the
repository. A superuser may promote regardless of the policy with
--override-reason, which is recorded in the audit log and the
promotion_succeeded event.

` + credentialsHelp,
		Example: `  berth promote registry.example.com/team/postgres@sha256:4f1c... --tag 15-alpine -u alice --password-stdin
  berth promote registry.example.com/team/postgres sha256:4f1c... --tag 15-alpine --override-reason "CVE hotfix, e2e flaky (INC-4411)"`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tag == "" {
				return errors.New("--tag is required: the guarded tag to promote to")
			}
			c, repo, dgst, err := manifestClient(cmd, args, cf)
			if err != nil {
				return err
			}
			req := map[string]string{"digest": dgst, "tag": tag}
			if reason != "" {
				req["override_reason"] = reason
			}
			var ans promoteAnswer
			err = c.call(cmd.Context(), http.MethodPost, repoPath(repo)+"/promote", nil, req, &ans)
			var se *apiStatusError
			if errors.As(err, &se) && se.code == http.StatusConflict {
				if json.Unmarshal(se.body, &ans) != nil || ans.ErrorType != "policy_not_passed" {
					return err // decided meanwhile, or the tag already points there
				}
			} else if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(ans); err != nil {
					return err
				}
			}
			if ans.State != "promoted" {
				if !asJSON {
					fmt.Fprintf(w, "NOT PROMOTED: %s/%s@%s to %s: candidate %d is %s\n", c.host, repo, dgst, tag, ans.Candidate, ans.State)
					for _, r := range ans.Reasons {
						fmt.Fprintf(w, "  - %s\n", r)
					}
					if ans.State == "pending" || ans.State == "blocked" {
						fmt.Fprintln(w, "The candidate stays "+ans.State+": the gate promotes it once its inputs pass.")
					}
				}
				return &exitCodeError{code: 1, msg: fmt.Sprintf("not promoted: candidate %d is %s", ans.Candidate, ans.State)}
			}
			if !asJSON {
				fmt.Fprintf(w, "promoted %s/%s@%s\n", c.host, repo, ans.Digest)
				fmt.Fprintf(w, "  tag:           %s\n", ans.Tag)
				fmt.Fprintf(w, "  rollback tag:  %s (immutable)\n", ans.RollbackTag)
				fmt.Fprintf(w, "  candidate:     %d\n", ans.Candidate)
				if reason != "" {
					fmt.Fprintf(w, "  override:      %s\n", reason)
				}
			}
			return nil
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVarP(&tag, "tag", "t", "", "the guarded tag to promote to (required)")
	f.StringVar(&reason, "override-reason", "", "promote regardless of the policy (superusers only); the reason is audited")
	f.BoolVar(&asJSON, "json", false, "print the API's answer (with the evaluation) as JSON")
	return cmd
}

// checkStatuses are the statuses a posted check may have.
var checkStatuses = []string{"pending", "pass", "fail"}

// checkCmd posts a check result for a manifest (a pipeline step).
func checkCmd() *cobra.Command {
	var cf clientFlags
	var check struct {
		Name       string `json:"name"`
		Status     string `json:"status"`
		DetailsURL string `json:"details_url,omitempty"`
		Summary    string `json:"summary,omitempty"`
	}
	cmd := &cobra.Command{
		Use:   "check HOST[:PORT]/REPO@DIGEST --name NAME --status pending|pass|fail",
		Short: "Post a check result for a manifest: the gate evaluates its candidates again",
		Long: `Post the result of a check (tests, a review, a scan of your own) for a
manifest, as a pipeline step does once it has tested a candidate. It
replaces the previous result of that name for that manifest; the gate then
evaluates the manifest's candidates again, and may promote one.

The manifest is HOST[:PORT]/REPO@DIGEST, HOST[:PORT]/REPO DIGEST, or
HOST[:PORT]/REPO:TAG (the digest that tag points at). Names starting with
berth/ are Berth's built-in checks and refused. Needs the checks
permission: a checker of the gate (user or robot), a repository admin, a
superuser, or an access token with the "checks" action.

` + credentialsHelp,
		Example: `  berth check registry.example.com/team/postgres@sha256:4f1c... --name e2e --status pass \
      --details-url https://ci.example.com/runs/812 --summary "120 tests passed" -u 'team+ci' --password-stdin`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if check.Name == "" {
				return errors.New("--name is required")
			}
			if !slices.Contains(checkStatuses, check.Status) {
				return fmt.Errorf("--status %q: want pending, pass or fail", check.Status)
			}
			c, repo, dgst, err := manifestClient(cmd, args, cf)
			if err != nil {
				return err
			}
			var stored postedCheck
			if err := c.call(cmd.Context(), http.MethodPost, repoPath(repo)+"/manifest/"+dgst+"/checks", nil, check, &stored); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "check %q is %s for %s/%s@%s (posted by %s)\n", stored.Name, stored.Status, c.host, repo, dgst, stored.Actor)
			return nil
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&check.Name, "name", "", "the check's name, e.g. e2e (required)")
	f.StringVar(&check.Status, "status", "", "pending, pass or fail (required)")
	f.StringVar(&check.DetailsURL, "details-url", "", "an http(s) link to the check's run")
	f.StringVar(&check.Summary, "summary", "", "one line on the result (at most 1024 bytes)")
	return cmd
}

// postedCheck is a check as the API answers it.
type postedCheck struct {
	Name       string    `json:"name"`
	Status     string    `json:"status"`
	DetailsURL string    `json:"details_url"`
	Summary    string    `json:"summary"`
	Actor      string    `json:"actor"`
	UpdatedAt  time.Time `json:"updated_at"`
}
