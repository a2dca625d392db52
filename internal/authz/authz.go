// Package authz authenticates requests against the metadata store and
// applies auth.Allowed to them: the /v2 authorizer, Docker's token
// endpoint, and the identity behind /api/v1 requests. It decides and
// creates nothing: its answers are Decisions, which the registry and the
// API turn into HTTP, and a push's plan to create its repository
// (meta.Writer.Create), which the push applies in its own transaction.
package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// Stores are the parts of the metadata store the authorizer uses.
type Stores struct {
	Users        UserStore       // meta.Users
	Repositories RepositoryStore // meta.Repositories
	Access       AccessStore     // meta.Access
}

// UserStore looks accounts and namespaces up (meta.Users).
type UserStore interface {
	UserByName(ctx context.Context, username string) (meta.User, error)
	UserByID(ctx context.Context, id int64) (meta.User, error)
	NamespaceByName(ctx context.Context, name string) (meta.Namespace, error)
}

// RepositoryStore looks a repository up (meta.Repositories).
type RepositoryStore interface {
	Repository(ctx context.Context, name string) (meta.RepoInfo, error)
}

// AccessStore holds tokens, standings, login throttles and the audit log
// (meta.Access).
type AccessStore interface {
	AccessTokenByName(ctx context.Context, name string) (meta.AccessToken, error)
	AccessTokenBySecretHash(ctx context.Context, h string) (meta.AccessToken, error)
	TouchAccessToken(ctx context.Context, id int64, stale time.Time) error
	StandingOf(ctx context.Context, u meta.User, repo string) (meta.Standing, error)
	LoginThrottle(ctx context.Context, window time.Duration, limits ...meta.LoginLimit) (time.Duration, error)
	ReserveLoginAttempt(ctx context.Context, window time.Duration, limits ...meta.LoginLimit) (bool, time.Duration, error)
	ReleaseLoginAttempt(ctx context.Context, key string, all bool) error
	AppendAudit(ctx context.Context, e meta.AuditEntry) error
}

// Options configure the authorizer.
type Options struct {
	// Realm is the token endpoint's URL for challenges; empty derives it
	// from the request's Host.
	Realm string
	// CreatePrivateRepoOnPush makes repositories created by a push
	// private (Quay's CREATE_PRIVATE_REPO_ON_PUSH, default true).
	CreatePrivateRepoOnPush bool
	// CreateNamespaceOnPush lets a push to an unknown namespace create an
	// organization owned by the pusher (CREATE_NAMESPACE_ON_PUSH).
	CreateNamespaceOnPush bool
	// Throttling of logins (see Login): at most PairLimit attempts per
	// account from one client address (default 10) and AddressLimit per
	// client address (default 50) within Window (default 5 minutes).
	PairLimit, AddressLimit int
	Window                  time.Duration
	// MaxHashes bounds the password hashes (argon2id, 19 MiB each) that
	// run at once in this process; default GOMAXPROCS, at least 2 and at
	// most 4.
	MaxHashes int
	Logger    *slog.Logger
}

// Authorizer authenticates and authorizes requests.
type Authorizer struct {
	store  Stores
	tokens *auth.Tokens
	opts   Options
	log    *slog.Logger
	now    func() time.Time

	// cache of recent successful password checks: argon2id is deliberately
	// slow, and clients using Basic auth send it on every request. Only a
	// speed-up: every replica decides the same without it.
	mu    sync.Mutex
	cache map[[32]byte]time.Time
	// used notes when this process last recorded each access token's use
	// (firstUseInInterval).
	used map[int64]time.Time
	// refused notes when this process last audited each account's refused
	// credential (a disabled robot's, a revoked token's): auditOnce.
	refused map[string]time.Time
	// verified registry tokens (tokencache.go)
	verified tokenCache

	hashes *hashGate
	// verify checks a password against its hash (auth.VerifyPassword;
	// tests count the calls).
	verify func(hash, password string) bool
	// decoyHash is what an unknown name's password is checked against
	// (unknownNameLogin), made on first use.
	decoyOnce sync.Once
	decoyHash string
}

