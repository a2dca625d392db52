package authz

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// countingStore counts the writes of login attempts.
type countingStore struct {
	meta.Access
	reserves, releases, touches atomic.Int64
}

func (s *countingStore) ReserveLoginAttempt(ctx context.Context, window time.Duration, limits ...meta.LoginLimit) (bool, time.Duration, error) {
	s.reserves.Add(1)
	return s.Access.ReserveLoginAttempt(ctx, window, limits...)
}

func (s *countingStore) ReleaseLoginAttempt(ctx context.Context, key string, all bool) error {
	s.releases.Add(1)
	return s.Access.ReleaseLoginAttempt(ctx, key, all)
}

func (s *countingStore) writes() int64 { return s.reserves.Load() + s.releases.Load() }

func (s *countingStore) TouchAccessToken(ctx context.Context, id int64, stale time.Time) error {
	s.touches.Add(1)
	return s.Access.TouchAccessToken(ctx, id, stale)
}

// hashProbe wraps a password check, counting the calls and the most that
// ran at once.
type hashProbe struct {
	calls, running, peak atomic.Int64
}

func (p *hashProbe) wrap(check func(hash, password string) bool) func(hash, password string) bool {
	return func(hash, password string) bool {
		p.calls.Add(1)
		n := p.running.Add(1)
		defer p.running.Add(-1)
		for {
			old := p.peak.Load()
			if n <= old || p.peak.CompareAndSwap(old, n) {
				break
			}
		}
		return check(hash, password)
	}
}

type loginEnv struct {
	store *countingStore
	az    *Authorizer
	probe *hashProbe
	robot string // the token of robot alice+ci
}

func newLoginEnv(t *testing.T, dialect string, opts Options) *loginEnv {
	t.Helper()
	ctx := context.Background()
	db := metatest.Open(t, dialect)
	key, err := auth.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens("berth", "berth", 5*time.Minute, []auth.SigningKey{key})
	if err != nil {
		t.Fatal(err)
	}
	h, err := auth.HashPassword("alice-right-password")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Users().CreateUser(ctx, meta.User{Username: "alice", SecretHash: h}); err != nil {
		t.Fatal(err)
	}
	robot, err := auth.NewSecret(SecretPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Users().CreateRobot(ctx, "alice", "ci", auth.HashSecret(robot)); err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Access: db.Access()}
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	e := &loginEnv{store: store, az: New(Stores{Users: db.Users(), Repositories: db.Repositories(), Access: store}, tokens, opts), probe: &hashProbe{}, robot: robot}
	e.az.verify = e.probe.wrap(e.az.verify)
	return e
}

// from is a request from a client address with Basic credentials.
func from(addr, user, pass string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/v2/auth?service=berth", nil)
	r.RemoteAddr = addr + ":40000"
	r.SetBasicAuth(user, pass)
	return r
}

