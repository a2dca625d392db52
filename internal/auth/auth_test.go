package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestPassword(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$") || strings.Contains(h, "correct horse") {
		t.Fatalf("hash %q", h)
	}
	if !VerifyPassword(h, "correct horse") {
		t.Fatal("right password refused")
	}
	for _, bad := range []string{"", "correct horsE", "correct horse "} {
		if VerifyPassword(h, bad) {
			t.Fatalf("wrong password %q accepted", bad)
		}
	}
	for _, bad := range []string{"", "plain", "$argon2id$v=19$m=99999999,t=1,p=1$AAAA$AAAA", HashSecret("x")} {
		if VerifyPassword(bad, "x") {
			t.Fatalf("malformed hash %q accepted", bad)
		}
	}
	h2, _ := HashPassword("correct horse")
	if h == h2 {
		t.Fatal("hashes are not salted")
	}
}

func TestParseScope(t *testing.T) {
	good := map[string]string{
		"repository:org/team/app:pull,push": "repository:org/team/app:pull,push",
		"repository:app:pull,pull":          "repository:app:pull",
		"repository(plugin):app:pull":       "repository:app:pull",
		"registry:catalog:*":                "registry:catalog:*",
		"repository:app:":                   "repository:app:",
	}
	for in, want := range good {
		s, err := ParseScope(in)
		if err != nil || s.String() != want {
			t.Errorf("ParseScope(%q) = %v, %v; want %s", in, s, err, want)
		}
	}
	for _, in := range []string{"", "repository", "repository:app", "repository:../etc:pull", "repository:App:pull",
		"repository:app:pull;drop", "repository:app:admin", "user:alice:pull", "registry:other:*",
		"repository:a b:pull", "repository:app:pull,push\nrepository:x:pull", strings.Repeat("a", 600)} {
		if _, err := ParseScope(in); !errors.Is(err, ErrInvalidScope) {
			t.Errorf("ParseScope(%q) = %v, want ErrInvalidScope", in, err)
		}
	}
}

func FuzzParseScope(f *testing.F) {
	for _, s := range []string{"repository:a/b:pull,push", "registry:catalog:*", "repository:x:", "a:b:c:d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseScope(s)
		if err != nil {
			return
		}
		again, err := ParseScope(sc.String())
		if err != nil || again.String() != sc.String() {
			t.Fatalf("%q -> %q does not round-trip: %v", s, sc.String(), err)
		}
		if strings.ContainsAny(sc.Name, ":, \n") {
			t.Fatalf("name %q escapes the scope grammar", sc.Name)
		}
	})
}

func TestTokenScopes(t *testing.T) {
	for _, bad := range []TokenScope{{"*", nil}, {"Org/*", []string{TokenContentRead}}, {"org/*", []string{"content/all"}},
		{"org/**", []string{TokenContentRead}}, {"", []string{TokenContentRead}}} {
		if ValidateTokenScope(bad) == nil {
			t.Errorf("ValidateTokenScope(%+v) accepted", bad)
		}
	}
	s := TokenScope{"org/team/*", []string{TokenContentRead}}
	if !s.Matches("org/team/app") || !s.Matches("org/team/x/y") || s.Matches("org/teamx/app") || s.Matches("org/team") {
		t.Fatal("prefix matching is wrong")
	}
}

func TestTokens(t *testing.T) {
	k1, _ := NewSigningKey()
	k2, _ := NewSigningKey()
	now := time.Now()
	tk, err := NewTokens("berth", "berth-registry", 5*time.Minute, []SigningKey{k1, k2})
	if err != nil {
		t.Fatal(err)
	}
	access := []Access{{Type: "repository", Name: "org/app", Actions: []string{ActionPull}}}
	s, exp, err := tk.Issue("alice", KindUser, 0, access, now)
	if err != nil || exp.Sub(now) != 5*time.Minute {
		t.Fatal(err)
	}
	c, err := tk.Verify(s, now.Add(time.Minute))
	if err != nil || c.Subject != "alice" || !c.Allows("repository", "org/app", ActionPull) || c.Allows("repository", "org/app", ActionPush) ||
		c.Allows("repository", "org/other", ActionPull) {
		t.Fatalf("verify: %+v, %v", c, err)
	}
	if c.SecretFingerprint != "" {
		t.Fatalf("Issue binds the token to a secret: %q", c.SecretFingerprint)
	}
	// IssueFor carries the identity's secret fingerprint.
	bound, _, err := tk.IssueFor(Identity{Kind: KindRobot, ID: 7, Name: "acme+ci", SecretFingerprint: "fp"}, access, now)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := tk.Verify(bound, now); err != nil || c.Subject != "acme+ci" || c.Kind != KindRobot || c.SubjectID != 7 || c.SecretFingerprint != "fp" {
		t.Fatalf("IssueFor: %+v, %v", c, err)
	}
	// Expired.
	if _, err := tk.Verify(s, now.Add(6*time.Minute)); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("expired token: %v", err)
	}
	// Signed by a key this registry does not know.
	k3, _ := NewSigningKey()
	other, _ := NewTokens("berth", "berth-registry", time.Minute, []SigningKey{k3})
	forged, _, _ := other.Issue("alice", KindUser, 0, access, now)
	if _, err := tk.Verify(forged, now); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("token of another key: %v", err)
	}
	// Signed by another key but claiming a known kid.
	parts := strings.Split(forged, ".")
	hdr := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{})
	hdr.Header["kid"] = k1.ID
	h, _ := hdr.SigningString()
	if _, err := tk.Verify(strings.Split(h, ".")[0]+"."+parts[1]+"."+parts[2], now); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("token with a swapped kid: %v", err)
	}
	// alg "none" and tampered payload.
	unsigned := jwt.NewWithClaims(jwt.SigningMethodNone, Claims{Access: access})
	ns, _ := unsigned.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if _, err := tk.Verify(ns, now); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("alg none: %v", err)
	}
	p := strings.Split(s, ".")
	if _, err := tk.Verify(p[0]+"."+p[1]+"x."+p[2], now); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("tampered: %v", err)
	}
	// Another audience.
	aud, _ := NewTokens("berth", "elsewhere", time.Minute, []SigningKey{k1})
	as, _, _ := aud.Issue("alice", KindUser, 0, access, now)
	if _, err := tk.Verify(as, now); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("other audience: %v", err)
	}
	// Tokens signed with the second key still verify (key rotation).
	rot, _ := NewTokens("berth", "berth-registry", time.Minute, []SigningKey{k2, k1})
	rs, _, _ := rot.Issue("bob", KindRobot, 0, nil, now)
	if _, err := tk.Verify(rs, now); err != nil {
		t.Fatalf("rotated key: %v", err)
	}
}