// New returns an authorizer.
func New(store Stores, tokens *auth.Tokens, opts Options) *Authorizer {
	if opts.PairLimit == 0 {
		opts.PairLimit = 10
	}
	if opts.AddressLimit == 0 {
		opts.AddressLimit = 50
	}
	if opts.Window == 0 {
		opts.Window = 5 * time.Minute
	}
	if opts.MaxHashes == 0 {
		opts.MaxHashes = min(max(2, runtime.GOMAXPROCS(0)), 4)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Authorizer{store: store, tokens: tokens, opts: opts, log: opts.Logger, now: time.Now, cache: map[[32]byte]time.Time{},
		hashes: newHashGate(opts.MaxHashes, hashWaitersPerSlot*opts.MaxHashes, hashWait), verify: auth.VerifyPassword}
}

// SecretPrefix starts every generated robot and access token secret.
const SecretPrefix = "berth_"

// Errors of authentication.
var (
	ErrBadCredentials = errors.New("invalid username or password")
	ErrThrottled      = errors.New("too many failed logins; try again later")
	ErrBusy           = errors.New("too many logins at once; try again shortly")
	ErrDisabled       = errors.New("account disabled")
)

// Credentials are what a request presents.
type Credentials struct {
	Basic          bool
	Username, Pass string
	Bearer         string
}

// CredentialsOf reads the Authorization header.
func CredentialsOf(r *http.Request) Credentials {
	h := r.Header.Get("Authorization")
	if u, p, ok := r.BasicAuth(); ok {
		return Credentials{Basic: true, Username: u, Pass: p}
	}
	if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
		return Credentials{Bearer: strings.TrimSpace(tok)}
	}
	return Credentials{}
}

// ClientAddress is the request's remote address without the port, as
// the audit log and login throttling name a client: "2001:db8::1" for
// "[2001:db8::1]:1234" (the API's audit entries use it too).
func ClientAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// clientAddress is ClientAddress, as this package's callers name it.
var clientAddress = ClientAddress

func (a *Authorizer) checkAccessToken(ctx context.Context, name, secret string) (auth.Identity, error) {
	t, err := a.store.Access.AccessTokenByName(ctx, name)
	if errors.Is(err, meta.ErrTokenNotFound) {
		// Spend about as long as a real check, so that timing does not
		// reveal which names exist.
		auth.HashSecret(secret)
		return auth.Identity{}, ErrBadCredentials
	}
	if err != nil {
		return auth.Identity{}, err
	}
	if auth.HashSecret(secret) != t.SecretHash {
		return auth.Identity{}, ErrBadCredentials
	}
	id, _, err := a.tokenIdentity(ctx, t, true)
	return id, err
}

// tokenIdentity is who an access token acts as: its owner for a user's API
// token, else the token itself with its scopes. scopesNow says the
// request is decided on the scopes (Basic credentials, the secret as a
// bearer token), so the creator's rights are checked (creatorScopes). A
// registry token's request is decided on its claims, which the token
// endpoint decided on the scopes as they were then; the decisions it
// needs made now (subject.decide) bound the scopes by the creator's rights
// then, and for those the creator is returned (nil where none applies).
func (a *Authorizer) tokenIdentity(ctx context.Context, t meta.AccessToken, scopesNow bool) (auth.Identity, *meta.User, error) {
	if !t.RevokedAt.IsZero() || (!t.ExpiresAt.IsZero() && a.now().After(t.ExpiresAt)) {
		return auth.Identity{}, nil, ErrDisabled
	}
	id, creator, err := a.tokenSubject(ctx, t, scopesNow)
	if err == nil && a.now().Sub(t.LastUsedAt) > tokenUseInterval && a.firstUseInInterval(t.ID) {
		// Shown to its holders (last_used_at), to find tokens nobody uses.
		if err := a.store.Access.TouchAccessToken(context.WithoutCancel(ctx), t.ID, a.now().Add(-tokenUseInterval)); err != nil {
			a.log.Warn("record access token use", "token", t.Name, "err", err)
		}
	}
	return id, creator, err
}

// firstUseInInterval reports whether this process has not recorded a use
// of the token within tokenUseInterval, and notes one: concurrent requests
// that all read a stale last use write it once, not once each (only a
// saving: every replica may write it once).
func (a *Authorizer) firstUseInInterval(id int64) bool {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if at, ok := a.used[id]; ok && now.Sub(at) < tokenUseInterval {
		return false
	}
	if a.used == nil || len(a.used) >= maxVerifiedTokens {
		a.used = map[int64]time.Time{}
	}
	a.used[id] = now
	return true
}

// tokenUseInterval is how often a token's last use is recorded at most.
const tokenUseInterval = time.Minute

