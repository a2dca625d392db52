package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// burstSize is how many wrong-password requests TestAuthLoginBurst fires
// at once, and burstMemoryBudget how much the server's peak resident memory
// may grow over its idle figure while answering them.
const (
	burstSize         = 200
	burstMemoryBudget = 200 << 20
)

// TestAuthLoginBurst fires burstSize concurrent requests with a wrong
// password for alice from 127.0.0.1, half to the token endpoint and half to
// /v2/ with Basic credentials. Each password check costs 19 MiB (argon2id),
// so the server must count the attempts before it hashes and bound how many
// hashes run at once: its peak resident memory (VmHWM) must stay within
// burstMemoryBudget of its idle VmRSS. Afterwards alice's real password is
// accepted from another address (127.0.0.2) while the attacker's address
// is throttled with 429 and a Retry-After. A second burst, against bob
// from burstSize different addresses, passes every counter: only the bound
// on concurrent hashes keeps the memory within the budget.
func TestAuthLoginBurst(t *testing.T) {
	begin(t)
	s := startAuthServerBin(t, plainBerth(t))
	pid := s.cmd.Process.Pid
	attacker, other := sourceClient(t, "127.0.0.1"), sourceClient(t, "127.0.0.2")
	time.Sleep(500 * time.Millisecond) // let the push of startAuthServer settle
	idle, peakBefore := procStatusBytes(t, pid, "VmRSS"), procStatusBytes(t, pid, "VmHWM")
	wrong := s.newSecret(t, "the wrong password of the burst", "wrong-burst-")
	tokenURL := "http://" + s.host + "/v2/auth?" + url.Values{"service": {s.service}, "scope": {"repository:alice/app:pull"}}.Encode()
	statuses := make([]int, burstSize)
	retryAfter := make([]string, burstSize)
	start := make(chan struct{})
	var wg sync.WaitGroup
	began := time.Now()
	for i := range burstSize {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := "http://" + s.host + "/v2/"
			if i%2 == 0 {
				u = tokenURL
			}
			<-start
			r := sourceDo(t, attacker, http.MethodGet, u, &authIdentity{user: s.alice.user, pass: wrong})
			statuses[i], retryAfter[i] = r.Status, r.Header.Get("Retry-After")
		}()
	}
	close(start)
	wg.Wait()
	took := time.Since(began)
	peak := procStatusBytes(t, pid, "VmHWM")
	count := map[int]int{}
	for _, st := range statuses {
		count[st]++
	}
	t.Logf("%d concurrent wrong-password logins in %s: statuses %v; server VmRSS idle %d MiB (VmHWM %d MiB), VmHWM after %d MiB (+%d MiB; budget +%d MiB)",
		burstSize, took.Round(time.Millisecond), count, idle>>20, peakBefore>>20, peak>>20, (peak-idle)>>20, burstMemoryBudget>>20)
	if peak-idle > burstMemoryBudget {
		t.Errorf("the server's peak resident memory grew by %d MiB under %d concurrent wrong-password logins (idle %d MiB, VmHWM %d MiB), over the budget of %d MiB",
			(peak-idle)>>20, burstSize, idle>>20, peak>>20, burstMemoryBudget>>20)
	}
	for i, st := range statuses {
		switch {
		case st == http.StatusTooManyRequests:
			if n, err := strconv.Atoi(retryAfter[i]); err != nil || n < 1 {
				t.Errorf("request %d of the burst: 429 with Retry-After %q, want a number of seconds", i, retryAfter[i])
			}
		case st != http.StatusUnauthorized:
			t.Errorf("request %d of the burst: HTTP %d, want 401 or 429", i, st)
		}
	}
	// At most the per-account-and-address limit was checked (and refused
	// with 401); everything beyond it is 429.
	if count[http.StatusUnauthorized] > 10 {
		t.Errorf("%d of the burst's wrong passwords were checked (401), want at most the limit of 10 per account and address",
			count[http.StatusUnauthorized])
	}

	// The legitimate user is not locked out: the right password works from
	// another address, on /v2/ and at the token endpoint.
	alice := &s.alice
	if r := sourceDo(t, other, http.MethodGet, "http://"+s.host+"/v2/", alice); r.Status != http.StatusOK {
		t.Errorf("GET /v2/ with alice's right password from 127.0.0.2 after the burst: %s, want 200", r)
	}
	if r := sourceDo(t, other, http.MethodGet, tokenURL, alice); r.Status != http.StatusOK {
		t.Errorf("GET /v2/auth with alice's right password from 127.0.0.2 after the burst: %s, want 200", r)
	}
	// Another account from the attacker's address is not affected either.
	if r := sourceDo(t, attacker, http.MethodGet, "http://"+s.host+"/v2/", &s.bob); r.Status != http.StatusOK {
		t.Errorf("GET /v2/ as bob from 127.0.0.1 after the burst against alice: %s, want 200", r)
	}
	// From the attacker's address alice is throttled, on every surface,
	// once the pair's limit is spent (under load some of the burst may
	// have been told "busy" before its hash ran: those do not count, so
	// spend what is left first).
	for range 10 {
		if r := sourceDo(t, attacker, http.MethodGet, "http://"+s.host+"/v2/", &authIdentity{user: s.alice.user, pass: wrong}); r.Status == http.StatusTooManyRequests {
			break
		}
	}
	for _, u := range []string{"http://" + s.host + "/v2/", tokenURL, "http://" + s.host + "/api/v1/user/"} {
		r := sourceDo(t, attacker, http.MethodGet, u, alice)
		if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
			t.Errorf("GET %s with alice's password from 127.0.0.1 after the burst: %s, Retry-After %q; want 429 with a Retry-After",
				u, r, r.Header.Get("Retry-After"))
		}
	}

	// The same burst against bob from as many addresses as requests: no
	// counter stops any of them, only the bound on concurrent hashes does
	// (the ones without a turn are told to retry).
	clients := make([]*http.Client, burstSize)
	for i := range clients {
		clients[i] = sourceClient(t, fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250))
	}
	start = make(chan struct{})
	began = time.Now()
	for i := range burstSize {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := "http://" + s.host + "/v2/"
			if i%2 == 0 {
				u = tokenURL
			}
			<-start
			r := sourceDo(t, clients[i], http.MethodGet, u, &authIdentity{user: s.bob.user, pass: wrong})
			statuses[i], retryAfter[i] = r.Status, r.Header.Get("Retry-After")
		}()
	}
	close(start)
	wg.Wait()
	took = time.Since(began)
	peak = procStatusBytes(t, pid, "VmHWM")
	clear(count)
	for i, st := range statuses {
		count[st]++
		if st != http.StatusUnauthorized && (st != http.StatusTooManyRequests || retryAfter[i] == "") {
			t.Errorf("request %d of the burst from %d addresses: HTTP %d, Retry-After %q; want 401, or 429 with a Retry-After", i, burstSize, st, retryAfter[i])
		}
	}
	t.Logf("%d concurrent wrong-password logins from as many addresses in %s: statuses %v; server VmHWM after %d MiB (+%d MiB over idle)",
		burstSize, took.Round(time.Millisecond), count, peak>>20, (peak-idle)>>20)
	if peak-idle > burstMemoryBudget {
		t.Errorf("the server's peak resident memory grew by %d MiB under %d concurrent wrong-password logins from as many addresses, over the budget of %d MiB",
			(peak-idle)>>20, burstSize, burstMemoryBudget>>20)
	}
	if r := sourceDo(t, other, http.MethodGet, "http://"+s.host+"/v2/", &s.bob); r.Status != http.StatusOK {
		t.Errorf("GET /v2/ with bob's right password from 127.0.0.2 after the bursts: %s, want 200", r)
	}
}

