package events

import "testing"

func TestSign(t *testing.T) {
	tests := []struct {
		name, secret, body, want string
	}{
		// GitHub's documented test vector for X-Hub-Signature-256.
		{"github vector", "It's a Secret to Everybody", "Hello, World!", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"},
		// RFC 4231 test case 2.
		{"rfc 4231", "Jefe", "what do ya want for nothing?", "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Sign([]byte(tc.secret), []byte(tc.body)); got != tc.want {
				t.Errorf("Sign = %s, want %s", got, tc.want)
			}
			if !Verify([]byte(tc.secret), []byte(tc.body), tc.want) {
				t.Error("Verify refuses a good signature")
			}
		})
	}
	good := Sign([]byte("k"), []byte("body"))
	for _, bad := range []string{"", "sha256=", "sha1=" + good[7:], good[:len(good)-1] + "0", "sha256=zz"} {
		if Verify([]byte("k"), []byte("body"), bad) {
			t.Errorf("Verify accepts %q", bad)
		}
	}
	if Verify([]byte("other"), []byte("body"), good) {
		t.Error("Verify accepts a signature made with another secret")
	}
}
