package authz

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// RetryError is a login refused for now, not for its credentials: Err is
// ErrThrottled or ErrBusy. It answers 429 with a Retry-After.
type RetryError struct {
	Err   error
	After time.Duration
}

func (e *RetryError) Error() string { return e.Err.Error() }
func (e *RetryError) Unwrap() error { return e.Err }

// RetryAfter is how long the client should wait before it tries again: at
// least a second.
func (e *RetryError) RetryAfter() time.Duration { return max(e.After, time.Second) }

// loginLimits are the two counters a login attempt is throttled by.
type loginLimits struct {
	pair, address meta.LoginLimit
}

func (a *Authorizer) loginLimits(username, addr string) loginLimits {
	addr = throttledAddress(addr)
	l := loginLimits{address: meta.LoginLimit{Key: "address:" + addr, Limit: a.opts.AddressLimit}}
	if len(username) <= maxUsernameLength {
		l.pair = meta.LoginLimit{Key: "account-address:" + addr + "|" + throttledName(username), Limit: a.opts.PairLimit}
	}
	return l
}

// maxUsernameLength is the longest name an account or access token can
// have: a longer one is refused at once, and counted only against the
// client address (an account-and-address counter per name would be one
// more row for each name an attacker makes up, and no account's).
const maxUsernameLength = 256

// throttledName is a user name as a throttle key holds it: itself, or the
// SHA-256 of a long one (a key must fit the database's index, and a
// name of up to 64 bytes cannot be "sha256:" and 64 hex digits).
func throttledName(username string) string {
	if len(username) <= 64 {
		return username
	}
	return fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(username)))
}

// throttledAddress is the part of a client address that login throttling
// counts: an IPv4 address, or the /64 network of an IPv6 one (a single
// client is usually given a whole /64, and would otherwise have 2^64
// budgets).
func throttledAddress(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	return netip.PrefixFrom(a.WithZone(""), 64).Masked().String()
}

// auditActor is an actor as the audit log records it: a name over
// maxUsernameLength bytes (sent at a login, no account's) cut to that
// many, at a character boundary, with a marker and its whole length.
func auditActor(actor string) string {
	if len(actor) <= maxUsernameLength {
		return actor
	}
	cut := maxUsernameLength
	for cut > 0 && !utf8.RuneStart(actor[cut]) {
		cut--
	}
	return fmt.Sprintf("%s…(truncated, %d bytes)", actor[:cut], len(actor))
}

// all is the counters of a login: the account-and-address one (none for a
// name no account can have) and the address's.
func (l loginLimits) all() []meta.LoginLimit {
	if l.pair.Key == "" {
		return []meta.LoginLimit{l.address}
	}
	return []meta.LoginLimit{l.pair, l.address}
}

