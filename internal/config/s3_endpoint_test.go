package config

import (
	"strings"
	"testing"
)

// TestS3EndpointValidated: storage.s3.endpoint must be an http(s) URL with
// a host and no query or fragment (empty: AWS from the region). Before, it
// was never checked, and `minio:9000` (no scheme) started the server,
// which then failed at its first storage call.
func TestS3EndpointValidated(t *testing.T) {
	for _, tc := range []struct {
		endpoint string
		ok       bool
	}{
		{"", true},
		{"http://127.0.0.1:9000", true},
		{"https://minio.internal:9000", true},
		{"https://s3.example.com/", true},
		{"minio:9000", false},
		{"127.0.0.1:9000", false},
		{"ftp://minio:9000", false},
		{"http://", false},
		{"http:///bucket", false},
		{"https://minio:9000?x=1", false},
		{"https://minio:9000#frag", false},
		{"https://user:hunter2@minio:9000", false},
	} {
		c := Default()
		c.Storage.Driver, c.Storage.S3.Bucket, c.Storage.S3.Endpoint = "s3", "registry", tc.endpoint
		err := c.Validate()
		if tc.ok && err != nil {
			t.Errorf("endpoint %q: %v", tc.endpoint, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "storage.s3.endpoint:")) {
			t.Errorf("endpoint %q: the error does not name storage.s3.endpoint: %v", tc.endpoint, err)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("endpoint %q: the error shows the password: %v", tc.endpoint, err)
		}
	}
}
