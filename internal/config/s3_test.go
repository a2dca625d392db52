package config

import (
	"strings"
	"testing"
	"time"
)

func TestS3Settings(t *testing.T) {
	c := Default()
	env := map[string]string{
		"BERTH_STORAGE_DRIVER":                      "s3",
		"BERTH_STORAGE_S3_ENDPOINT":                 "https://minio.internal:9000",
		"BERTH_STORAGE_S3_BUCKET":                   "registry",
		"BERTH_STORAGE_S3_PATH_STYLE":               "true",
		"BERTH_STORAGE_S3_ACCESS_KEY":               "AKIA",
		"BERTH_STORAGE_S3_SECRET_KEY":               "hunter2-secret",
		"BERTH_STORAGE_S3_TLS_CA_FILE":              "/etc/ssl/minio.pem",
		"BERTH_STORAGE_S3_REDIRECT_ENABLED":         "true",
		"BERTH_STORAGE_S3_REDIRECT_EXPIRY":          "5m",
		"BERTH_STORAGE_S3_PART_SIZE":                "16777216",
		"BERTH_STORAGE_S3_REDIRECT_MIN_SIZE":        "0",
		"BERTH_STORAGE_S3_CREDENTIALS_FILE":         "/creds",
		"BERTH_STORAGE_S3_TLS_INSECURE_SKIP_VERIFY": "false",
	}
	if err := c.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	s := c.Storage.S3
	if err := c.Validate(); err != nil || c.Storage.Driver != "s3" || s.Bucket != "registry" || !s.PathStyle || s.SecretKey != "hunter2-secret" ||
		s.TLS.CAFile != "/etc/ssl/minio.pem" || !s.Redirect.Enabled || s.Redirect.Expiry != 5*time.Minute || s.PartSize != 16<<20 ||
		s.Redirect.MinSize != 0 || s.CredentialsFile != "/creds" {
		t.Fatalf("s3 from env: %+v, %v", s, err)
	}
	d := Default()
	if d.Storage.S3.PartSize != 10<<20 || d.Storage.S3.Redirect.Enabled || d.Storage.S3.Redirect.MinSize != 1<<20 || d.Storage.S3.Redirect.Expiry != 20*time.Minute {
		t.Fatalf("s3 defaults = %+v", d.Storage.S3)
	}

	// AWS with the region from AWS_REGION (IRSA): no region in the file.
	aws := Default()
	aws.Storage.Driver, aws.Storage.S3.Bucket = "s3", "registry"
	if err := aws.Validate(); err != nil {
		t.Errorf("AWS without storage.s3.region (AWS_REGION gives it): %v", err)
	}

	bad := Default()
	bad.Storage.Driver = "s3"
	bad.Storage.S3.SecretKey = "hunter2-secret"
	bad.Storage.S3.PartSize = 1 << 20
	bad.Storage.S3.Redirect = S3Redirect{Enabled: true, Expiry: 30 * 24 * time.Hour}
	err := bad.Validate()
	for _, field := range []string{"storage.s3.bucket:", "storage.s3.accessKey:", "storage.s3.partSize:", "storage.s3.redirect.expiry:"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
	if err != nil && strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error leaks the secret key: %v", err)
	}
}
