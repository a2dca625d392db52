package events

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/ingest"
	"github.com/berth-dev/berth/internal/storage"
)

// UpstreamLimits is a transport that bounds what the answers an upstream
// registry's client reads whole may cost: a manifest GET
// (/v2/<name>/manifests/<reference>) and a tag list page
// (/v2/<name>/tags/list), a redirect of either included.
// go-containerregistry reads a manifest up to 100 MiB and a tag list page
// without limit, far past what Berth keeps: an upstream could make the
// process hold that much per request. Other requests (blobs, which are
// streamed and verified, tokens, pings) pass unchanged.
type UpstreamLimits struct {
	Next http.RoundTripper
	// MaxManifestBytes caps a manifest body: a declared Content-Length
	// over it is refused before the body is read, and a body that goes on
	// past it fails there; both with an *ingest.TooLargeError (the
	// refusal a push of that manifest gets). 0: no cap.
	MaxManifestBytes int64
	// MaxTagListBytes caps one tag list page the same way, with a
	// *TagListTooLargeError. 0: no cap.
	MaxTagListBytes int64
	// Stall cuts either body when a read of it delivers nothing for this
	// long (storage.ErrStalled). 0: never.
	Stall time.Duration
	// Timeout bounds either request, its body included
	// (ErrUpstreamTimeout). 0: none.
	Timeout time.Duration
}

// TagListTooLargeError refuses a tag list page over
// UpstreamLimits.MaxTagListBytes.
type TagListTooLargeError struct {
	// Size is the page's declared size, or -1 when it is only known to
	// exceed the limit (a read stopped there).
	Size, Limit int64
}

func (e *TagListTooLargeError) Error() string {
	if e.Size < 0 {
		return fmt.Sprintf("the upstream's tag list page exceeds the limit of %d bytes", e.Limit)
	}
	return fmt.Sprintf("the upstream's tag list page of %d bytes exceeds the limit of %d bytes", e.Size, e.Limit)
}

// ErrUpstreamTimeout is wrapped by the error of a request cut at
// UpstreamLimits.Timeout.
var ErrUpstreamTimeout = errors.New("the upstream took too long to answer")

type answerKind int

const (
	otherAnswer answerKind = iota
	manifestAnswer
	tagListAnswer
)

// kindOf classifies a request by the one that started it (a redirect is
// bounded as what it answers for).
func kindOf(r *http.Request) answerKind {
	for r.Response != nil && r.Response.Request != nil {
		r = r.Response.Request
	}
	p := r.URL.Path
	if r.Method != http.MethodGet || !strings.HasPrefix(p, "/v2/") {
		return otherAnswer
	}
	if strings.HasSuffix(p, "/tags/list") {
		return tagListAnswer
	}
	if i := strings.LastIndex(p, "/manifests/"); i > 3 && !strings.Contains(p[i+len("/manifests/"):], "/") {
		return manifestAnswer
	}
	return otherAnswer
}

// RoundTrip sends the request on to Next and bounds its answer.
func (t UpstreamLimits) RoundTrip(r *http.Request) (*http.Response, error) {
	var limit int64
	var tooLarge func(size int64) error
	switch kindOf(r) {
	case manifestAnswer:
		limit = t.MaxManifestBytes
		tooLarge = func(size int64) error { return &ingest.TooLargeError{Size: size, Limit: t.MaxManifestBytes} }
	case tagListAnswer:
		limit = t.MaxTagListBytes
		tooLarge = func(size int64) error { return &TagListTooLargeError{Size: size, Limit: t.MaxTagListBytes} }
	default:
		return t.Next.RoundTrip(r)
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	if t.Timeout > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, t.Timeout, fmt.Errorf("%w (%s)", ErrUpstreamTimeout, t.Timeout))
		prev := cancel
		cancel = func(err error) { prev(err); stop() }
	}
	resp, err := t.Next.RoundTrip(r.WithContext(ctx))
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && r.Context().Err() == nil {
			err = fmt.Errorf("%w: %w", cause, err)
		}
		cancel(nil)
		return nil, err
	}
	if limit > 0 && resp.ContentLength > limit {
		resp.Body.Close()
		cancel(nil)
		return nil, tooLarge(resp.ContentLength)
	}
	b := &boundedBody{rc: resp.Body, ctx: ctx, outer: r.Context(), cancel: cancel, left: -1, tooLarge: tooLarge}
	if limit > 0 {
		b.left = limit + 1 // one byte past the limit tells a longer body
	}
	if t.Stall > 0 {
		b.stall = &storage.StallReader{R: resp.Body, Idle: t.Stall, Stalled: func() { cancel(storage.ErrStalled) }}
	}
	resp.Body = b
	return resp, nil
}

// boundedBody reads at most limit+1 bytes of a body (left counts down;
// -1: no limit), failing when there are more, and under the stall guard.
type boundedBody struct {
	rc         io.ReadCloser
	stall      *storage.StallReader
	ctx, outer context.Context
	cancel     context.CancelCauseFunc
	left       int64
	tooLarge   func(size int64) error
	err        error
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		b.err = b.tooLarge(-1)
		return 0, b.err
	}
	if b.left > 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	var r io.Reader = b.rc
	if b.stall != nil {
		r = b.stall
	}
	n, err := r.Read(p)
	if b.left > 0 {
		b.left -= int64(n)
		if b.left == 0 {
			// The byte past the limit came: the body is too long. The
			// bytes read are not handed on.
			b.err = b.tooLarge(-1)
			return 0, b.err
		}
	}
	if err != nil && err != io.EOF {
		if cause := context.Cause(b.ctx); cause != nil && b.outer.Err() == nil {
			// Cut here (stall, timeout): say why, not "context canceled".
			err = fmt.Errorf("%w: %w", cause, err)
		}
		b.err = err
	}
	return n, err
}

func (b *boundedBody) Close() error {
	if b.stall != nil {
		b.stall.Stop()
	}
	err := b.rc.Close()
	b.cancel(nil)
	return err
}