// sourceClient is an HTTP client whose connections leave from the local
// address ip (any of 127.0.0.0/8 works on Linux loopback), so that the
// server sees distinct client addresses.
func sourceClient(t *testing.T, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: burstSize, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

// sourceDo sends one request with the client, with Basic credentials when
// id is not nil. It may run on any goroutine: it reports with t.Errorf.
func sourceDo(t *testing.T, c *http.Client, method, u string, id *authIdentity) httpResult {
	req, err := http.NewRequestWithContext(context.Background(), method, u, nil)
	if err != nil {
		t.Errorf("%s %s: %v", method, u, err)
		return httpResult{Header: http.Header{}}
	}
	if id != nil {
		req.SetBasicAuth(id.user, id.pass)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, u, err)
		return httpResult{Header: http.Header{}}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("%s %s: reading body: %v", method, u, err)
	}
	return httpResult{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// procStatusBytes reads a "kB" field of /proc/PID/status (VmRSS, VmHWM) in
// bytes.
func procStatusBytes(t *testing.T, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("cannot read the server's memory figures: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			t.Fatalf("/proc/%d/status %s: %q: %v", pid, field, v, err)
		}
		return kb << 10
	}
	t.Fatalf("/proc/%d/status has no %s line", pid, field)
	return 0
}
