package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/testenv"
)

// retryAuth refuses every caller for now, as authz does for a throttled
// login or when too many passwords are being checked at once.
type retryAuth struct {
	api.Open
	err error
}

func (r retryAuth) Identify(context.Context, *http.Request) (auth.Identity, *auth.Claims, error) {
	return auth.Identity{}, nil, r.err
}

// TestThrottledLogin: a login refused for now is 429 with a Retry-After,
// not 401.
func TestThrottledLogin(t *testing.T) {
	for _, err := range []error{
		&authz.RetryError{Err: authz.ErrThrottled, After: 90*time.Second + time.Millisecond},
		&authz.RetryError{Err: authz.ErrBusy},
	} {
		h := testenv.New(t, testenv.Options{APIAuth: retryAuth{err: err}}).API
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/api/v1/user/", nil)
		r.SetBasicAuth("alice", "password")
		h.ServeHTTP(w, r)
		want := "1"
		if err.(*authz.RetryError).After > time.Second {
			want = "91"
		}
		if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != want {
			t.Fatalf("%v: HTTP %d, Retry-After %q; want 429 with Retry-After %s: %s", err, w.Code, w.Header().Get("Retry-After"), want, w.Body)
		}
	}
}
