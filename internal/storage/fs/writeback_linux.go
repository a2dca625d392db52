package fs

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing n bytes of f from off to
// disk now, without waiting for them (sync_file_range with
// SYNC_FILE_RANGE_WRITE), so that the fsync at the blob's commit finds
// little left to flush. It is a hint: errors are ignored, and the commit's
// fsync still makes the bytes durable.
func startWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		_ = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}

// datasync flushes f's data, and the metadata needed to read it back (its
// size), to disk: fdatasync, which skips what fsync adds (timestamps).
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = unix.Fdatasync(int(fd)); serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}