// Login checks a username and secret: a user's password, a robot's token
// (username "namespace+name") or an access token's secret (username: the
// token's name).
//
// Attempts are throttled per account from one client address (PairLimit,
// 10 per Window of 5 minutes) and per client address (AddressLimit, 50),
// never per account alone: whoever knows a user name can use up only the
// counters of the addresses it sends from, and the user's right password
// from any other address is still accepted. Past a limit the answer is
// ErrThrottled (429) until the window ends, right password or not.
//
// A password costs an argon2id hash (19 MiB), so its attempt is counted
// before the hash runs, atomically in the database: a concurrent burst gets
// at most the limit of hashes through. A right password gives its attempt
// back (the pair's count is cleared, the address's decreased by one). A
// password verified in the last minute is accepted again without a hash or
// a write, after a read of the counters (else a throttled address could
// still learn which guess is right). At most MaxHashes passwords are hashed
// at once per process; a few more wait briefly for a turn, and beyond that
// the answer is ErrBusy (429).
//
// The other secrets cost one SHA-256: they are checked first and only a
// failure is counted, so that their success writes nothing.
func (a *Authorizer) Login(ctx context.Context, r *http.Request, username, secret string) (auth.Identity, error) {
	if !meta.ValidText(username) {
		// No account has such a name, and the database cannot store it as
		// a throttle key: refuse at once (it costs no hash).
		return auth.Identity{}, ErrBadCredentials
	}
	limits := a.loginLimits(username, clientAddress(r))
	refuse := func(err error) func() (auth.Identity, error) {
		return func() (auth.Identity, error) { return auth.Identity{}, err }
	}
	if username == "" || secret == "" || len(username) > maxUsernameLength || len(secret) > auth.MaxPasswordLength {
		return a.cheapLogin(ctx, r, limits, username, refuse(ErrBadCredentials))
	}
	u, err := a.store.Users.UserByName(ctx, username)
	switch {
	case errors.Is(err, meta.ErrUserNotFound) && strings.Contains(username, "+"):
		// A robot's name (or the initialize token's): one SHA-256, as
		// for a robot that exists.
		return a.cheapLogin(ctx, r, limits, username, func() (auth.Identity, error) {
			return a.checkAccessToken(ctx, username, secret)
		})
	case errors.Is(err, meta.ErrUserNotFound):
		return a.unknownNameLogin(ctx, r, limits, username, secret)
	case err != nil:
		return auth.Identity{}, err
	case !u.Active() && u.Kind == meta.UserKindRobot:
		// A robot disabled, or of a user's namespace whose user is.
		// Only whoever holds the account's secret is told that it is
		// disabled; to anyone else it is a wrong secret, as for a name
		// that does not exist (the answer must not say which names do).
		return a.cheapLogin(ctx, r, limits, username, func() (auth.Identity, error) {
			if auth.HashSecret(secret) != u.SecretHash {
				return auth.Identity{}, ErrBadCredentials
			}
			return auth.Identity{}, ErrDisabled
		})
	case !u.Enabled:
		if _, err := a.passwordLogin(ctx, r, limits, u, secret); err != nil {
			return auth.Identity{}, err
		}
		// The right password of a disabled user is no guess: audited as
		// a robot's or a token's (cheapLogin), at most once a minute per
		// account in each process (a client sending it with every request
		// would otherwise write a row each time).
		if a.auditOnce(username) {
			a.audit(ctx, r, "login_failure", username, "", map[string]string{"reason": ErrDisabled.Error()})
		}
		return auth.Identity{}, ErrDisabled
	case u.Kind == meta.UserKindRobot:
		return a.cheapLogin(ctx, r, limits, username, func() (auth.Identity, error) {
			if auth.HashSecret(secret) != u.SecretHash {
				return auth.Identity{}, ErrBadCredentials
			}
			return auth.Identity{Kind: auth.KindRobot, ID: u.ID, Name: u.Username, SecretFingerprint: meta.SecretFingerprint(u.SecretHash)}, nil
		})
	}
	return a.passwordLogin(ctx, r, limits, u, secret)
}

// unknownNameLogin checks a secret sent for a name no user has: an access
// token's, or nothing. A wrong one costs what a wrong password costs a
// user who exists (its attempt counted before, and a hash against a decoy),
// so that neither the time of the answer nor the counters tell which user
// names exist (before, a name without a user was answered in a SHA-256).
// The right secret of a token that no longer works (revoked, expired, its
// creator disabled: ErrDisabled) is no guess: as in cheapLogin, it is
// audited at most once a minute per token in each process and not counted
// (a kubelet's stale pull secret would otherwise throttle its address).
func (a *Authorizer) unknownNameLogin(ctx context.Context, r *http.Request, limits loginLimits, username, secret string) (auth.Identity, error) {
	if err := a.throttled(ctx, limits); err != nil {
		return auth.Identity{}, err
	}
	id, err := a.checkAccessToken(ctx, username, secret)
	if !errors.Is(err, ErrBadCredentials) {
		if errors.Is(err, ErrDisabled) && a.auditOnce(username) {
			a.audit(ctx, r, "login_failure", username, "", map[string]string{"reason": err.Error()})
		}
		return id, err
	}
	return a.passwordLogin(ctx, r, limits, meta.User{Username: username, SecretHash: a.decoy()}, secret)
}

