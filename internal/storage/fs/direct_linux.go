package fs

import (
	"os"
	"syscall"
)

// openDirect opens an existing file for writing with O_DIRECT: its writes
// go from the caller's buffer to the device, without a copy into the page
// cache. File systems without direct I/O (tmpfs, some FUSE ones) refuse
// it with EINVAL.
func openDirect(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_WRONLY|syscall.O_DIRECT, 0)
}