// TestLoginBurst: a burst of wrong passwords for one account from one
// address runs at most the limit of hashes, never more at once than the
// bound, and locks out only that address: the right password from another
// address is accepted (then without a hash or a write while cached), from
// the attacker's address it is 429 with a Retry-After on the token
// endpoint and on /v2.
func TestLoginBurst(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			e := newLoginEnv(t, d, Options{})
			// A long wait for a hash slot: every counted attempt gets its
			// hash, however slow argon2id is under the race detector.
			e.az.hashes = newHashGate(e.az.opts.MaxHashes, 1000, time.Minute)
			const burst = 200
			errs := make([]error, burst)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range burst {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, errs[i] = e.az.Login(context.Background(), from("10.0.0.1", "", ""), "alice", fmt.Sprintf("wrong-%d", i))
				}()
			}
			close(start)
			wg.Wait()
			counts := map[string]int{}
			for _, err := range errs {
				var re *RetryError
				switch {
				case errors.Is(err, ErrBadCredentials):
					counts["bad"]++
				case errors.Is(err, ErrThrottled) && errors.As(err, &re) && re.RetryAfter() >= time.Second:
					counts["throttled"]++
				default:
					t.Errorf("a wrong password in the burst: %v, want %v or %v with a retry time", err, ErrBadCredentials, ErrThrottled)
				}
			}
			calls := e.probe.calls.Load()
			t.Logf("%d concurrent wrong passwords: %v; %d hashes, at most %d at once (bound %d)", burst, counts, calls, e.probe.peak.Load(), e.az.opts.MaxHashes)
			if calls > 10 || int64(counts["bad"]) != calls {
				t.Fatalf("%d hashes ran for %d refusals for bad credentials; want one each, at most the limit of 10", calls, counts["bad"])
			}
			if peak := e.probe.peak.Load(); peak > int64(e.az.opts.MaxHashes) {
				t.Fatalf("%d hashes ran at once, over the bound of %d", peak, e.az.opts.MaxHashes)
			}

			// The right password from another address is accepted...
			id, err := e.az.Login(context.Background(), from("10.0.0.2", "", ""), "alice", "alice-right-password")
			if err != nil || id.Name != "alice" {
				t.Fatalf("the right password from another address after the burst: %+v, %v", id, err)
			}
			// ...and again without a hash or a write while it is cached.
			hashes, writes := e.probe.calls.Load(), e.store.writes()
			for range 5 {
				if _, err := e.az.Login(context.Background(), from("10.0.0.2", "", ""), "alice", "alice-right-password"); err != nil {
					t.Fatalf("the cached right password: %v", err)
				}
			}
			if e.probe.calls.Load() != hashes || e.store.writes() != writes {
				t.Fatalf("a cached right password cost %d hashes and %d writes, want none", e.probe.calls.Load()-hashes, e.store.writes()-writes)
			}

			// From the attacker's address even the right (cached) password
			// is throttled: 429 with a Retry-After on the token endpoint...
			w := httptest.NewRecorder()
			e.az.ServeToken(w, from("10.0.0.1", "alice", "alice-right-password"))
			if ra, _ := strconv.Atoi(w.Header().Get("Retry-After")); w.Code != http.StatusTooManyRequests || ra < 1 {
				t.Fatalf("token endpoint, right password from the attacker's address: %d, Retry-After %q: %s", w.Code, w.Header().Get("Retry-After"), w.Body)
			}
			// ...and on /v2.
			// (the registry answers TooManyRequests with 429 TOOMANYREQUESTS
			// and a Retry-After: registry.TestAuthorizerDecisions)
			d, err := e.az.Authorize(from("10.0.0.1", "alice", "alice-right-password"), auth.Scope{})
			if err != nil || d.Verdict != TooManyRequests || d.RetryAfter < time.Second {
				t.Fatalf("/v2, right password from the attacker's address: %+v, %v", d, err)
			}
			if e.probe.calls.Load() != hashes {
				t.Fatal("a throttled login ran a hash")
			}
		})
	}
}

// TestLoginHashBound: wrong passwords from many addresses at once, each
// under its limits, still run at most MaxHashes hashes at once; the ones
// that find no turn are told to retry (ErrBusy) and get their attempt back.
func TestLoginHashBound(t *testing.T) {
	e := newLoginEnv(t, "sqlite", Options{})
	e.az.verify = e.probe.wrap(func(string, string) bool {
		time.Sleep(20 * time.Millisecond)
		return false
	})
	const burst = 200
	errs := make([]error, burst)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = e.az.Login(context.Background(), from(fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), "", ""), "alice", "wrong")
		}()
	}
	close(start)
	wg.Wait()
	bad, busy := 0, 0
	for i, err := range errs {
		var re *RetryError
		switch {
		case errors.Is(err, ErrBadCredentials):
			bad++
		case errors.Is(err, ErrBusy) && errors.As(err, &re) && re.RetryAfter() >= time.Second:
			busy++
			// Not checked, so not counted.
			addr := fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)
			l := e.az.loginLimits("alice", addr)
			l.pair.Limit, l.address.Limit = 1, 1
			if wait, err := e.store.LoginThrottle(context.Background(), time.Hour, l.all()...); err != nil || wait != 0 {
				t.Fatalf("a busy answer kept its attempt counted: throttled for %s, %v", wait, err)
			}
		default:
			t.Errorf("a wrong password: %v, want %v or %v with a retry time", err, ErrBadCredentials, ErrBusy)
		}
	}
	t.Logf("%d concurrent wrong passwords from as many addresses: %d checked, %d busy; at most %d hashes at once (bound %d)",
		burst, bad, busy, e.probe.peak.Load(), e.az.opts.MaxHashes)
	if peak := e.probe.peak.Load(); peak > int64(e.az.opts.MaxHashes) {
		t.Fatalf("%d hashes ran at once, over the bound of %d", peak, e.az.opts.MaxHashes)
	}
	if busy == 0 || int64(bad) != e.probe.calls.Load() {
		t.Fatalf("%d checked with %d hashes, %d busy: want one hash per check, and some busy answers", bad, e.probe.calls.Load(), busy)
	}
}

