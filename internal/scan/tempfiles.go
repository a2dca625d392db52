package scan

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Scanning spools to the temporary directory (os.TempDir()): the
// indexer an RPM database or a large file it reads (index's spool, a
// berth-index-<n> directory each), and the API a vulnerability database
// upload (berth-vulndb-<n>.zip). Each is removed by a deferred call of
// the code that made it, which a process killed midway (SIGKILL, a
// power cut) never runs: removeTempLeftovers takes those leftovers when
// the scanner starts (New), then hourly as it runs jobs (Handle) and as
// the scheduled updates run (Updater).

// tempLeftoverPrefixes are the names the indexer's spool directories and
// the spooled uploads begin with, each followed by os.MkdirTemp's and
// os.CreateTemp's random digits (and, for an upload, ".zip").
const (
	indexSpoolPrefix  = "berth-index-"
	vulnDBSpoolPrefix = "berth-vulndb-"
)

// tempLeftoverName reports whether an entry of the temporary directory
// named name, a directory if dir, is a spool of the scanner's.
func tempLeftoverName(name string, dir bool) bool {
	if dir {
		rest, ok := strings.CutPrefix(name, indexSpoolPrefix)
		return ok && allDigits(rest)
	}
	rest, ok := strings.CutPrefix(name, vulnDBSpoolPrefix)
	if !ok {
		return false
	}
	rest, ok = strings.CutSuffix(rest, ".zip")
	return ok && allDigits(rest)
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// removeTempLeftovers removes from the temporary directory the scanner's
// spools (tempLeftoverName) last written more than leftoverAge ago: a
// spool is written at once and read within minutes, so one that old was
// left by a process killed midway. A directory's age is that of the
// newest entry in it. Only directories and regular files of those names
// are taken, never a symbolic link (nor what it points at), and nothing
// is followed out of a spool directory. What cannot be read or removed
// is left for the next time: the clean-up never fails anything.
func removeTempLeftovers(log *slog.Logger, now time.Time) {
	tmp := os.TempDir()
	entries, err := os.ReadDir(tmp)
	if err != nil {
		log.Debug("list the temporary directory for leftover scan spools", "dir", tmp, "err", err)
		return
	}
	before := now.Add(-leftoverAge)
	removed := 0
	for _, e := range entries {
		// The entry's own type (a symbolic link is one, not its target).
		dir, regular := e.Type().IsDir(), e.Type().IsRegular()
		if !(dir || regular) || !tempLeftoverName(e.Name(), dir) {
			continue
		}
		p := filepath.Join(tmp, e.Name())
		if newest, ok := lastWritten(p); !ok || !newest.Before(before) {
			continue
		}
		var err error
		if dir {
			err = os.RemoveAll(p) // removes links inside, never their targets
		} else {
			err = os.Remove(p)
		}
		if err != nil {
			log.Debug("remove a leftover scan spool", "path", p, "err", err)
			continue
		}
		removed++
	}
	if removed > 0 {
		log.Info("removed the temporary files of scans or vulnerability database uploads killed midway", "dir", tmp, "removed", removed)
	}
}

// lastWritten is the newest modification time of p and, for a directory,
// of everything under it (not following symbolic links); ok is false if
// any of it cannot be read.
func lastWritten(p string) (newest time.Time, ok bool) {
	err := filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if t := fi.ModTime(); t.After(newest) {
			newest = t
		}
		return nil
	})
	return newest, err == nil
}

// sweepTemp runs removeTempLeftovers if leftoverAge has passed since it
// last ran for s (for one of callers at once).
func (s *Service) sweepTemp(now time.Time) {
	last := s.swept.Load()
	if now.UnixNano()-last < int64(leftoverAge) || !s.swept.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	removeTempLeftovers(s.log, now)
}
