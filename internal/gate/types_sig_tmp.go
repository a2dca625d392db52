package gate

type Signature struct {
	Kind     string // "cosign" (the sha256-<hex>.sig tag) or "referrer" (OCI 1.1 referrer)
	Digest   string // the signature manifest's digest
	Verified bool   // verified against one of the gate's trusted keys
	KeyID    string // the trusted key that verified it (its id), empty if none
	Identity string // the signer identity when known (keyless), else empty
	Error    string // why it did not verify, empty when verified
}
type Attestation struct {
	PredicateType string
	Digest        string
	Verified      bool
}
