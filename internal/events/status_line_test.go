package events

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv/rawhttp"
)

// TestStatusLineSecretsRedacted: a receiver that echoes the delivery's
// credentials in its status line (HTTP/1.1 500 <secret>) does not get
// them into the Result's error, which is the recorded attempt's error;
// the status code still shows.
func TestStatusLineSecretsRedacted(t *testing.T) {
	const (
		secret = "whsec-status-0123456789"
		bearer = "tok-status-abcdefghij"
		apiKey = "key-status-5555666677778888"
	)
	rcv := rawhttp.Server(t, func(*http.Request) string { return "HTTP/1.1 500 " + apiKey + " Bearer " + bearer + " " + secret })
	res := Webhook{URL: rcv + "/hook", Secret: []byte(secret),
		Headers: map[string]string{"Authorization": "Bearer " + bearer, "X-Api-Key": apiKey},
		Client:  loopbackClient(t)}.Deliver(context.Background(), pushDelivery(t))
	if res.Err == nil {
		t.Fatal("a 500 was taken for a success")
	}
	if res.StatusCode != http.StatusInternalServerError || !strings.Contains(res.Err.Error(), "500") {
		t.Errorf("StatusCode %d, Err %q: want the 500 to show", res.StatusCode, res.Err)
	}
	for _, s := range []string{secret, bearer, apiKey} {
		if strings.Contains(res.Err.Error(), s) {
			t.Errorf("Err carries %q: %s", s, res.Err)
		}
	}
}
