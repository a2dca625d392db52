package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// raceWrite is one request of raceWrites: its path and body.
type raceWrite struct{ path, body string }

// sameBody is the writes of paths, each with body.
func sameBody(paths []string, body string) []raceWrite {
	ws := make([]raceWrite, len(paths))
	for i, p := range paths {
		ws[i] = raceWrite{p, body}
	}
	return ws
}

// raceWrites sends writes (with method) at once with one DELETE of del,
// all as alice, and reports each answer as "METHOD status".
func (e *orgEnv) raceWrites(method string, writes []raceWrite, del string) map[string]int {
	e.t.Helper()
	statuses := make(chan string, len(writes)+1)
	var wg sync.WaitGroup
	start := make(chan struct{})
	send := func(method, path, body string) {
		defer wg.Done()
		<-start
		req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
		if err != nil {
			statuses <- err.Error()
			return
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		req.SetBasicAuth("alice", e.env.Secret("alice"))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			statuses <- err.Error()
			return
		}
		res.Body.Close()
		statuses <- fmt.Sprintf("%s %d", method, res.StatusCode)
	}
	for _, w := range writes {
		wg.Add(1)
		go send(method, w.path, w.body)
	}
	wg.Add(1)
	go send("DELETE", del, "")
	close(start)
	wg.Wait()
	close(statuses)
	seen := map[string]int{}
	for s := range statuses {
		seen[s]++
	}
	return seen
}

// checkRace fails the test for an answer not in ok, or a delete that did
// not answer 204.
func checkRace(t *testing.T, what string, seen map[string]int, ok ...string) {
	t.Helper()
	for s, n := range seen {
		if s != "DELETE 204" && !strings.Contains(" "+strings.Join(ok, " | ")+" ", " "+s+" ") {
			t.Errorf("%s: %d writes racing the delete answered %q (all: %v)", what, n, s, seen)
		}
	}
	if seen["DELETE 204"] != 1 {
		t.Errorf("%s: the delete answered %v", what, seen)
	}
}
