package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/meta"
)

// opener opens the metadata store the admin commands work on.
type opener func(cmd *cobra.Command) (*meta.DB, error)

// auditLog is where admin commands record what they did (meta.Access).
type auditLog interface {
	AppendAudit(ctx context.Context, e meta.AuditEntry) error
}

// namespaces looks accounts and namespaces up (meta.Users).
type namespaces interface {
	UserByName(ctx context.Context, username string) (meta.User, error)
	NamespaceByName(ctx context.Context, name string) (meta.Namespace, error)
}

// auditAdmin records what an admin command did; the change itself is
// already made, so a failure to record it is reported, not returned.
func auditAdmin(cmd *cobra.Command, audit auditLog, e meta.AuditEntry, md any) {
	e.Actor = "berth admin"
	b, _ := json.Marshal(md)
	e.Metadata = b
	if err := audit.AppendAudit(cmd.Context(), e); err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: the audit log entry was not written: %v\n", err)
	}
}

// ownerUser looks up the user an organization is given to, with the reason
// why not in words an operator can act on.
func ownerUser(ctx context.Context, users namespaces, name string) (meta.User, error) {
	u, err := users.UserByName(ctx, name)
	if errors.Is(err, meta.ErrUserNotFound) {
		return meta.User{}, fmt.Errorf("unknown user %q (create it first: berth admin user create %s)", name, name)
	}
	if err != nil {
		return meta.User{}, err
	}
	if u.Kind != meta.UserKindUser {
		return meta.User{}, fmt.Errorf("%s is a robot: an organization is owned by a user", name)
	}
	return u, nil
}

// organization looks up an organization by name; a user's namespace or a
// missing one is refused with the reason.
func organization(ctx context.Context, users namespaces, name string) (meta.Namespace, error) {
	ns, err := users.NamespaceByName(ctx, name)
	if errors.Is(err, meta.ErrNamespaceNotFound) {
		return meta.Namespace{}, fmt.Errorf("unknown organization %q (create it: berth admin org create %s --owner USER)", name, name)
	}
	if err != nil {
		return meta.Namespace{}, err
	}
	if ns.Kind != meta.NamespaceOrg {
		return meta.Namespace{}, fmt.Errorf("%q is a user's namespace, not an organization: only organizations have teams", name)
	}
	return ns, nil
}

