//go:build !linux

package fs

import "os"

// startWriteback is a no-op where sync_file_range does not exist: the
// commit's fsync flushes everything.
func startWriteback(*os.File, int64, int64) {}

// datasync flushes f to disk (fsync: there is no fdatasync to call here).
func datasync(f *os.File) error { return f.Sync() }