// TestLoginCheapSecrets: robot tokens are throttled by the same counters,
// but a right one writes nothing.
func TestLoginCheapSecrets(t *testing.T) {
	e := newLoginEnv(t, "sqlite", Options{PairLimit: 3})
	ctx := context.Background()
	for range 5 {
		if _, err := e.az.Login(ctx, from("10.2.0.1", "", ""), "alice+ci", "berth_wrong"); !errors.Is(err, ErrBadCredentials) && !errors.Is(err, ErrThrottled) {
			t.Fatalf("a wrong robot token: %v", err)
		}
	}
	if _, err := e.az.Login(ctx, from("10.2.0.1", "", ""), "alice+ci", e.robot); !errors.Is(err, ErrThrottled) {
		t.Fatalf("the right robot token from a throttled address: %v, want %v", err, ErrThrottled)
	}
	writes := e.store.writes()
	for range 3 {
		if id, err := e.az.Login(ctx, from("10.2.0.2", "", ""), "alice+ci", e.robot); err != nil || id.Kind != auth.KindRobot {
			t.Fatalf("the right robot token from another address: %+v, %v", id, err)
		}
	}
	if n := e.store.writes() - writes; n != 0 {
		t.Fatalf("right robot tokens cost %d writes, want none", n)
	}
	if e.probe.calls.Load() != 0 {
		t.Fatal("a robot token ran a password hash")
	}
}

