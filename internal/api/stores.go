package api

import (
	"context"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
)

// Stores are the metadata stores the API reads and changes, one small
// interface per job, each satisfied by one of meta's typed stores (named
// in the comment). internal/wire builds them from the metadata store.
type Stores struct {
	Users         UserLookup           // meta.Users
	Accounts      AccountAdmin         // meta.Users
	Robots        RobotStore           // meta.Users
	Orgs          OrgStore             // meta.Organizations
	Teams         TeamStore            // meta.Organizations
	Repositories  RepositoryStore      // meta.Repositories
	Tags          TagStore             // meta.Manifests
	Permissions   PermissionStore      // meta.Access
	Tokens        TokenStore           // meta.Access
	Audit         AuditStore           // meta.Access
	Notifications NotificationStore    // meta.Notifications
	Mirrors       MirrorStore          // meta.Mirrors
	ProxyCaches   ProxyCacheStore      // meta.ProxyCaches
	Keepers       KeeperStore          // meta.Collector
	VulnDB        VulnDBStore          // meta.VulnDB
	Gates         GateStore            // meta.Gates
	Restorer      TagRestorer          // meta.Manifests
	Policies      PolicyStore          // meta.Policies
	Quotas        QuotaStore           // meta.Quotas
	Usage         UsageStore           // meta.Quotas
	Emails        AuthorizedEmailStore // meta.Notifications
}

// AuthorizedEmailStore reads the addresses confirmed (or asked to
// confirm) for email notifications (the authorizedemail endpoints).
type AuthorizedEmailStore interface {
	AuthorizedEmail(ctx context.Context, scope, target, email string) (meta.AuthorizedEmail, error)
}

// UserLookup finds accounts and namespaces: every handler that names a
// user, a robot or an organization.
type UserLookup interface {
	UserByName(ctx context.Context, username string) (meta.User, error)
	UserByID(ctx context.Context, id int64) (meta.User, error)
	NamespaceByName(ctx context.Context, name string) (meta.Namespace, error)
}

// AccountAdmin lists, creates, changes and deletes users and sets a
// namespace's e-mail address (the user, superuser and organization
// endpoints, user/initialize).
type AccountAdmin interface {
	CountUsers(ctx context.Context) (int, error)
	CreateFirstUser(ctx context.Context, u meta.User, tok *meta.AccessToken) (meta.User, error)
	CreateUser(ctx context.Context, u meta.User) (meta.User, error)
	DeleteUser(ctx context.Context, username string) error
	SetNamespaceEmail(ctx context.Context, name, email string) error
	ListUsers(ctx context.Context, q meta.UserQuery) ([]meta.User, error)
	UpdateUser(ctx context.Context, username string, c meta.UserChange) (meta.User, error)
}

// RobotStore lists, creates, describes, rotates and deletes robot
// accounts (the robot endpoints).
type RobotStore interface {
	Robots(ctx context.Context, namespace string) ([]meta.User, error)
	CreateRobot(ctx context.Context, namespace, short, secretHash string) (meta.User, error)
	SetUserDescription(ctx context.Context, username, description string) error
	SetUserSecret(ctx context.Context, username, secretHash string) error
	DeleteRobot(ctx context.Context, username string) error
}

// OrgStore creates and deletes organizations and manages who belongs to
// them (the organization endpoints).
type OrgStore interface {
	CreateOrganization(ctx context.Context, name string, ownerID int64) (meta.Namespace, error)
	DeleteOrganization(ctx context.Context, name string) error
	OrgRole(ctx context.Context, org string, userID int64) (string, error)
	OrgMembers(ctx context.Context, org string) ([]meta.OrgMember, error)
	RemoveOrgMember(ctx context.Context, org, team string, userID int64) ([]string, error)
	UserOrganizations(ctx context.Context, userID int64) ([]string, error)
	SoleOwnerOf(ctx context.Context, userID int64) ([]string, error)
	Organizations(ctx context.Context) ([]meta.OrgSummary, error)
}

// TeamStore reads and changes an organization's teams (the team
// endpoints, repository permissions granted to a team).
type TeamStore interface {
	Teams(ctx context.Context, org string) ([]meta.Team, error)
	TeamByName(ctx context.Context, org, name string) (meta.Team, error)
	TeamMemberCounts(ctx context.Context, org string) (map[string]int, error)
	TeamMembers(ctx context.Context, teamID int64) ([]meta.User, error)
	PutTeam(ctx context.Context, org string, t meta.Team) (meta.Team, error)
	DeleteTeam(ctx context.Context, org, name string) error
	AddTeamMember(ctx context.Context, teamID, userID int64) error
}

