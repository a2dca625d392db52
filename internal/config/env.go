package config

import (
	"errors"
	"fmt"
	"io"
	"reflect"
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
// (BERTH_ALLOWED_OCI_ARTIFACT_TYPES='{"a/b": ["c/d"]}').
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
		return unmarshalYAML(s, v.Addr().Interface())
	default:
		return fmt.Errorf("unsupported setting kind %s", v.Kind())
	}
	return nil
}
