package gate

import (
	"context"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
)

// ManifestSignatures verifies the signatures of a manifest of repo (cosign
// tag layout and referrers) against the trusted keys of the repository's
// gate, exactly as the gate's policy sees them (Input.Signatures). keyed
// reports whether the gate trusts any key: without a gate or keys every
// signature is unverified ("the gate trusts no key"). The web UI shows
// this as "verified by key X" or "signed (unverified)".
func (s *Service) ManifestSignatures(ctx context.Context, repo string, d digest.Digest) (sigs []Signature, keyed bool, err error) {
	var keys []TrustedKey
	g, err := s.st.Gates.GetGate(ctx, repo)
	switch {
	case errors.Is(err, meta.ErrGateNotFound):
	case err != nil:
		return nil, false, err
	default:
		cfg, err := Parse(g.Config)
		if err != nil {
			return nil, false, fmt.Errorf("gate of %s: %w", repo, err)
		}
		keys = cfg.Keys
	}
	sigs, _, err = s.signatures(ctx, repo, d, keys, false) // the pages show signatures only
	return sigs, len(keys) > 0, err
}
