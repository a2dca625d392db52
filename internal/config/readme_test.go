package config

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEListsEverySetting: every setting (Paths) has a row in the
// README's settings table, which CheckEnv's refusal points to. A row may
// name several settings of one section: the first by its whole path, the
// others by their whole path or by their path within that section
// (`scan.vulndb.baseURL`, `updateInterval`). Before, scan.vulndb.cpeMappingURL had none.
func TestREADMEListsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	code := regexp.MustCompile("`([^`]+)`")
	type row struct{ first, section string }
	var rows []row
	var named [][]string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cell := strings.SplitN(line, "|", 3)[1]
		var names []string
		for _, m := range code.FindAllStringSubmatch(cell, -1) {
			names = append(names, m[1])
		}
		section, _, _ := strings.Cut(names[0], ".")
		rows = append(rows, row{names[0], section})
		named = append(named, names[1:])
	}
	if len(rows) < 20 {
		t.Fatalf("README.md's settings table has %d rows; is it still a table of | `path` | rows?", len(rows))
	}
	for _, p := range Paths() {
		listed := false
		for i, r := range rows {
			if p == r.first {
				listed = true
			}
			for _, n := range named[i] {
				if p == n || strings.HasPrefix(p, r.section+".") && strings.HasSuffix(p, "."+n) {
					listed = true
				}
			}
		}
		if !listed {
			t.Errorf("README.md's settings table does not list %s (%s)", p, EnvName(p))
		}
	}
}
