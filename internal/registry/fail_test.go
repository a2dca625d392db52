package registry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
)

// TestFailAnswersStorageFullAfterContextEnds: an error that has an answer
// of its own (storage full: 507) is answered even when the request's
// context has ended by then. Before, fail took any ended context for a
// client gone and wrote nothing, and net/http sent a client still there
// an empty 200 for a push that had failed.
func TestFailAnswersStorageFullAfterContextEnds(t *testing.T) {
	reg := New(Stores{}, nil, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequestWithContext(ctx, http.MethodPut, "/v2/app/blobs/uploads/x", nil)
	w := httptest.NewRecorder()
	reg.fail(w, r, fmt.Errorf("store blob: %w", syscall.ENOSPC))
	if w.Code != http.StatusInsufficientStorage {
		t.Fatalf("storage full with the context ended: answered %d, want 507", w.Code)
	}
}