func (a *Authorizer) tokenSubject(ctx context.Context, t meta.AccessToken, scopesNow bool) (auth.Identity, *meta.User, error) {
	if t.OwnerID != 0 {
		u, err := a.store.Users.UserByID(ctx, t.OwnerID)
		if errors.Is(err, meta.ErrUserNotFound) {
			return auth.Identity{}, nil, ErrDisabled
		}
		if err != nil {
			return auth.Identity{}, nil, err
		}
		if !u.Active() {
			return auth.Identity{}, nil, ErrDisabled
		}
		kind := auth.KindUser
		if u.Kind == meta.UserKindRobot {
			kind = auth.KindRobot
		}
		// Its registry tokens are the user's: they stop with the user's
		// password (bearerIdentity), not with the token.
		return auth.Identity{Kind: kind, ID: u.ID, Name: u.Username, Superuser: u.Superuser,
			SecretFingerprint: meta.SecretFingerprint(u.SecretHash), ViaToken: true}, nil, nil
	}
	var scopes []auth.TokenScope
	if err := json.Unmarshal(t.Scopes, &scopes); err != nil {
		return auth.Identity{}, nil, fmt.Errorf("access token %s scopes: %w", t.Name, err)
	}
	if t.CreatedBy != "" && !strings.HasPrefix(t.CreatedBy, "token:") {
		// A scoped token is its creator's: it stops while the creator is
		// disabled (deleting the creator revokes it), and it acts only
		// where its creator may still make one (POST /tokens asks it of
		// each scope): a scope of a namespace the creator no longer
		// administers (removed from the organization, its team's role
		// taken away), or "*" of a creator no longer a superuser, is
		// dropped.
		u, err := a.store.Users.UserByName(ctx, t.CreatedBy)
		if err != nil && !errors.Is(err, meta.ErrUserNotFound) {
			return auth.Identity{}, nil, err
		}
		if err == nil && !u.Active() {
			return auth.Identity{}, nil, ErrDisabled
		}
		if err == nil && !scopesNow {
			return auth.Identity{Kind: auth.KindToken, ID: t.ID, Name: t.Name, Scopes: scopes}, &u, nil
		}
		if err == nil {
			if scopes, err = a.creatorScopes(ctx, u, scopes); err != nil {
				return auth.Identity{}, nil, err
			}
		}
	}
	return auth.Identity{Kind: auth.KindToken, ID: t.ID, Name: t.Name, Scopes: scopes}, nil, nil
}

// creatorScopes are the scopes of a creator's access token that the
// creator may still grant: every one for a superuser; else those of
// namespaces it administers (one decision per namespace).
func (a *Authorizer) creatorScopes(ctx context.Context, u meta.User, scopes []auth.TokenScope) ([]auth.TokenScope, error) {
	if u.Superuser {
		return scopes, nil
	}
	creator := auth.Identity{Kind: auth.KindUser, ID: u.ID, Name: u.Username}
	if u.Kind == meta.UserKindRobot {
		return nil, nil // robots administer no namespace
	}
	admin := map[string]bool{}
	kept := scopes[:0:0]
	for _, s := range scopes {
		if s.Repository == "*" {
			continue
		}
		ns, _, _ := strings.Cut(strings.TrimSuffix(s.Repository, "/*"), "/")
		ok, seen := admin[ns]
		if !seen {
			var err error
			if ok, err = a.Decide(ctx, creator, ns+"/", auth.ActionAdmin); err != nil {
				return nil, err
			}
			admin[ns] = ok
		}
		if ok {
			kept = append(kept, s)
		}
	}
	return kept, nil
}

