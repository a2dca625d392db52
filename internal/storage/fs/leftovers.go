package fs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// tempPrefix begins the names of PutContent's temporary files.
const tempPrefix = ".tmp-"

// RemoveTempFiles removes from directory p the temporary files PutContent
// left there, last written before before: a process killed between
// writing one and renaming it into place leaves it, and List does not
// show it (nor anything else whose name begins with a dot), so nothing
// else would. A directory that does not exist holds none. It returns how
// many it removed.
func (d *Driver) RemoveTempFiles(ctx context.Context, p string, before time.Time) (int, error) {
	dir, err := d.full(p)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, wrap("list", p, err)
	}
	removed := 0
	var errs []error
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		if !strings.HasPrefix(e.Name(), tempPrefix) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.ModTime().Before(before) {
			continue // gone meanwhile, or a write under way
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s/%s: %w", p, e.Name(), err))
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}