// RepositoryStore reads, lists, creates, changes and deletes
// repositories (the repository endpoints, imports, user deletion).
type RepositoryStore interface {
	Repository(ctx context.Context, name string) (meta.RepoInfo, error)
	RepositoriesPage(ctx context.Context, q meta.RepoQuery) ([]meta.RepoSummary, error)
	CreateRepository(ctx context.Context, name, visibility, description, actor string, adminUserID int64) error
	EnsureRepository(ctx context.Context, name string, w meta.Writer) error
	UpdateRepository(ctx context.Context, name string, visibility, state, mirrorRobot, description *string) error
	DeleteRepository(ctx context.Context, name, actor string) error
	DeleteEmptyRepository(ctx context.Context, name, actor string) (bool, error)
}

// TagStore lists, moves and deletes tags and reads a manifest (the tag
// and security endpoints).
type TagStore interface {
	TagsPage(ctx context.Context, repo string, q meta.TagQuery) ([]meta.TagInfo, error)
	MoveTag(ctx context.Context, repo, tag string, d digest.Digest, actor string) error
	DeleteTag(ctx context.Context, repo, tag, actor string) error
	GetManifest(ctx context.Context, repo, tag string, d digest.Digest, withContent bool) (meta.Manifest, error)
	SetTagExpiration(ctx context.Context, repo, tag string, at time.Time) error
}

// PermissionStore reads and sets a repository's permissions.
type PermissionStore interface {
	RepoPermissions(ctx context.Context, repoID int64, namespace, kind, name string) ([]meta.RepoPermission, error)
	SetPermission(ctx context.Context, repoID int64, userID, teamID int64, role string) error
	DeletePermission(ctx context.Context, repoID int64, userID, teamID int64) error
}

// TokenStore creates, lists and revokes API access tokens.
type TokenStore interface {
	CreateAccessTokenCapped(ctx context.Context, t meta.AccessToken) (meta.AccessToken, error)
	AccessTokens(ctx context.Context) ([]meta.AccessToken, error)
	AccessTokensCreatedBy(ctx context.Context, createdBy string) ([]meta.AccessToken, error)
	AccessTokenByName(ctx context.Context, name string) (meta.AccessToken, error)
	RevokeAccessToken(ctx context.Context, name string) error
}

// AuditStore appends to the audit log and reads it.
type AuditStore interface {
	AppendAudit(ctx context.Context, e meta.AuditEntry) error
	AuditLog(ctx context.Context, namespace string, before int64, n int) ([]meta.AuditEntry, error)
	NamespaceAuditLog(ctx context.Context, namespace string, before int64, n int) ([]meta.AuditEntry, error)
	RepositoryAuditLog(ctx context.Context, repo string, before int64, n int) ([]meta.AuditEntry, error)
}

// NotificationStore reads, resets and deletes notifications and lists
// their delivery attempts (creating and testing one is the Notifier's).
type NotificationStore interface {
	Notifications(ctx context.Context, scope, target string) ([]meta.Notification, error)
	NotificationByUUID(ctx context.Context, scope, target, uuid string) (meta.Notification, error)
	ResetNotificationFailures(ctx context.Context, id int64) error
	DeleteNotification(ctx context.Context, id int64) error
	// AttemptsBefore lists at most n attempts older than the attempt
	// before (all when 0), newest first.
	AttemptsBefore(ctx context.Context, notificationID, before int64, n int) ([]meta.Attempt, error)
}

// MirrorStore reads and changes a repository's mirror configuration and
// asks for or cancels a sync.
type MirrorStore interface {
	GetMirror(ctx context.Context, repo string) (meta.Mirror, error)
	CreateMirror(ctx context.Context, m meta.Mirror) error
	UpdateMirror(ctx context.Context, m meta.Mirror, reschedule bool) error
	MirrorSyncNow(ctx context.Context, repo string) error
	MirrorSyncCancel(ctx context.Context, repo string) error
}

// ProxyCacheStore reads and changes an organization's proxy-cache
// configuration.
type ProxyCacheStore interface {
	ProxyCacheOf(ctx context.Context, namespace string) (meta.ProxyCache, error)
	SetProxyCache(ctx context.Context, pc meta.ProxyCache) error
	DeleteProxyCache(ctx context.Context, namespace string) error
}

// KeeperStore says what keeps a manifest from garbage collection.
type KeeperStore interface {
	ManifestGCKeepers(ctx context.Context, repo string, d digest.Digest) (meta.ManifestKeepers, error)
}

// VulnDBStore describes the imported vulnerability data, and starts an
// import of advisories into it (scan.NewImporter over the store).
type VulnDBStore interface {
	VulnSources(ctx context.Context) ([]meta.VulnSource, error)
	NewImport() VulnImport
}

// VulnImport is one import of advisories (*scan.Importer).
type VulnImport interface {
	JSON(ctx context.Context, r io.Reader, name string) error
	Zip(ctx context.Context, r io.ReaderAt, size int64, name string) error
	Finish(ctx context.Context) (scan.ImportStats, error)
}
