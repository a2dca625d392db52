package web

import (
	"context"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/gate"
	"github.com/berth-dev/berth/internal/meta"
)

// sigStatus is what a page says of a manifest's signatures, as
// internal/gate's verifier found them against the trusted keys of the
// repository's gate: "verified by key X", or signed but unverified (no
// key, an untrusted key, a keyless signature) with the reason.
type sigStatus struct {
	Verified bool
	KeyID    string // the short id of the key that verified it
	Reason   string // why none verified
}

// shortKey is a key id's first 12 hex digits ("sha256:ab12…").
func shortKey(id string) string {
	algo, hex, ok := strings.Cut(id, ":")
	if ok && len(hex) > 12 {
		return algo + ":" + hex[:12]
	}
	return id
}

func statusOf(sigs []gate.Signature) sigStatus {
	var st sigStatus
	for _, s := range sigs {
		if s.Verified {
			return sigStatus{Verified: true, KeyID: shortKey(s.KeyID)}
		}
		if st.Reason == "" {
			st.Reason = s.Error
		}
	}
	return st
}

// rowSignatures verifies the signatures of a page's signed tags, one
// verification per distinct manifest; when the gate trusts no key (the
// first verification says so) nothing can verify and the rest are left
// unverified unread. The slice is aligned with rows; nil when the
// verifier is off.
func (u *UI) rowSignatures(ctx context.Context, repo string, rows []meta.TagRow) ([]sigStatus, error) {
	if u.db.Signatures == nil {
		return nil, nil
	}
	out := make([]sigStatus, len(rows))
	done := map[digest.Digest]sigStatus{}
	keyed := true
	for i, r := range rows {
		if !r.Signed {
			continue
		}
		if st, ok := done[r.Digest]; ok {
			out[i] = st
			continue
		}
		if !keyed {
			out[i] = sigStatus{Reason: "the repository's gate trusts no key"}
			continue
		}
		sigs, k, err := u.db.Signatures.ManifestSignatures(ctx, repo, r.Digest)
		if err != nil {
			return nil, err
		}
		keyed = k
		out[i] = statusOf(sigs)
		done[r.Digest] = out[i]
	}
	return out, nil
}

// manifestSignatures verifies a manifest's signatures for its page:
// each signature manifest's status by digest, and the overall status.
func (u *UI) manifestSignatures(ctx context.Context, repo string, d digest.Digest) (map[string]sigStatus, sigStatus, error) {
	if u.db.Signatures == nil {
		return nil, sigStatus{}, nil
	}
	sigs, _, err := u.db.Signatures.ManifestSignatures(ctx, repo, d)
	if err != nil {
		return nil, sigStatus{}, err
	}
	byDigest := map[string]sigStatus{}
	for _, s := range sigs {
		st := byDigest[s.Digest]
		if s.Verified && !st.Verified {
			st = sigStatus{Verified: true, KeyID: shortKey(s.KeyID)}
		} else if !st.Verified && st.Reason == "" {
			st.Reason = s.Error
		}
		byDigest[s.Digest] = st
	}
	return byDigest, statusOf(sigs), nil
}
