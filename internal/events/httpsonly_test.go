package events

import (
	"net/http"
	"strings"
	"testing"
)

type recordingTransport struct{ got []string }

func (t *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.got = append(t.got, r.URL.String())
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: r}, nil
}

// TestHTTPSOnly: with TLS required, plain HTTP to the registry, or with
// credentials anywhere (a token realm), is refused; a blob redirect to a
// storage host without credentials (its bytes checked against their
// digest) may be plain HTTP, as it was before mirrors required HTTPS.
func TestHTTPSOnly(t *testing.T) {
	for _, c := range []struct {
		url, auth string
		ok        bool
	}{
		{"https://registry.example:5000/v2/", "", true},
		{"http://registry.example:5000/v2/", "", false},
		{"http://auth.example/token", "Basic dXA6c2VjcmV0", false},
		{"http://storage.internal/blobs/sha256:ab?X-Amz-Signature=1", "", true},
	} {
		next := &recordingTransport{}
		tr := HTTPSOnly{Next: next, Host: "registry.example:5000", Allow: "set verify_tls to false to allow it"}
		req, _ := http.NewRequest(http.MethodGet, c.url, nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		_, err := tr.RoundTrip(req)
		if c.ok != (err == nil) || c.ok != (len(next.got) == 1) {
			t.Errorf("%s (credentials %v): %v, sent %v", c.url, c.auth != "", err, next.got)
		}
		if err != nil && !strings.Contains(err.Error(), "verify_tls") {
			t.Errorf("the refusal does not say how to allow it: %v", err)
		}
	}
}
