//go:build !linux

package fs

import (
	"errors"
	"os"
)

// openDirect: direct I/O is only used on Linux; elsewhere every write
// goes through the page cache.
func openDirect(string) (*os.File, error) {
	return nil, errors.ErrUnsupported
}