// TestLoginThrottlesIPv6Networks: failures from the addresses of one IPv6
// /64 (what one client is usually given) fill one budget: the pair limit
// for alice is reached across ten of its addresses, while alice from
// another /64 logs in.
func TestLoginThrottlesIPv6Networks(t *testing.T) {
	e := newLoginEnv(t, "sqlite", Options{})
	ctx := context.Background()
	at := func(addr, pass string) error {
		r := httptest.NewRequest(http.MethodGet, "/v2/auth?service=berth", nil)
		r.RemoteAddr = "[" + addr + "]:40000"
		r.SetBasicAuth("alice", pass)
		_, err := e.az.Login(ctx, r, "alice", pass)
		return err
	}
	for i := range 10 {
		if err := at(fmt.Sprintf("2001:db8::%x", i+1), "wrong"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	if err := at("2001:db8::ffff", "alice-right-password"); !errors.Is(err, ErrThrottled) {
		t.Fatalf("another address of the same /64: %v, want throttled", err)
	}
	if err := at("2001:db8:0:1::1", "alice-right-password"); err != nil {
		t.Fatalf("an address of another /64: %v", err)
	}
	if got := throttledAddress("::ffff:192.0.2.1"); got != "192.0.2.1" {
		t.Fatalf("an IPv4-mapped address counts as %q", got)
	}
}

// TestDisabledAccountsAreToldOnlyToTheirHolders: a disabled user is
// refused as disabled only with its right password (robots, which cannot
// be disabled but by deleting them, get the same rule); a wrong one gets the
// answer of a name that does not exist, so that the refusal does not tell
// which names exist (before, any secret got "disabled").
func TestDisabledAccountsAreToldOnlyToTheirHolders(t *testing.T) {
	ctx := context.Background()
	db := metatest.Open(t, "sqlite")
	key, _ := auth.NewSigningKey()
	tokens, _ := auth.NewTokens("berth", "berth", 5*time.Minute, []auth.SigningKey{key})
	h, _ := auth.HashPassword("alice-right-password")
	if _, err := db.Users().CreateUser(ctx, meta.User{Username: "alice", SecretHash: h}); err != nil {
		t.Fatal(err)
	}
	az := New(Stores{Users: db.Users(), Repositories: db.Repositories(), Access: db.Access()}, tokens, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	off := false
	if _, err := db.Users().UpdateUser(ctx, "alice", meta.UserChange{Enabled: &off}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, secret string
		want         error
	}{
		{"alice", "wrong-password", ErrBadCredentials},
		{"alice", "alice-right-password", ErrDisabled},
		{"nobody", "wrong-password", ErrBadCredentials},
	} {
		_, err := az.Login(ctx, from("192.0.2.1", c.user, c.secret), c.user, c.secret)
		if !errors.Is(err, c.want) {
			t.Errorf("%s with a %s secret: %v, want %v", c.user, map[bool]string{true: "right", false: "wrong"}[c.want == ErrDisabled], err, c.want)
		}
		if d, _ := loginRefusal(err); c.want == ErrBadCredentials && d.Reason != "invalid username or password" {
			t.Errorf("%s: the refusal says %q", c.user, d.Reason)
		}
	}
}

// TestTokenUseRecordedOncePerInterval: concurrent requests with an access
// token whose last use is stale record it once, not once each (each was
// a write on SQLite's one writer).
func TestTokenUseRecordedOncePerInterval(t *testing.T) {
	e := newLoginEnv(t, "sqlite", Options{})
	ctx := context.Background()
	secret, _ := auth.NewSecret(SecretPrefix)
	if _, err := e.store.Access.CreateAccessToken(ctx, meta.AccessToken{Name: "ci", SecretHash: auth.HashSecret(secret), Scopes: []byte(`[]`)}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := e.az.Login(ctx, from("192.0.2.1", "ci", secret), "ci", secret); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := e.store.touches.Load(); n != 1 {
		t.Fatalf("%d writes of the token's last use for 20 requests", n)
	}
}

// TestUnknownNamesCostWhatAWrongPasswordCosts: a password sent for a name
// no user has runs one password hash and counts its attempt, as a wrong
// password for a user who exists does, so that neither the time of the
// answer nor the counters tell which user names exist (before, such a name
// was answered after one SHA-256, thousands of times sooner). Access tokens
// and robot names stay cheap: a right token runs no hash.
func TestUnknownNamesCostWhatAWrongPasswordCosts(t *testing.T) {
	e := newLoginEnv(t, "sqlite", Options{PairLimit: 3})
	ctx := context.Background()
	secret, err := auth.NewSecret(SecretPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.CreateAccessToken(ctx, meta.AccessToken{Name: "deploy-token", SecretHash: auth.HashSecret(secret), CreatedBy: "alice"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, secret string
		hashes       int64
		ok           bool
	}{
		{"alice", "wrong-password", 1, false},
		{"nobody", "wrong-password", 1, false},
		{"deploy-token", "berth_wrong", 1, false},
		{"deploy-token", secret, 0, true},
		{"alice+ci", "berth_wrong", 0, false},
		{"nobody+ci", "berth_wrong", 0, false},
	} {
		calls, reserves := e.probe.calls.Load(), e.store.reserves.Load()
		_, err := e.az.Login(ctx, from("10.3.0.1", c.user, c.secret), c.user, c.secret)
		if c.ok != (err == nil) || (!c.ok && !errors.Is(err, ErrBadCredentials)) {
			t.Fatalf("%s: %v", c.user, err)
		}
		if n := e.probe.calls.Load() - calls; n != c.hashes {
			t.Errorf("%s: %d password hashes, want %d", c.user, n, c.hashes)
		}
		if n := e.store.reserves.Load() - reserves; !c.ok && n != 1 {
			t.Errorf("%s: a failure counted %d times, want once", c.user, n)
		}
	}
	// The pair limit throttles an unknown name as it does a real one.
	for range 3 {
		_, err = e.az.Login(ctx, from("10.3.0.2", "", ""), "nobody", "wrong-password")
	}
	if !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("the third attempt: %v", err)
	}
	if _, err := e.az.Login(ctx, from("10.3.0.2", "", ""), "nobody", "wrong-password"); !errors.Is(err, ErrThrottled) {
		t.Fatalf("past the pair limit: %v, want %v", err, ErrThrottled)
	}
}
