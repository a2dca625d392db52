package config

import (
	"net/url"
	"strings"
	"time"
)

// S3 configures the S3 storage driver (storage.driver: s3). See
// docs/storage.md.
type S3 struct {
	// Endpoint is the S3 API's URL; empty means AWS (from the region).
	Endpoint string `yaml:"endpoint"`
	Region   string `yaml:"region"`
	Bucket   string `yaml:"bucket"`
	// Prefix is prepended to every key ("registry" keeps Berth's keys
	// under registry/).
	Prefix string `yaml:"prefix"`
	// PathStyle addresses the bucket as endpoint/bucket (MinIO, Ceph,
	// most S3-compatible servers) instead of bucket.endpoint.
	PathStyle bool `yaml:"pathStyle"`
	// AccessKey and SecretKey are static credentials. Empty: the standard
	// AWS chain (AWS_* environment, shared credentials and config files,
	// web identity / IRSA, ECS and EC2 instance metadata).
	AccessKey string `yaml:"accessKey"`
	SecretKey string `yaml:"secretKey"`
	// CredentialsFile and Profile select a shared credentials file and
	// its profile for the standard chain.
	CredentialsFile string `yaml:"credentialsFile"`
	Profile         string `yaml:"profile"`
	TLS             S3TLS  `yaml:"tls"`
	// PartSize is the size of a multipart upload part in bytes (default
	// 10 MiB, at least 5 MiB, at most 5 GiB). A blob has at most 10,000
	// parts: 100 GiB at the default.
	PartSize int64      `yaml:"partSize"`
	Redirect S3Redirect `yaml:"redirect"`
}

// S3TLS configures the connection to the S3 endpoint.
type S3TLS struct {
	InsecureSkipVerify bool `yaml:"insecureSkipVerify"`
	// CAFile is a PEM bundle of the authorities to trust.
	CAFile string `yaml:"caFile"`
}

// S3Redirect sends blob downloads to S3 directly: a GET of a blob of at
// least MinSize bytes that the client may pull answers 307 with a
// presigned URL valid for Expiry.
type S3Redirect struct {
	Enabled bool          `yaml:"enabled"`
	MinSize int64         `yaml:"minSize"`
	Expiry  time.Duration `yaml:"expiry"`
}

func defaultS3() S3 {
	return S3{PartSize: 10 << 20, Redirect: S3Redirect{MinSize: 1 << 20, Expiry: 20 * time.Minute}}
}

func (s *S3) validate(bad func(field, format string, args ...any)) {
	if s.Bucket == "" {
		bad("storage.s3.bucket", "must be set when storage.driver is s3")
	}
	// Empty: AWS's endpoint for the region. Anything else is the URL the
	// SDK sends every request to: `minio:9000` (no scheme) would start
	// the server and fail at its first storage call.
	if e := s.Endpoint; e != "" {
		u, err := url.Parse(e)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad("storage.s3.endpoint", "%q is not an http(s) URL with a host (such as http://minio:9000)", redactURL(e))
		case strings.ContainsAny(e, "?#"):
			bad("storage.s3.endpoint", "%q has a query or a fragment", redactURL(e))
		case u.User != nil:
			bad("storage.s3.endpoint", "%q holds user information: give the keys as accessKey and secretKey", redactURL(e))
		}
	}
	// An empty region for AWS may come from AWS_REGION (as IRSA sets it):
	// opening the storage, before the database, says if there is none.
	if (s.AccessKey == "") != (s.SecretKey == "") {
		bad("storage.s3.accessKey", "accessKey and secretKey go together (leave both empty for the standard AWS credential chain)")
	}
	if s.PartSize < 5<<20 || s.PartSize > 5<<30 {
		bad("storage.s3.partSize", "%d bytes is outside S3's part sizes (5 MiB to 5 GiB)", s.PartSize)
	}
	if s.Redirect.Enabled {
		if s.Redirect.Expiry < time.Minute || s.Redirect.Expiry > 7*24*time.Hour {
			bad("storage.s3.redirect.expiry", "%s is outside 1m to 168h (a presigned URL lives at most 7 days)", s.Redirect.Expiry)
		}
		if s.Redirect.MinSize < 0 {
			bad("storage.s3.redirect.minSize", "must not be negative")
		}
	}
}
