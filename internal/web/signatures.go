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
	Verified  bool
	Unchecked bool   // left unverified by the page's bound (sigChecksPerPage)
	KeyID     string // the short id of the key that verified it
	Reason    string // why none verified
}

// The tags page's bound on verifying signatures: each verification reads
// up to gate.MaxSignatureLayers signature payloads (and as many
// attestation layers) of up to gate.MaxPayload bytes, and anyone may load
// the page. A page verifies at most sigChecksPerPage manifests, and none
// once those read sigLayersPerPage signatures; the rows left say "not
// checked" (their manifest's page verifies them).
const (
	sigChecksPerPage = 10
	sigLayersPerPage = gate.MaxSignatureLayers
)

// Reasons a row's signature was not verified that the page gives itself.
const (
	reasonNoKey      = "the repository's gate trusts no key"
	reasonNotChecked = "not checked on this page (it verifies a few manifests' signatures): the manifest's page verifies them"
	// reasonUnreadable stands for a payload the verifier could not read:
	// its error (a storage error, which may name the server's paths)
	// goes to the log, not to the page.
	reasonUnreadable = "the signature payload could not be read (the server log says why)"
)

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
// verification per distinct manifest, within the page's bound
// (sigChecksPerPage). Without a gate (gated false) nothing can verify and
// nothing is read; when the gate trusts no key (the first verification
// says so) the rest are left unverified unread. The slice is aligned with
// rows; nil when the verifier is off.
func (u *UI) rowSignatures(ctx context.Context, repo string, gated bool, rows []meta.TagRow) ([]sigStatus, error) {
	if u.db.Signatures == nil {
		return nil, nil
	}
	out := make([]sigStatus, len(rows))
	done := map[digest.Digest]sigStatus{}
	keyed := gated
	checks, layers := 0, 0
	for i, r := range rows {
		if !r.Signed {
			continue
		}
		if st, ok := done[r.Digest]; ok {
			out[i] = st
			continue
		}
		switch {
		case !keyed:
			out[i] = sigStatus{Reason: reasonNoKey}
			continue
		case checks >= sigChecksPerPage || layers >= sigLayersPerPage:
			out[i] = sigStatus{Unchecked: true, Reason: reasonNotChecked}
			continue
		}
		sigs, k, err := u.db.Signatures.ManifestSignatures(ctx, repo, r.Digest)
		if err != nil {
			return nil, err
		}
		checks, layers, keyed = checks+1, layers+max(len(sigs), 1), k
		u.scrubReasons(repo, r.Digest, sigs)
		out[i] = statusOf(sigs)
		done[r.Digest] = out[i]
	}
	return out, nil
}

// scrubReasons replaces the reasons that carry a read error with
// reasonUnreadable, logging them.
func (u *UI) scrubReasons(repo string, d digest.Digest, sigs []gate.Signature) {
	for i := range sigs {
		if strings.HasPrefix(sigs[i].Error, "cannot read the signature payload") {
			u.log.Warn("read a signature payload", "repo", repo, "digest", d, "signature", sigs[i].Digest, "err", sigs[i].Error)
			sigs[i].Error = reasonUnreadable
		}
	}
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
	u.scrubReasons(repo, d, sigs)
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