// bearerSecretLogin checks an access token's secret sent as a bearer
// token (API clients, as with Quay's OAuth tokens) as Login checks it sent
// as Basic credentials: refused from a throttled address, and a wrong,
// revoked or expired one counted and audited (under the token's name, or
// no name for a secret of no token).
func (a *Authorizer) bearerSecretLogin(ctx context.Context, r *http.Request, secret string) (auth.Identity, error) {
	t, err := a.store.Access.AccessTokenBySecretHash(ctx, auth.HashSecret(secret))
	if err != nil && !errors.Is(err, meta.ErrTokenNotFound) {
		return auth.Identity{}, err
	}
	found := err == nil
	return a.cheapLogin(ctx, r, a.loginLimits(t.Name, clientAddress(r)), t.Name, func() (auth.Identity, error) {
		if !found {
			return auth.Identity{}, ErrBadCredentials
		}
		id, _, err := a.tokenIdentity(ctx, t, true)
		return id, err
	})
}

// decoy is the hash an unknown name's password is checked against: of a
// random password nobody knows, made once per process.
func (a *Authorizer) decoy() string {
	a.decoyOnce.Do(func() {
		secret, err := auth.NewSecret("")
		if err == nil {
			a.decoyHash, err = auth.HashPassword(secret)
		}
		if err != nil {
			// Never verifies, but costs no hash: logged, as it would
			// show in timing.
			a.log.Error("make the decoy password hash", "err", err)
			a.decoyHash = "$argon2id$invalid"
		}
	})
	return a.decoyHash
}

// throttled refuses a login when one of its counters is full.
func (a *Authorizer) throttled(ctx context.Context, limits loginLimits) error {
	wait, err := a.store.Access.LoginThrottle(ctx, a.opts.Window, limits.all()...)
	if err != nil {
		return err
	}
	if wait > 0 {
		return &RetryError{Err: ErrThrottled, After: wait}
	}
	return nil
}

// cheapLogin runs a check that costs one SHA-256 at most: refused up front
// when throttled, counted only when it fails with a wrong secret. A right
// secret of an account or token that no longer works (disabled, revoked,
// expired: ErrDisabled) is no guess: it is audited, at most once a minute
// per account in each process, and not counted, so that one client still
// polling with a stale credential does not throttle every other client of
// its address (a NAT, or a load balancer without http.trustedProxies).
func (a *Authorizer) cheapLogin(ctx context.Context, r *http.Request, limits loginLimits, username string, check func() (auth.Identity, error)) (auth.Identity, error) {
	if err := a.throttled(ctx, limits); err != nil {
		return auth.Identity{}, err
	}
	id, err := check()
	switch {
	case errors.Is(err, ErrBadCredentials):
		a.cheapFailure(ctx, r, limits, username, err)
	case errors.Is(err, ErrDisabled) && a.auditOnce(username):
		a.audit(ctx, r, "login_failure", username, "", map[string]string{"reason": err.Error()})
	}
	return id, err
}

// auditOnce reports whether this process has not audited a refused
// credential of the account within tokenUseInterval, and notes one.
func (a *Authorizer) auditOnce(username string) bool {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if at, ok := a.refused[username]; ok && now.Sub(at) < tokenUseInterval {
		return false
	}
	if a.refused == nil || len(a.refused) >= maxVerifiedTokens {
		a.refused = map[string]time.Time{}
	}
	a.refused[username] = now
	return true
}

// cheapFailure counts and records a failed cheap check.
func (a *Authorizer) cheapFailure(ctx context.Context, r *http.Request, limits loginLimits, username string, err error) {
	if _, _, cerr := a.store.Access.ReserveLoginAttempt(context.WithoutCancel(ctx), a.opts.Window, limits.all()...); cerr != nil {
		a.log.Warn("count a failed login", "err", cerr)
	}
	a.audit(ctx, r, "login_failure", username, "", map[string]string{"reason": err.Error()})
}

