package scan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/berth-dev/berth/internal/meta"
)

// maxCPEMappingBytes bounds a repository-to-cpe.json file (Red Hat's is
// a few MiB).
const maxCPEMappingBytes = 256 << 20

// ErrCPEMapping marks a repository-to-cpe.json file that cannot be read.
var ErrCPEMapping = errors.New("content set mapping")

// cpeMappingFile is Red Hat's repository-to-cpe.json:
// {"data": {"<content set>": {"cpes": ["cpe:/o:redhat:..."]}}}.
type cpeMappingFile struct {
	Data map[string]struct {
		CPEs []string `json:"cpes"`
	} `json:"data"`
}

// ImportCPEMapping reads Red Hat's repository-to-cpe.json from r and
// stores it in place of the mapping stored before. It returns the number
// of content sets stored.
func ImportCPEMapping(ctx context.Context, db *meta.DB, r io.Reader) (int, error) {
	m, err := parseCPEMapping(r)
	if err != nil {
		return 0, err
	}
	if _, err := db.ReplaceCPEMapping(ctx, m); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrStore, err)
	}
	return len(m), nil
}

// parseCPEMapping decodes a repository-to-cpe.json file into the CPEs of
// each content set that names any.
func parseCPEMapping(r io.Reader) (map[string][]string, error) {
	lr := &io.LimitedReader{R: r, N: maxCPEMappingBytes + 1}
	var f cpeMappingFile
	if err := json.NewDecoder(lr).Decode(&f); err != nil {
		if lr.N <= 0 {
			return nil, fmt.Errorf("%w: larger than %d bytes", ErrCPEMapping, maxCPEMappingBytes)
		}
		return nil, fmt.Errorf("%w: not a repository-to-cpe.json file: %w", ErrCPEMapping, err)
	}
	if f.Data == nil {
		return nil, fmt.Errorf("%w: not a repository-to-cpe.json file: no \"data\" object", ErrCPEMapping)
	}
	out := make(map[string][]string, len(f.Data))
	for set, v := range f.Data {
		var cpes []string
		for _, c := range v.CPEs {
			if c != "" {
				cpes = append(cpes, c)
			}
		}
		if set != "" && len(cpes) > 0 {
			out[set] = cpes
		}
	}
	return out, nil
}
