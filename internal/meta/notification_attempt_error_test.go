package meta_test

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestAttemptErrorIsCleaned: an attempt's error carries the receiver's
// status line, its text: a NUL, invalid UTF-8 or a huge line is stored
// cleaned (NUL dropped, invalid bytes replaced, the length bounded) as a
// job's error is. PostgreSQL refused the NUL, and the attempt was lost.
func TestAttemptErrorIsCleaned(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, d)
			n := createNotification(t, db, "33333333-3333-3333-3333-333333333333")
			for _, tc := range []struct{ name, err string }{
				{"NUL", "POST https://hook.example/…: receiver answered 500 a\x00b"},
				{"invalid UTF-8", "POST https://hook.example/…: receiver answered 500 a\xff\xfeb"},
				{"huge", "POST https://hook.example/…: receiver answered 500 " + strings.Repeat("x\x00", 1<<20)},
			} {
				a := meta.Attempt{NotificationID: n.ID, EventUUID: "e-" + tc.name, Attempt: 1, StatusCode: 500, Error: tc.err}
				if err := db.Notifications().RecordAttempt(ctx, a, false); err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				at, err := db.Notifications().Attempts(ctx, n.ID, 1)
				if err != nil || len(at) != 1 || at[0].EventUUID != a.EventUUID {
					t.Fatalf("%s: attempts %+v, %v", tc.name, at, err)
				}
				got := at[0].Error
				if strings.ContainsRune(got, 0) || !utf8.ValidString(got) || len(got) > 4100 || !strings.Contains(got, "receiver answered 500 a") && tc.name != "huge" {
					t.Errorf("%s: stored error %q", tc.name, got[:min(len(got), 200)])
				}
			}
		})
	}
}