// passwordLogin checks a user's password, counting the attempt before the
// hash and giving it back when the password is right.
func (a *Authorizer) passwordLogin(ctx context.Context, r *http.Request, limits loginLimits, u meta.User, password string) (auth.Identity, error) {
	id := auth.Identity{Kind: auth.KindUser, ID: u.ID, Name: u.Username, Superuser: u.Superuser, SecretFingerprint: meta.SecretFingerprint(u.SecretHash)}
	key := sha256.Sum256([]byte(u.Username + "\x00" + u.SecretHash + "\x00" + password))
	if a.cached(key) {
		if err := a.throttled(ctx, limits); err != nil {
			return auth.Identity{}, err
		}
		return id, nil
	}
	ok, wait, err := a.store.Access.ReserveLoginAttempt(ctx, a.opts.Window, limits.all()...)
	if err != nil {
		return auth.Identity{}, err
	}
	if !ok {
		return auth.Identity{}, &RetryError{Err: ErrThrottled, After: wait}
	}
	release, err := a.hashes.acquire(ctx)
	if err != nil {
		// Not checked: not an attempt.
		a.giveBack(ctx, limits.pair, false)
		a.giveBack(ctx, limits.address, false)
		return auth.Identity{}, err
	}
	right := a.verify(u.SecretHash, password)
	release()
	if !right {
		a.audit(ctx, r, "login_failure", u.Username, "", map[string]string{"reason": ErrBadCredentials.Error()})
		return auth.Identity{}, ErrBadCredentials
	}
	a.remember(key)
	a.giveBack(ctx, limits.pair, true)
	a.giveBack(ctx, limits.address, false)
	return id, nil
}

// giveBack returns a counted attempt: one, or the key's whole count.
func (a *Authorizer) giveBack(ctx context.Context, l meta.LoginLimit, all bool) {
	if l.Key == "" { // no such counter
		return
	}
	if err := a.store.Access.ReleaseLoginAttempt(context.WithoutCancel(ctx), l.Key, all); err != nil {
		a.log.Warn("give back a login attempt", "err", err)
	}
}

// cached reports a password verified within the last minute.
func (a *Authorizer) cached(key [32]byte) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	exp, ok := a.cache[key]
	return ok && a.now().Before(exp)
}

func (a *Authorizer) remember(key [32]byte) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) > 4096 {
		for k, e := range a.cache {
			if now.After(e) || len(a.cache) > 4096 {
				delete(a.cache, k)
			}
		}
	}
	a.cache[key] = now.Add(time.Minute)
}

// Bounds of concurrent password hashes: waiters per slot, how long a
// waiter waits for a turn, and the Retry-After of a busy answer.
const (
	hashWaitersPerSlot = 16
	hashWait           = 3 * time.Second
	busyRetry          = time.Second
)

// hashGate bounds the password hashes that run at once: len(slots) run,
// up to waiters more wait at most wait for a turn, and beyond that the
// answer is ErrBusy at once.
type hashGate struct {
	slots   chan struct{}
	waiting atomic.Int64
	waiters int64
	wait    time.Duration
}

func newHashGate(slots, waiters int, wait time.Duration) *hashGate {
	return &hashGate{slots: make(chan struct{}, slots), waiters: int64(waiters), wait: wait}
}

// acquire takes a slot, and returns the function that gives it back.
func (g *hashGate) acquire(ctx context.Context) (func(), error) {
	release := func() { <-g.slots }
	select {
	case g.slots <- struct{}{}:
		return release, nil
	default:
	}
	if g.waiting.Add(1) > g.waiters {
		g.waiting.Add(-1)
		return nil, &RetryError{Err: ErrBusy, After: busyRetry}
	}
	defer g.waiting.Add(-1)
	timer := time.NewTimer(g.wait)
	defer timer.Stop()
	select {
	case g.slots <- struct{}{}:
		return release, nil
	case <-timer.C:
		return nil, &RetryError{Err: ErrBusy, After: busyRetry}
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting to check a password: %w", ctx.Err())
	}
}
