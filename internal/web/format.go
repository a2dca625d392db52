package web

import (
	"fmt"
	"html/template"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/uipath"
)

// severities in the order the pages show them.
var severities = []string{"Critical", "High", "Medium", "Low", "Negligible", "Unknown"}

var funcs = template.FuncMap{
	"bytes": humanBytes,
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	// expiry is a time as the manifest page's datetime-local field reads it.
	"expiry": func(t time.Time) string { return t.UTC().Format(expiryForm) },
	"iso": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"short": func(d fmt.Stringer) string {
		s := d.String()
		if _, hex, ok := strings.Cut(s, ":"); ok && len(hex) > 12 {
			return hex[:12]
		}
		return s
	},
	"severities": func() []string { return severities },
	"lower":      strings.ToLower,
	"join":       strings.Join,
	"repoPath":   repoPath,
	"query":      func(v url.Values) string { return v.Encode() },
	"add":        func(a, b int) int { return a + b },
	"count":      count,
	"list":       func(s ...string) []string { return s },
	"dict": func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	},
	// sigAt is row i's signature status (unverified when the verifier is off).
	"sigAt": func(s []sigStatus, i int) sigStatus {
		if i < len(s) {
			return s[i]
		}
		return sigStatus{Reason: "signature verification is off"}
	},
	// covAt is row i's vulnerability data coverage (not checked when
	// scanning is off).
	"covAt": covAt,
	"whenp": func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	// robotShort is a robot's name without its namespace ("ci" of "org+ci").
	"robotShort": func(name string) string {
		_, short, _ := strings.Cut(name, "+")
		return short
	},
}

// actionPath is the path repo's forms post to (uipath.Action).
func actionPath(repo string) string { return uipath.Action(repo) }

// repoPath is a repository's page path (uipath.Repository), which its
// other pages extend ("/activity", "/manifest/<digest>").
func repoPath(repo string) string { return uipath.Repository(repo) }

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func itoa(n int) string { return strconv.Itoa(n) }

// count is a number with its thousands separated ("49,500").
func count(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}
