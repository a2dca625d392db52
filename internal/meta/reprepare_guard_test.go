package meta_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// failures records what CheckReprepares reports instead of failing the
// test running it.
type failures struct {
	testing.TB
	mu   sync.Mutex
	msgs []string
}

func (f *failures) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
}

// TestCheckRepreparesFindsPlansOnBoundValues runs statements whose plan
// SQLite makes from a value bound to them, which it then prepares again
// on every run, and their rewrites (stmtcache.go), through a store
// checked by metatest.CheckReprepares: it must name the first and pass
// the second.
func TestCheckRepreparesFindsPlansOnBoundValues(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		query  string
		arg    func(i int) any
		replan bool
	}{
		{"SELECT name FROM repositories ORDER BY name LIMIT ?", func(i int) any { return i + 1 }, true},
		{"SELECT name FROM repositories ORDER BY name LIMIT CAST(? AS BIGINT)", func(i int) any { return i + 1 }, false},
		{`SELECT name FROM repositories WHERE name LIKE ? ESCAPE '\'`, func(i int) any { return fmt.Sprint("acme", i, "/%") }, true},
		{`SELECT name FROM repositories WHERE name LIKE CAST(? AS TEXT) ESCAPE '\'`, func(i int) any { return fmt.Sprint("acme", i, "/%") }, false},
		// tags_expires is a partial index WHERE expires_at > 0.
		{"SELECT name FROM tags WHERE expires_at > ?", func(i int) any { return i }, true},
		{"SELECT name FROM tags WHERE expires_at > 0 AND expires_at > CAST(? AS BIGINT)", func(i int) any { return i }, false},
		{"SELECT name FROM tags WHERE expires_at = 0 OR expires_at - ? > 0", func(i int) any { return i }, false},
	} {
		t.Run(c.query, func(t *testing.T) {
			f := &failures{TB: t}
			db, err := meta.Open(ctx, filepath.Join(t.TempDir(), "meta.db"), meta.StatementCheck(metatest.CheckReprepares(f)))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 10 {
				if _, err := db.ReadRows(ctx, c.query, c.arg(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			named := false
			for _, m := range f.msgs {
				if strings.Contains(m, c.query) {
					named = true
				} else {
					t.Errorf("CheckReprepares named another statement: %s", m)
				}
			}
			if named != c.replan {
				t.Errorf("CheckReprepares named it: %v, want %v (reports: %q)", named, c.replan, f.msgs)
			}
		})
	}
}
