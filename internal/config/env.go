package config

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

var errEOF = io.EOF

// DefaultsFileVariable names a YAML file of defaults read before the
// configuration file: the container image's (dataDir /data, addr
// 0.0.0.0:5000), which a --config file, BERTH_* variables and flags all
// override. (The image used to set BERTH_DATA_DIR and BERTH_ADDR, which
// overrode a --config file's dataDir and addr.)
const DefaultsFileVariable = "BERTH_CONFIG_DEFAULTS"

// EnvName is the environment variable of a field path: BERTH_ followed by
// the path in upper snake case (storage.filesystem.rootDirectory is
// BERTH_STORAGE_FILESYSTEM_ROOT_DIRECTORY). Keys that are already upper
// case (Quay's names) keep their spelling: BERTH_ALLOWED_OCI_ARTIFACT_TYPES.
func EnvName(path string) string {
	var b strings.Builder
	b.WriteString("BERTH_")
	for i, part := range strings.Split(path, ".") {
		if i > 0 {
			b.WriteByte('_')
		}
		for j, r := range part {
			if j > 0 && unicode.IsUpper(r) && !unicode.IsUpper(rune(part[j-1])) && part[j-1] != '_' {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToUpper(r))
		}
	}
	return b.String()
}

// LoadEnv sets every field that has a BERTH_* variable in env. Scalars are
// parsed by type; maps and lists are read as YAML flow values
// (BERTH_ALLOWED_OCI_ARTIFACT_TYPES='{"a/b": ["c/d"]}') and replace the
// file's whole ('{}' clears it). Variables that name no setting are
// CheckEnv's to refuse.
func (c *Config) LoadEnv(lookup func(string) (string, bool)) error {
	var errs []error
	walk(reflect.ValueOf(c).Elem(), "", func(path string, v reflect.Value) {
		name := EnvName(path)
		s, ok := lookup(name)
		if !ok {
			return
		}
		if err := setValue(v, s); err != nil {
			errs = append(errs, fmt.Errorf("%s (from %s): %w", path, name, err))
		}
	})
	return errors.Join(errs...)
}

// Paths returns the YAML path of every setting, in the order LoadEnv
// walks them (for tests that check every setting is documented or used).
func Paths() []string {
	var out []string
	walk(reflect.ValueOf(&Config{}).Elem(), "", func(path string, _ reflect.Value) { out = append(out, path) })
	return out
}

// walk calls fn for every leaf field with its yaml path.
func walk(v reflect.Value, prefix string, fn func(path string, v reflect.Value)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		path := tag
		if prefix != "" {
			path = prefix + "." + tag
		}
		if f.Type.Kind() == reflect.Struct {
			walk(v.Field(i), path, fn)
			continue
		}
		fn(path, v.Field(i))
	}
}

func setValue(v reflect.Value, s string) error {
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not a boolean", s)
		}
		v.SetBool(b)
	case reflect.Int64:
		if v.Type() == reflect.TypeOf(time.Duration(0)) {
			d, err := time.ParseDuration(s)
			if err != nil {
				return fmt.Errorf("%q is not a duration (like 5m or 90s)", s)
			}
			v.SetInt(int64(d))
			return nil
		}
		fallthrough
	case reflect.Int:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		v.SetInt(n)
	case reflect.Map, reflect.Slice:
		// Decoded into a new value, which replaces the file's: the decoder
		// would add a map's keys to the map it is given.
		p := reflect.New(v.Type())
		if err := unmarshalYAML(s, p.Interface()); err != nil {
			return err
		}
		v.Set(p.Elem())
	default:
		return fmt.Errorf("unsupported setting kind %s", v.Kind())
	}
	return nil
}

