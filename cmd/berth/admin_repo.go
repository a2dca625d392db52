package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

var (
	repoVisibilities = []string{"private", "public"}
	repoStates       = []string{auth.StateNormal, auth.StateReadOnly, auth.StateMirror}
)

func repoCmd(open opener) *cobra.Command {
	repo := &cobra.Command{Use: "repo", Short: "Create and list repositories"}
	var visibility, state, description string
	create := &cobra.Command{
		Use:   "create NAMESPACE/NAME [--visibility private|public] [--state NORMAL|READ_ONLY|MIRROR]",
		Short: "Create an empty repository in an existing namespace",
		Long: `Create an empty repository in an existing namespace (a user or an
organization). Its namespace's owners administer it. A repository in state
READ_ONLY refuses every write; one in state MIRROR accepts writes only from
its mirror's robot (configure the mirror through the API).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			full := args[0]
			ns, name, ok := strings.Cut(full, "/")
			if !ok || name == "" {
				return fmt.Errorf("repository %q: want NAMESPACE/NAME", full)
			}
			if err := validateUsername(ns); err != nil {
				return fmt.Errorf("namespace %w", err)
			}
			if err := oci.ValidateName(full); err != nil {
				return fmt.Errorf("repository name %q: %w", full, err)
			}
			if !slices.Contains(repoVisibilities, visibility) {
				return fmt.Errorf("unknown visibility %q (%s)", visibility, strings.Join(repoVisibilities, ", "))
			}
			if !slices.Contains(repoStates, state) {
				return fmt.Errorf("unknown state %q (%s)", state, strings.Join(repoStates, ", "))
			}
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			ctx := cmd.Context()
			if _, err := db.Users().NamespaceByName(ctx, ns); errors.Is(err, meta.ErrNamespaceNotFound) {
				return fmt.Errorf("namespace %q does not exist (create it: berth admin org create %s --owner USER, or berth admin user create %s)", ns, ns, ns)
			} else if err != nil {
				return err
			}
			if err := db.Repositories().CreateRepository(ctx, full, visibility, description, "berth admin", 0); errors.Is(err, meta.ErrExists) {
				return fmt.Errorf("repository %s already exists", full)
			} else if err != nil {
				return err
			}
			auditAdmin(cmd, db.Access(), meta.AuditEntry{Kind: "create_repo", Namespace: ns, Repository: full},
				map[string]string{"repo": full, "visibility": visibility})
			if state != auth.StateNormal {
				if err := db.Repositories().UpdateRepository(ctx, full, nil, &state, nil, nil); err != nil {
					return fmt.Errorf("repository %s created, but its state was not set to %s: %w", full, state, err)
				}
				auditAdmin(cmd, db.Access(), meta.AuditEntry{Kind: "change_repo_state", Namespace: ns, Repository: full},
					map[string]string{"repo": full, "state": state})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created repository %s (%s, %s)\n", full, visibility, state)
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&visibility, "visibility", "private", "private or public (anyone may pull a public repository)")
	f.StringVar(&state, "state", auth.StateNormal, "NORMAL, READ_ONLY or MIRROR")
	f.StringVar(&description, "description", "", "description of the repository")

	var namespace string
	list := &cobra.Command{
		Use:   "list [--namespace NS]",
		Short: "List repositories with their visibility and state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REPOSITORY\tVISIBILITY\tSTATE")
			const page = 500
			q := meta.RepoQuery{Namespace: namespace, Limit: page}
			for {
				repos, err := db.Repositories().RepositoriesPage(cmd.Context(), q)
				if err != nil {
					return err
				}
				for _, r := range repos {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, r.Visibility, r.State)
				}
				if len(repos) < page {
					break
				}
				q.After = repos[len(repos)-1].Name
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&namespace, "namespace", "", "only the repositories of this user or organization")
	repo.AddCommand(create, list)
	return repo
}