func orgCmd(open opener) *cobra.Command {
	org := &cobra.Command{Use: "org", Short: "Create and list organizations"}
	var owner, email string
	create := &cobra.Command{
		Use:   "create NAME --owner USER",
		Short: "Create an organization; USER joins its owners team",
		Long: `Create an organization, a namespace that users share through teams. The
owner (an existing user) joins the organization's owners team, which
administers it; add others with "berth admin team".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := validateUsername(name); err != nil {
				return fmt.Errorf("organization %w", err)
			}
			if email != "" {
				if a, err := mail.ParseAddress(email); err != nil || a.Address != email {
					return fmt.Errorf("invalid e-mail address %q", email)
				}
			}
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			ctx := cmd.Context()
			u, err := ownerUser(ctx, db.Users(), owner)
			if err != nil {
				return err
			}
			if _, err := db.Organizations().CreateOrganization(ctx, name, u.ID); errors.Is(err, meta.ErrExists) {
				return fmt.Errorf("a user or organization named %q already exists", name)
			} else if err != nil {
				return err
			}
			if email != "" {
				if err := db.Users().SetNamespaceEmail(ctx, name, email); err != nil {
					return err
				}
			}
			auditAdmin(cmd, db.Access(), meta.AuditEntry{Kind: "org_create", Namespace: name}, map[string]string{"namespace": name, "owner": owner})
			fmt.Fprintf(cmd.OutOrStdout(), "created organization %s (owner: %s)\n", name, owner)
			return nil
		},
	}
	create.Flags().StringVar(&owner, "owner", "", "user who owns the organization (required)")
	create.Flags().StringVar(&email, "email", "", "e-mail address of the organization")
	create.MarkFlagRequired("owner")

	list := &cobra.Command{
		Use:   "list",
		Short: "List organizations and their owners",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			orgs, err := db.Organizations().Organizations(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ORGANIZATION\tOWNERS\tE-MAIL")
			for _, o := range orgs {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", o.Name, orNone(strings.Join(o.Owners, ",")), orNone(o.Email))
			}
			return tw.Flush()
		},
	}
	org.AddCommand(create, list)
	return org
}

// teamRoles are the roles a team holds in its organization.
var teamRoles = []string{"member", "creator", "admin"}

func teamCmd(open opener) *cobra.Command {
	team := &cobra.Command{Use: "team", Short: "Create teams of an organization and add members"}
	var role, description string
	create := &cobra.Command{
		Use:   "create ORG TEAM --role member|creator|admin",
		Short: "Create a team in an organization",
		Long: `Create a team in an organization. Its role applies to every repository of
the organization: member (only what repository permissions grant),
creator (may also create repositories, by pushing) or admin (administers
the organization and all its repositories).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			orgName, name := args[0], args[1]
			if err := validateUsername(name); err != nil {
				return fmt.Errorf("team %w", err)
			}
			if !slices.Contains(teamRoles, role) {
				return fmt.Errorf("unknown team role %q (%s)", role, strings.Join(teamRoles, ", "))
			}
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			ctx := cmd.Context()
			if _, err := organization(ctx, db.Users(), orgName); err != nil {
				return err
			}
			if _, err := db.Organizations().TeamByName(ctx, orgName, name); err == nil {
				return fmt.Errorf("team %s already exists in organization %s", name, orgName)
			} else if !errors.Is(err, meta.ErrTeamNotFound) {
				return err
			}
			if _, err := db.Organizations().PutTeam(ctx, orgName, meta.Team{Name: name, Role: role, Description: description}); err != nil {
				return err
			}
			auditAdmin(cmd, db.Access(), meta.AuditEntry{Kind: "team_change", Namespace: orgName},
				map[string]any{"team": name, "role": role, "description": description, "created": true})
			fmt.Fprintf(cmd.OutOrStdout(), "created team %s in %s (role: %s)\n", name, orgName, role)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "member", "member, creator or admin")
	create.Flags().StringVar(&description, "description", "", "what the team is for")

	add := &cobra.Command{
		Use:   "add-member ORG TEAM USER",
		Short: "Add a user (or a robot of the organization) to a team",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			orgName, name, member := args[0], args[1], args[2]
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			ctx := cmd.Context()
			ns, err := organization(ctx, db.Users(), orgName)
			if err != nil {
				return err
			}
			t, err := db.Organizations().TeamByName(ctx, orgName, name)
			if errors.Is(err, meta.ErrTeamNotFound) {
				return fmt.Errorf("unknown team %q in organization %s (create it: berth admin team create %s %s --role member)", name, orgName, orgName, name)
			} else if err != nil {
				return err
			}
			u, err := db.Users().UserByName(ctx, member)
			if errors.Is(err, meta.ErrUserNotFound) {
				return fmt.Errorf("unknown user %q", member)
			} else if err != nil {
				return err
			}
			if u.Kind == meta.UserKindRobot && u.NamespaceID != ns.ID {
				robotNS, _, _ := strings.Cut(u.Username, "+")
				return fmt.Errorf("robot %s belongs to namespace %s; only robots of %s may join its teams", u.Username, robotNS, orgName)
			}
			members, err := db.Organizations().TeamMembers(ctx, t.ID)
			if err != nil {
				return err
			}
			if slices.ContainsFunc(members, func(m meta.User) bool { return m.ID == u.ID }) {
				fmt.Fprintf(cmd.OutOrStdout(), "%s is already in team %s of %s\n", member, name, orgName)
				return nil
			}
			if err := db.Organizations().AddTeamMember(ctx, t.ID, u.ID); err != nil {
				return err
			}
			auditAdmin(cmd, db.Access(), meta.AuditEntry{Kind: "team_member_add", Namespace: orgName}, map[string]string{"member": member, "team": name})
			fmt.Fprintf(cmd.OutOrStdout(), "added %s to team %s of %s\n", member, name, orgName)
			return nil
		},
	}

	list := &cobra.Command{
		Use:   "list ORG",
		Short: "List an organization's teams, roles and members",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			ctx := cmd.Context()
			if _, err := organization(ctx, db.Users(), args[0]); err != nil {
				return err
			}
			teams, err := db.Organizations().Teams(ctx, args[0])
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TEAM\tROLE\tMEMBERS")
			for _, t := range teams {
				members, err := db.Organizations().TeamMembers(ctx, t.ID)
				if err != nil {
					return err
				}
				names := make([]string, 0, len(members))
				for _, m := range members {
					names = append(names, m.Username)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", t.Name, t.Role, orNone(strings.Join(names, ",")))
			}
			return tw.Flush()
		},
	}
	team.AddCommand(create, add, list)
	return team
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
