package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/server"
)

// adminCmd administers accounts directly in the metadata database, with no
// server running (or while one runs: the database coordinates).
func adminCmd() *cobra.Command {
	var st settings
	admin := &cobra.Command{Use: "admin", Short: "Administer users, organizations, teams, repositories and tokens without a running server"}
	st.register(admin, false)
	open := func(cmd *cobra.Command) (*meta.DB, error) {
		cfg, err := st.load(cmd)
		if err != nil {
			return nil, err
		}
		return openStore(cmd.Context(), cfg)
	}
	openMigrating := func(cmd *cobra.Command) (*meta.DB, error) {
		cfg, err := st.load(cmd)
		if err != nil {
			return nil, err
		}
		// As berth serve: a mis-keyed replica's migrate step must not
		// move the schema under the running replicas.
		if err := server.CheckRecordedKey(cmd.Context(), cfg); err != nil {
			return nil, err
		}
		if cfg.Storage.Filesystem.Fsync {
			return meta.Open(cmd.Context(), cfg.DatabaseURL(), meta.SyncFull())
		}
		return meta.Open(cmd.Context(), cfg.DatabaseURL())
	}

	user := &cobra.Command{Use: "user", Short: "Create, list, disable and enable users, and reset passwords"}
	var email string
	var superuser, passwordStdin bool
	create := &cobra.Command{
		Use:   "create USERNAME",
		Short: "Create a user (prints a generated password unless --password-stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := validateUsername(name); err != nil {
				return err
			}
			password, generated, hash, err := newPassword(cmd.InOrStdin(), passwordStdin)
			if err != nil {
				return err
			}
			// The first user may be made before the first start: the
			// database is created if need be, and the note says so.
			cfg, err := st.load(cmd)
			if err != nil {
				return err
			}
			db, err := openOrCreateStore(cmd.Context(), cfg, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer db.Close()
			if _, err := db.Users().CreateUser(cmd.Context(), meta.User{Username: name, Email: email, SecretHash: hash, Superuser: superuser}); errors.Is(err, meta.ErrExists) {
				return fmt.Errorf("a user or organization named %q already exists", name)
			} else if err != nil {
				return err
			}
			db.Access().AppendAudit(cmd.Context(), meta.AuditEntry{Kind: "user_create", Actor: "berth admin", Namespace: name,
				Metadata: json.RawMessage(fmt.Sprintf(`{"superuser":%t}`, superuser))})
			fmt.Fprintf(cmd.OutOrStdout(), "created user %s (superuser: %t)\n", name, superuser)
			if generated {
				fmt.Fprintf(cmd.OutOrStdout(), "password: %s\n", password)
			}
			return nil
		},
	}
	create.Flags().StringVar(&email, "email", "", "e-mail address")
	create.Flags().BoolVar(&superuser, "superuser", false, "make the user a superuser")
	create.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input")

	var resetStdin bool
	reset := &cobra.Command{
		Use:   "reset-password USERNAME",
		Short: "Set a new password (prints a generated one unless --password-stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			password, generated, hash, err := newPassword(cmd.InOrStdin(), resetStdin)
			if err != nil {
				return err
			}
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			u, err := db.Users().UserByName(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if u.Kind != meta.UserKindUser {
				return fmt.Errorf("%s is a robot: regenerate its token through the API", args[0])
			}
			// UpdateUser also signs out the browsers signed in with the old
			// password.
			if _, err := db.Users().UpdateUser(cmd.Context(), args[0], meta.UserChange{SecretHash: &hash}); err != nil {
				return err
			}
			db.Access().AppendAudit(cmd.Context(), meta.AuditEntry{Kind: "password_reset", Actor: "berth admin", Namespace: args[0]})
			fmt.Fprintf(cmd.OutOrStdout(), "password of %s reset\n", args[0])
			if generated {
				fmt.Fprintf(cmd.OutOrStdout(), "password: %s\n", password)
			}
			return nil
		},
	}
	reset.Flags().BoolVar(&resetStdin, "password-stdin", false, "read the password from standard input")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the users (not robots): name, e-mail, superuser, enabled or disabled",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			users, err := db.Users().ListUsers(cmd.Context(), meta.UserQuery{})
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "USER\tE-MAIL\tSUPERUSER\tSTATE")
			for _, u := range users {
				state := "enabled"
				if !u.Enabled {
					state = "disabled"
				}
				fmt.Fprintf(tw, "%s\t%s\t%t\t%s\n", u.Username, u.Email, u.Superuser, state)
			}
			return tw.Flush()
		},
	}
	// disable and enable work on superusers too, which the API refuses:
	// the way to shut out a superuser's account that is not in safe hands.
	setEnabled := func(enabled bool) *cobra.Command {
		verb := map[bool]string{true: "enable", false: "disable"}[enabled]
		return &cobra.Command{
			Use:   verb + " USERNAME",
			Short: map[bool]string{true: "Let a disabled user sign in again", false: "Refuse a user's password and tokens, and sign out its browsers"}[enabled],
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				db, err := open(cmd)
				if err != nil {
					return err
				}
				defer db.Close()
				if _, err := db.Users().UpdateUser(cmd.Context(), args[0], meta.UserChange{Enabled: &enabled}); errors.Is(err, meta.ErrUserNotFound) {
					return fmt.Errorf("no user %q (robots are deleted or regenerated through the API)", args[0])
				} else if err != nil {
					return err
				}
				db.Access().AppendAudit(cmd.Context(), meta.AuditEntry{Kind: "user_change", Actor: "berth admin", Namespace: args[0],
					Metadata: json.RawMessage(fmt.Sprintf(`{"enabled":%t}`, enabled))})
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %sd\n", args[0], verb)
				return nil
			},
		}
	}
	user.AddCommand(create, reset, list, setEnabled(false), setEnabled(true))

	token := &cobra.Command{Use: "token", Short: "Issue and revoke scoped access tokens"}
	var scopes []string
	var expires time.Duration
	issue := &cobra.Command{
		Use:   "create NAME --scope 'org/*=content/read,content/write' ...",
		Short: "Issue a scoped access token; the secret is printed once",
		Long: `Issue a scoped access token. Each --scope is REPOSITORY=ACTION[,ACTION...]:
the repository is a name, a prefix ending in /* or * for all; actions are
content/read, content/write, content/delete, metadata/read, metadata/write,
checks (see a gate's candidates and post check results).
Log in with the token's name as username and the printed secret as password.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := notNegative("--expires", expires); err != nil {
				return err
			}
			parsed, err := parseTokenScopes(scopes)
			if err != nil {
				return err
			}
			if err := validateUsername(args[0]); err != nil {
				return err
			}
			secret, err := auth.NewSecret(authz.SecretPrefix)
			if err != nil {
				return err
			}
			b, _ := json.Marshal(parsed)
			t := meta.AccessToken{Name: args[0], SecretHash: auth.HashSecret(secret), Scopes: b, CreatedBy: "berth admin"}
			if expires > 0 {
				t.ExpiresAt = time.Now().Add(expires)
			}
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			if _, err := db.Access().CreateAccessToken(cmd.Context(), t); err != nil {
				return err
			}
			db.Access().AppendAudit(cmd.Context(), meta.AuditEntry{Kind: "token_create", Actor: "berth admin", Metadata: json.RawMessage(fmt.Sprintf(`{"token":%q,"scopes":%s}`, args[0], b))})
			fmt.Fprintf(cmd.OutOrStdout(), "created token %s\nsecret: %s\n", args[0], secret)
			return nil
		},
	}
	issue.Flags().StringArrayVar(&scopes, "scope", nil, "REPOSITORY=ACTIONS (repeatable)")
	issue.Flags().DurationVar(&expires, "expires", 0, "lifetime, e.g. 720h (default: no expiry)")
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an access token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			if err := db.Access().RevokeAccessToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			db.Access().AppendAudit(cmd.Context(), meta.AuditEntry{Kind: "token_revoke", Actor: "berth admin", Metadata: json.RawMessage(fmt.Sprintf(`{"token":%q}`, args[0]))})
			fmt.Fprintf(cmd.OutOrStdout(), "revoked token %s\n", args[0])
			return nil
		},
	}
	token.AddCommand(issue, revoke)

	robot := &cobra.Command{Use: "robot", Short: "Create robot accounts"}
	robotCreate := &cobra.Command{
		Use:   "create NAMESPACE+NAME",
		Short: "Create a robot account of a namespace; its token is printed once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, short, ok := strings.Cut(args[0], "+")
			if !ok || validateUsername(ns) != nil || validateUsername(short) != nil {
				return fmt.Errorf("robot name %q: want NAMESPACE+NAME", args[0])
			}
			secret, err := auth.NewSecret(authz.SecretPrefix)
			if err != nil {
				return err
			}
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			if _, err := db.Users().CreateRobot(cmd.Context(), ns, short, auth.HashSecret(secret)); errors.Is(err, meta.ErrNamespaceNotFound) {
				return fmt.Errorf("namespace %q does not exist (create it: berth admin org create %s --owner USER, or berth admin user create %s)", ns, ns, ns)
			} else if errors.Is(err, meta.ErrExists) {
				return fmt.Errorf("robot %s already exists", args[0])
			} else if err != nil {
				return err
			}
			db.Access().AppendAudit(cmd.Context(), meta.AuditEntry{Kind: "robot_create", Actor: "berth admin", Namespace: ns,
				Metadata: json.RawMessage(fmt.Sprintf(`{"robot":%q}`, args[0]))})
			fmt.Fprintf(cmd.OutOrStdout(), "created robot %s\ntoken: %s\n", args[0], secret)
			return nil
		},
	}
	robot.AddCommand(robotCreate)
	admin.AddCommand(user, orgCmd(open), teamCmd(open), repoCmd(open), token, robot, vulndbCmd(open), gcCmd(&st), migrateCmd(openMigrating))
	return admin
}

// newPassword reads a password from in, or generates one, and hashes it.
func newPassword(in io.Reader, fromStdin bool) (password string, generated bool, hash string, err error) {
	if fromStdin {
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", false, "", err
		}
		password = strings.TrimRight(line, "\r\n")
		if !auth.PasswordLengthOK(password) {
			return "", false, "", fmt.Errorf("password: %d to %d characters (one longer could never sign in)", auth.MinPasswordLength, auth.MaxPasswordLength)
		}
	} else {
		s, err := auth.NewSecret("")
		if err != nil {
			return "", false, "", err
		}
		password, generated = s[:24], true
	}
	hash, err = auth.HashPassword(password)
	return password, generated, hash, err
}

// validateUsername applies the namespace grammar: a user's name is its
// namespace, the first component of its repositories' names.
func validateUsername(name string) error {
	if strings.Contains(name, "/") || strings.Contains(name, "+") {
		return fmt.Errorf("name %q: no '/' or '+'", name)
	}
	return oci.ValidateName(name)
}

func parseTokenScopes(in []string) ([]auth.TokenScope, error) {
	if len(in) == 0 {
		return nil, errors.New("at least one --scope is needed")
	}
	var out []auth.TokenScope
	for _, s := range in {
		repo, actions, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("scope %q: want REPOSITORY=ACTIONS", s)
		}
		ts := auth.TokenScope{Repository: repo, Actions: strings.Split(actions, ",")}
		if err := auth.ValidateTokenScope(ts); err != nil {
			return nil, err
		}
		out = append(out, ts)
	}
	return out, nil
}
