package config

import "strings"

// DatabaseLocation names the metadata database for a message: its URL
// with no password or query (redactURL), or the SQLite file.
func (c *Config) DatabaseLocation() string {
	return redactURL(c.DatabaseURL())
}

// StorageLocation names where the blobs are for a message: the
// filesystem driver's root, or the S3 bucket and prefix (and endpoint);
// never a credential.
func (c *Config) StorageLocation() string {
	if c.Storage.Driver != "s3" {
		return c.StorageRoot()
	}
	s := c.Storage.S3
	where := "s3://" + s.Bucket + "/" + strings.Trim(s.Prefix, "/")
	if s.Endpoint != "" {
		where += " at " + redactURL(s.Endpoint)
	}
	return where
}
