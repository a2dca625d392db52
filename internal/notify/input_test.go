package notify_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/notify"
)

// TestInputTakesEveryFieldOfView: a notification as the API shows it
// (View), disabled so that every field is set, decodes into an Input
// with unknown fields refused, as the API decodes a POST: a body copied
// from a GET is never refused for a field the GET itself returned.
func TestInputTakesEveryFieldOfView(t *testing.T) {
	n := meta.Notification{UUID: "6c1c4a4e-0000-4000-8000-000000000001", Event: "repo_image_expiry", Method: "webhook", Title: "ci",
		Config: []byte(`{"url":"https://ci.example.com"}`), EventConfig: []byte(`{"days":3}`), NumberOfFailures: 4,
		DisabledUntil: time.Now().Add(time.Hour), DisabledReason: "failing"}
	body, err := json.Marshal(notify.View(n))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var in notify.Input
	if err := dec.Decode(&in); err != nil {
		t.Fatalf("a GET's body %s: %v", body, err)
	}
	if in.EventConfigAsShown["days"] != 3.0 || in.Event != n.Event || in.Title != n.Title {
		t.Fatalf("decoded %+v from %s", in, body)
	}
}
