package events

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// rawReceiver is a receiver on loopback that answers every request with
// statusLine as it is: net/http's server cannot send a reason phrase of
// its own choosing. It returns the receiver's URL.
func rawReceiver(t *testing.T, statusLine string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			wg.Go(func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				_, _ = io.WriteString(c, statusLine+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			})
		}
	})
	return "http://" + l.Addr().String()
}

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
	rcv := rawReceiver(t, "HTTP/1.1 500 "+apiKey+" Bearer "+bearer+" "+secret)
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
