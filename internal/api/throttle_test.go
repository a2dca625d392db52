package api_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/testenv"
)

// retryAuth refuses every caller for now, as authz does for a throttled
// login or when too many passwords are being checked at once.
type retryAuth struct {
	api.Open
	err *authz.RetryError
}

func (r retryAuth) Authenticate(*http.Request) (authz.Decision, error) {
	return authz.Decision{Verdict: authz.TooManyRequests, Reason: r.err.Error(), RetryAfter: r.err.RetryAfter()}, nil
}

// TestThrottledLogin: a login refused for now is 429 with a Retry-After,
// not 401.
func TestThrottledLogin(t *testing.T) {
	for _, err := range []*authz.RetryError{
		&authz.RetryError{Err: authz.ErrThrottled, After: 90*time.Second + time.Millisecond},
		&authz.RetryError{Err: authz.ErrBusy},
	} {
		h := testenv.New(t, testenv.Options{APIAuth: retryAuth{err: err}}).API
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/api/v1/user/", nil)
		r.SetBasicAuth("alice", "password")
		h.ServeHTTP(w, r)
		want := "1"
		if err.After > time.Second {
			want = "91"
		}
		if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != want {
			t.Fatalf("%v: HTTP %d, Retry-After %q; want 429 with Retry-After %s: %s", err, w.Code, w.Header().Get("Retry-After"), want, w.Body)
		}
	}
}
