package mirror

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-dev/berth/internal/ingest"
	"github.com/berth-dev/berth/internal/meta"
)

// TestRefusal: a sync skips a tag on a refusal of the upstream's content
// itself, however wrapped (a schema 1 or malformed manifest, the artifact
// policy, the size cap, met by the ingest or by the transport as it reads,
// the namespace's quota), and fails on anything else (an upstream error,
// a timeout, bytes that do not match their digest, a copy's limits).
func TestRefusal(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("upstream manifest x: %w", &ingest.InvalidError{Err: errors.New("schema 1")}), true},
		{fmt.Errorf("upstream manifest x: %w", &ingest.PolicyError{Err: errors.New("not allowed")}), true},
		{fmt.Errorf("fetch x: %w", &url.Error{Op: "Get", URL: "https://up", Err: &ingest.TooLargeError{Size: -1, Limit: 4}}), true},
		{fmt.Errorf("fetch blob x: %w", &meta.QuotaExceededError{Namespace: "acme"}), true},
		{fmt.Errorf("fetch x: %w", &transport.Error{StatusCode: 503}), false},
		{fmt.Errorf("fetch x: %w", &transport.Error{StatusCode: 404}), false},
		{fmt.Errorf("index x: %w", ErrIndexTooDeep), false},
		{&ingest.DigestError{Want: "sha256:a", Got: "sha256:b"}, false},
		{context.DeadlineExceeded, false},
	} {
		if got := refusal(c.err); got != c.want {
			t.Errorf("refusal(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestKeptMessage: a sync's message names the immutable tags it kept and
// the refused ones it skipped, each with why, cut short, and at most 10
// of each.
func TestKeptMessage(t *testing.T) {
	if got := keptMessage(nil); got != "" {
		t.Fatalf("nothing kept: %q", got)
	}
	kept := keptTags{{tag: "16.3"}}
	for i := range 12 {
		kept = append(kept, keptTag{tag: fmt.Sprintf("r%02d", i), refused: errors.New(strings.Repeat("x", 1000))})
	}
	got := keptMessage(kept)
	for _, want := range []string{"; kept 1 immutable tag(s) that moved upstream where they are: 16.3;",
		"; skipped 12 tag(s) whose upstream content Berth refuses (kept as they are here): r00 (" + strings.Repeat("x", 300) + "...), r01 (",
		"r09 (", " and 2 more"} {
		if !strings.Contains(got, want) {
			t.Fatalf("message %q, want it to say %q", got, want)
		}
	}
	if strings.Contains(got, "r10") || len(got) > 4000 {
		t.Fatalf("message of %d bytes names more than 10 skipped tags: %q", len(got), got)
	}
}
