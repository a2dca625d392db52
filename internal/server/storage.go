package server

import (
	"context"
	"log/slog"
	"strings"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/storage/s3"
)

// OpenStorage opens the configured storage driver (berth serve, admin gc
// and import share it).
func OpenStorage(ctx context.Context, cfg config.Config) (storage.Driver, error) {
	if cfg.Storage.Driver != "s3" {
		return fs.New(cfg.StorageRoot(), fs.Options{Fsync: cfg.Storage.Filesystem.Fsync})
	}
	c := cfg.Storage.S3
	return s3.Open(ctx, s3.Options{
		Endpoint: c.Endpoint, Region: c.Region, Bucket: c.Bucket, Prefix: c.Prefix, PathStyle: c.PathStyle,
		AccessKey: c.AccessKey, SecretKey: c.SecretKey, CredentialsFile: c.CredentialsFile, Profile: c.Profile,
		InsecureSkipVerify: c.TLS.InsecureSkipVerify, CAFile: c.TLS.CAFile, PartSize: c.PartSize,
	})
}

// blobRedirect is the registry's redirect setting: off unless configured
// (only the S3 driver signs URLs).
func blobRedirect(cfg config.Config) registry.Redirect {
	r := cfg.Storage.S3.Redirect
	if cfg.Storage.Driver != "s3" || !r.Enabled {
		return registry.Redirect{}
	}
	return registry.Redirect{MinSize: r.MinSize, Expiry: r.Expiry}
}

// storageLocation says where the bytes are, for the start-up log line
// (never a credential).
func storageLocation(cfg config.Config) slog.Attr {
	if cfg.Storage.Driver != "s3" {
		return slog.String("storage_root", cfg.StorageRoot())
	}
	c := cfg.Storage.S3
	where := "s3://" + c.Bucket + "/" + strings.Trim(c.Prefix, "/")
	if c.Endpoint != "" {
		where += " at " + c.Endpoint
	}
	return slog.String("storage_bucket", where)
}