// bearerIdentity is who a verified registry token acts as, checked
// again on every request as Basic credentials are: a user or robot that
// was disabled or deleted, or given a new secret (a password reset, a
// robot's token regenerated), or an access token revoked or expired since
// the token was issued, is refused from its next request on, not when the
// token expires (up to auth.tokenTTL later); so is a robot of a user's
// namespace while that user is disabled. The account must still have
// the id the token was issued for (tokens issued before ids were in them
// are checked by name) and the secret hash of the claim's fingerprint
// (tokens issued before fingerprints were in them are not checked so,
// and live out their auth.tokenTTL).
func (a *Authorizer) bearerIdentity(ctx context.Context, claims *auth.Claims) (auth.Identity, *meta.User, error) {
	switch claims.Kind {
	case auth.KindUser, auth.KindRobot:
		var u meta.User
		var err error
		if claims.SubjectID != 0 {
			u, err = a.store.Users.UserByID(ctx, claims.SubjectID)
		} else {
			u, err = a.store.Users.UserByName(ctx, claims.Subject)
		}
		if errors.Is(err, meta.ErrUserNotFound) {
			return auth.Identity{}, nil, ErrDisabled
		}
		if err != nil {
			return auth.Identity{}, nil, err
		}
		if !u.Active() || u.Username != claims.Subject || (u.Kind == meta.UserKindRobot) != (claims.Kind == auth.KindRobot) {
			return auth.Identity{}, nil, ErrDisabled
		}
		if claims.SecretFingerprint != "" && claims.SecretFingerprint != meta.SecretFingerprint(u.SecretHash) {
			return auth.Identity{}, nil, fmt.Errorf("%w: %s's secret changed since the token was issued", auth.ErrInvalidToken, u.Username)
		}
		return auth.Identity{Kind: claims.Kind, ID: u.ID, Name: u.Username, Superuser: u.Superuser}, nil, nil
	case auth.KindToken:
		t, err := a.store.Access.AccessTokenByName(ctx, claims.Subject)
		if errors.Is(err, meta.ErrTokenNotFound) {
			return auth.Identity{}, nil, ErrDisabled
		}
		if err != nil {
			return auth.Identity{}, nil, err
		}
		if claims.SubjectID != 0 && t.ID != claims.SubjectID {
			return auth.Identity{}, nil, ErrDisabled
		}
		return a.tokenIdentity(ctx, t, false)
	case auth.KindAnonymous, "":
		return auth.Anonymous, nil, nil
	}
	return auth.Identity{}, nil, fmt.Errorf("registry token for %q: %w", claims.Kind, auth.ErrInvalidToken)
}

// caller is who sent a request.
type caller struct {
	id auth.Identity
	// claims are the registry token's, for a request that came with one.
	claims *auth.Claims
	// creator is, for a scoped access token's registry token, the user
	// who made the access token: its rights bound the token's scopes
	// (creatorScopes) in the decisions made now rather than on the
	// claims (subject.decide), and only there, so that the requests
	// decided on the claims cost no lookup more.
	creator *meta.User
}

// identify authenticates a request from its Basic credentials, an access
// token's secret or a registry token. No credentials is the anonymous
// identity; bad ones are an error.
func (a *Authorizer) identify(ctx context.Context, r *http.Request) (caller, error) {
	c := CredentialsOf(r)
	switch {
	case c.Basic:
		id, err := a.Login(ctx, r, c.Username, c.Pass)
		return caller{id: id}, err
	case strings.HasPrefix(c.Bearer, SecretPrefix):
		id, err := a.bearerSecretLogin(ctx, r, c.Bearer)
		return caller{id: id}, err
	case c.Bearer != "":
		claims, err := a.verified.verify(a.tokens, c.Bearer, a.now())
		if err != nil {
			return caller{}, err
		}
		id, creator, err := a.bearerIdentity(ctx, claims)
		return caller{id: id, claims: claims, creator: creator}, err
	}
	return caller{id: auth.Anonymous}, nil
}

// Decide answers whether an authenticated identity may act on a
// repository, consulting the store for the repository and the identity's
// standing (see subject.decide). An identity authenticated in the same
// request costs no second look at its account.
func (a *Authorizer) Decide(ctx context.Context, id auth.Identity, repo, action string) (bool, error) {
	return a.subject(id, repo).decide(ctx, action)
}

// Authenticate identifies the caller of an /api/v1 request: Allow with
// its identity; Unauthenticated for bad credentials and for registry
// tokens, which grant pull and push on named repositories and must not act
// as their user on the API; TooManyRequests for a login refused for now.
func (a *Authorizer) Authenticate(r *http.Request) (Decision, error) {
	c, err := a.identify(r.Context(), r)
	if d, ok := loginRefusal(err); ok {
		if d.Verdict == Unauthenticated {
			d.Reason = "invalid credentials"
		}
		return d, nil
	}
	if err != nil {
		return Decision{}, err
	}
	id := c.id
	if c.claims != nil {
		return Decision{Verdict: Unauthenticated, Reason: "registry tokens are not accepted here; use Basic credentials or an API token"}, nil
	}
	return allow(id, meta.Writer{Actor: id.Actor()}), nil
}

func (a *Authorizer) audit(ctx context.Context, r *http.Request, kind, actor, repo string, md any) {
	b, _ := json.Marshal(md)
	ns, _, _ := strings.Cut(repo, "/")
	if err := a.store.Access.AppendAudit(ctx, meta.AuditEntry{Kind: kind, Actor: auditActor(actor), IP: ClientAddress(r), Namespace: ns, Repository: repo, Metadata: b}); err != nil {
		a.log.Warn("audit log", "err", err)
	}
}