// TestAllowedMatrix is the permission decision for every kind of identity
// on every kind of repository and every action.
func TestAllowedMatrix(t *testing.T) {
	type cell struct {
		id    Identity
		st    Standing
		label string
	}
	ids := []cell{
		{Anonymous, Standing{}, "anonymous"},
		{Identity{Kind: KindUser, Name: "owner"}, Standing{Role: RoleAdmin, CanCreate: true}, "owner"},
		{Identity{Kind: KindUser, Name: "reader"}, Standing{Role: RoleRead}, "reader"},
		{Identity{Kind: KindUser, Name: "writer"}, Standing{Role: RoleWrite}, "writer"},
		{Identity{Kind: KindUser, Name: "creator"}, Standing{CanCreate: true}, "creator"},
		{Identity{Kind: KindUser, Name: "stranger"}, Standing{}, "stranger"},
		{Identity{Kind: KindRobot, Name: "org+ci"}, Standing{Role: RoleWrite}, "robot"},
		{Identity{Kind: KindRobot, Name: "org+mirror"}, Standing{Role: RoleWrite}, "mirror-robot"},
		{Identity{Kind: KindToken, Name: "t", Scopes: []TokenScope{{"org/*", []string{TokenContentRead, TokenContentWrite}}}}, Standing{}, "token-rw"},
		{Identity{Kind: KindToken, Name: "t", Scopes: []TokenScope{{"other/*", []string{TokenContentRead, TokenContentWrite, TokenContentDelete}}}}, Standing{}, "token-outside"},
		{Identity{Kind: KindUser, Name: "root", Superuser: true}, Standing{}, "superuser"},
	}
	repos := map[string]Repo{
		"private":  {Name: "org/app", Exists: true, State: StateNormal},
		"public":   {Name: "org/app", Exists: true, Public: true, State: StateNormal},
		"readonly": {Name: "org/app", Exists: true, State: StateReadOnly},
		"mirror":   {Name: "org/app", Exists: true, State: StateMirror, MirrorRobot: "org+mirror"},
		"new":      {Name: "org/app", Exists: false},
	}
	actions := []string{ActionPull, ActionPush, ActionDelete, ActionRead, ActionWrite, ActionAdmin}
	// Expected: one letter per action (pull, push, delete, read, write, admin); Y allowed, - refused.
	want := map[string]map[string]string{
		"anonymous":     {"private": "------", "public": "Y--Y--", "readonly": "------", "mirror": "------", "new": "------"},
		"owner":         {"private": "YYYYYY", "public": "YYYYYY", "readonly": "Y--Y-Y", "mirror": "Y--Y-Y", "new": "YYYYYY"},
		"reader":        {"private": "Y--Y--", "public": "Y--Y--", "readonly": "Y--Y--", "mirror": "Y--Y--", "new": "Y--Y--"},
		"writer":        {"private": "YYYYY-", "public": "YYYYY-", "readonly": "Y--Y--", "mirror": "Y--Y--", "new": "YYYYY-"},
		"creator":       {"private": "------", "public": "Y--Y--", "readonly": "------", "mirror": "------", "new": "YY-Y--"},
		"stranger":      {"private": "------", "public": "Y--Y--", "readonly": "------", "mirror": "------", "new": "------"},
		"robot":         {"private": "YYYYY-", "public": "YYYYY-", "readonly": "Y--Y--", "mirror": "Y--Y--", "new": "YYYYY-"},
		"mirror-robot":  {"private": "YYYYY-", "public": "YYYYY-", "readonly": "Y--Y--", "mirror": "YYYYY-", "new": "YYYYY-"},
		"token-rw":      {"private": "YY-Y--", "public": "YY-Y--", "readonly": "Y--Y--", "mirror": "Y--Y--", "new": "YY-Y--"},
		"token-outside": {"private": "------", "public": "Y--Y--", "readonly": "------", "mirror": "------", "new": "------"},
		"superuser":     {"private": "YYYYYY", "public": "YYYYYY", "readonly": "Y--Y-Y", "mirror": "Y--Y-Y", "new": "YYYYYY"},
	}
	for _, c := range ids {
		for rname, repo := range repos {
			var got strings.Builder
			for _, a := range actions {
				if Allowed(c.id, repo, c.st, a) {
					got.WriteByte('Y')
				} else {
					got.WriteByte('-')
				}
			}
			if w := want[c.label][rname]; got.String() != w {
				t.Errorf("%s on %s repository: got %s, want %s (pull push delete read write admin)", c.label, rname, got.String(), w)
			}
		}
	}
}