// otherVariables are the BERTH_* names the project uses that are not
// settings: CheckEnv leaves them alone.
var otherVariables = []string{
	DefaultsFileVariable, // a file of defaults (the container image's)
	"BERTH_PASSWORD",     // the password of berth gate, promote and vulns
	"BERTH_IMAGE",        // the image deploy/compose runs
	// The variables CI triggers hand to pipelines (events.TriggerVariables),
	// which may run berth.
	"BERTH_EVENT", "BERTH_EVENT_ID", "BERTH_REPOSITORY", "BERTH_DOCKER_URL", "BERTH_DIGEST", "BERTH_TAGS",
	"BERTH_BASE_REPOSITORY", "BERTH_BASE_TAG", "BERTH_BASE_DOCKER_URL", "BERTH_BASE_OLD_DIGEST", "BERTH_BASE_NEW_DIGEST",
	// The CI examples' credentials (docs/gates.md).
	"BERTH_USER", "BERTH_TOKEN", "BERTH_AUTH",
	// Tools and knobs of the test suites.
	"BERTH_HELM", "BERTH_VERSITYGW", "BERTH_NOTIFY_DOWN",
}

// serviceLink matches the variables Kubernetes gives every pod for each
// Service of its namespace (unless the pod sets enableServiceLinks: false):
// a Service named berth, or berth-metrics, gives BERTH_SERVICE_HOST,
// BERTH_PORT_5000_TCP_ADDR, BERTH_METRICS_PORT and so on. No setting ends
// so (TestServiceLinksAreNoSettings), and refusing them would stop a
// release named berth from starting.
var serviceLink = regexp.MustCompile(`^BERTH(_[A-Z0-9_]+)?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$`)

// otherPrefixes start the test suites' and benchmarks' own variables.
var otherPrefixes = []string{"BERTH_TEST_", "BERTH_E2E_", "BERTH_BENCH_"}

// CheckEnv refuses the BERTH_* variables of environ (as os.Environ
// returns it) that name no setting, as LoadFile refuses unknown keys: a
// misspelled variable (BERTH_EXTERNALURL) would otherwise be ignored
// without a word. The refusal names the setting meant where one is near
// (an edit or two away, or the same name under its section:
// BERTH_S3_BUCKET for BERTH_STORAGE_S3_BUCKET). The project's other
// variables (otherVariables, otherPrefixes) are left alone.
func CheckEnv(environ []string) error {
	known := map[string]bool{}
	var names []string
	for _, p := range Paths() {
		n := EnvName(p)
		known[n] = true
		names = append(names, n)
	}
	var errs []error
	seen := map[string]bool{}
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "BERTH_") || known[name] || seen[name] || slices.Contains(otherVariables, name) ||
			slices.ContainsFunc(otherPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) ||
			serviceLink.MatchString(name) {
			continue
		}
		seen[name] = true
		msg := fmt.Sprintf("%s is not a setting (a setting's variable is BERTH_ and its path in upper snake case:"+
			" externalURL is BERTH_EXTERNAL_URL; README.md lists them)", name)
		var under []string
		for _, n := range names {
			if strings.HasPrefix(n, name+"_") {
				under = append(under, n)
			}
		}
		if len(under) > 6 {
			under = append(under[:6], "...")
		}
		if len(under) > 0 {
			msg = fmt.Sprintf("%s names a section, not a setting: its settings are %s", name, strings.Join(under, ", "))
		} else if near := nearestName(name, names); near != "" {
			msg = fmt.Sprintf("%s is not a setting: did you mean %s?", name, near)
		}
		errs = append(errs, errors.New(msg))
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// nearestName is the name of names that name most likely misspells: one at
// most two edits away (three for long names), or one that ends with name's
// part after BERTH_ (its section left out), or whose part after BERTH_
// name ends with; "" if none is.
func nearestName(name string, names []string) string {
	rest := strings.TrimPrefix(name, "BERTH_")
	best, bestDist := "", 3
	if len(rest) >= 12 {
		bestDist = 4
	}
	for _, n := range names {
		if d := editDistance(name, n); d < bestDist {
			best, bestDist = n, d
		}
	}
	if best != "" {
		return best
	}
	for _, n := range names {
		nrest := strings.TrimPrefix(n, "BERTH_")
		if len(rest) >= 4 && strings.HasSuffix(n, "_"+rest) || len(nrest) >= 4 && strings.HasSuffix(name, "_"+nrest) {
			return n
		}
	}
	return ""
}

// editDistance is the Levenshtein distance of two ASCII strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
