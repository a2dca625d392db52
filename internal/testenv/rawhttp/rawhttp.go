// Package rawhttp is an HTTP receiver on loopback for tests that writes
// its answers' status lines and headers byte for byte: net/http's server
// cannot send a reason phrase of its own choosing.
package rawhttp

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// Server answers every request with the status line answer returns for
// it (e.g. "HTTP/1.1 500 Internal Server Error"), an empty body and
// Connection: close. It returns the server's URL (http://host:port) and
// stops when the test ends.
func Server(t testing.TB, answer func(*http.Request) string) string {
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
				_, _ = io.WriteString(c, answer(req)+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			})
		}
	})
	return "http://" + l.Addr().String()
}
