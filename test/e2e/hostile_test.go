package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

var plainBuild struct {
	once sync.Once
	bin  string
	err  error
}

// plainBerth builds berth without the race detector, once: memory budgets
// are about what the product uses, and a race-built server spends several
// times more per goroutine and allocation, varying with the machine's load.
func plainBerth(t *testing.T) string {
	t.Helper()
	plainBuild.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			plainBuild.err = err
			return
		}
		dir := runDir
		if dir == "" { // TestMain did not set up (the suite is skipped): never the source tree
			if dir, err = os.MkdirTemp("", "berth-plain-"); err != nil {
				plainBuild.err = err
				return
			}
		}
		bin := filepath.Join(dir, "berth-plain")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/berth")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			plainBuild.err = fmt.Errorf("go build ./cmd/berth: %v\n%s", err, out)
			return
		}
		plainBuild.bin = bin
	})
	if plainBuild.err != nil {
		t.Fatal(plainBuild.err)
	}
	return plainBuild.bin
}

// newCrashServer starts a berth of its own (on a fresh data directory) that
// the test may kill, with extra environment.
func newCrashServer(t *testing.T, env ...string) *crashServer {
	t.Helper()
	return newCrashServerBin(t, filepath.Join(runDir, "berth"), env...)
}

func newCrashServerBin(t *testing.T, bin string, env ...string) *crashServer {
	t.Helper()
	begin(t)
	if os.Getenv("BERTH_E2E_REGISTRY") != "" {
		t.Skip("starts its own berth; skipped with BERTH_E2E_REGISTRY")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("berth binary: %v", err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	c := &crashServer{bin: bin, dataDir: t.TempDir(), host: fmt.Sprintf("127.0.0.1:%d", port),
		logPath: filepath.Join(t.TempDir(), "berth.log"), env: env}
	c.start(t)
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			c.kill()
		}
	})
	return c
}

// procStatus reads a field (in kB) of /proc/PID/status.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func startUpload(t *testing.T, host, repo string) string {
	t.Helper()
	resp, err := http.Post("http://"+host+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("start upload: %d", resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

// TestCrashDuringStreamingPatch kills the server while a PATCH is
// streaming, starts it again, and resumes the upload: the dead writer's
// claim must not lock the upload (it did for an hour), and the blob must
// come out whole.
func TestCrashDuringStreamingPatch(t *testing.T) {
	c := newCrashServer(t)
	content := make([]byte, 8<<20)
	rand.Read(content)
	want := digest.FromBytes(content)
	loc := startUpload(t, c.host, "crash/patch")

	// Stream the first 4 MiB and hold the request open.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPatch, "http://"+c.host+loc, pr)
	req.Header.Set("Content-Type", "application/octet-stream")
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	if _, err := pw.Write(content[:4<<20]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	c.kill()
	pw.CloseWithError(io.ErrUnexpectedEOF)
	<-errc
	restart := time.Now()
	c.start(t)

	// Resume from what the registry recorded, as a client would.
	var resumed time.Duration
	for {
		resp, err := http.Get("http://" + c.host + loc)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 204 {
			t.Fatalf("upload status after restart: %d", resp.StatusCode)
		}
		_, end, _ := strings.Cut(resp.Header.Get("Range"), "-")
		size, _ := strconv.ParseInt(end, 10, 64)
		if size > 0 {
			size++
		}
		req, _ := http.NewRequest(http.MethodPatch, "http://"+c.host+loc, bytes.NewReader(content[size:]))
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", size, len(content)-1))
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 202 {
			resumed = time.Since(restart)
			break
		}
		if resp.StatusCode != 409 || time.Since(restart) > 30*time.Second {
			t.Fatalf("resume after restart: %d %s (%.1fs after restart)", resp.StatusCode, body, time.Since(restart).Seconds())
		}
		time.Sleep(200 * time.Millisecond)
	}
	req, _ = http.NewRequest(http.MethodPut, "http://"+c.host+loc+"?digest="+want.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("finish resumed upload: %d", resp.StatusCode)
	}
	resp, err = http.Get("http://" + c.host + "/v2/crash/patch/blobs/" + want.String())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, content) {
		t.Fatalf("resumed blob: %d bytes, digest %s", len(got), digest.FromBytes(got))
	}
	t.Logf("upload resumed %.1fs after the restart", resumed.Seconds())
}

// slowClientBudgetMiB is how much the server's memory may grow under 200
// slow clients (measured: about 11 MiB for slow uploads, 16 MiB for slow
// headers; 200 MiB of upload buffers or of headers before they were
// bounded).
const slowClientBudgetMiB = 100

// TestSlowClients: 200 uploads that trickle a byte at a time and 200
// connections that send headers slowly are cut on time, and the server's
// memory stays bounded.
func TestSlowClients(t *testing.T) {
	c := newCrashServerBin(t, plainBerth(t), "BERTH_HTTP_BODY_IDLE_TIMEOUT=2s", "BERTH_HTTP_READ_HEADER_TIMEOUT=2s")
	pid := c.cmd.Process.Pid
	idle := procStatus(t, pid, "VmRSS")
	const n = 200

	// Slow bodies: one byte every 250 ms, far below 16 KiB per 2 s.
	var cut atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		loc := startUpload(t, c.host, fmt.Sprintf("slow/body%d", i%10))
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", c.host)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n", loc, c.host)
			answered := make(chan string, 1)
			go func() {
				line, _ := bufio.NewReader(conn).ReadString('\n')
				answered <- line
			}()
			for range 1000 {
				select {
				case line := <-answered:
					if !strings.Contains(line, "408") && line != "" {
						t.Errorf("slow body answered %q", line)
					}
					cut.Add(1)
					return
				case <-time.After(250 * time.Millisecond):
				}
				if _, err := conn.Write([]byte{'x'}); err != nil {
					cut.Add(1)
					return
				}
			}
		}()
	}
	wg.Wait()
	if took := time.Since(start); cut.Load() != n || took > 15*time.Second {
		t.Fatalf("%d of %d slow uploads cut, after %s", cut.Load(), n, took)
	}
	bodyPeak := procStatus(t, pid, "VmHWM")
	t.Logf("%d slow uploads cut within %s; server RSS idle %d MiB, peak %d MiB", n, time.Since(start).Round(100*time.Millisecond), idle>>10, bodyPeak>>10)
	if grew := (bodyPeak - idle) >> 10; grew > slowClientBudgetMiB {
		t.Fatalf("server memory grew by %d MiB under slow uploads (idle %d MiB, peak %d MiB)", grew, idle>>10, bodyPeak>>10)
	}
	// Reset the peak (VmHWM) for the next phase.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Fatal(err)
	}
	idle = procStatus(t, pid, "VmRSS")

	// Slow headers: each connection sends up to 1 MiB of header lines,
	// 16 KiB every 100 ms.
	start = time.Now()
	var closed atomic.Int64
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", c.host)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET /v2/ HTTP/1.1\r\nHost: %s\r\n", c.host)
			line := "X-Pad: " + strings.Repeat("a", 16<<10-10) + "\r\n"
			for range 64 {
				if _, err := conn.Write([]byte(line)); err != nil {
					closed.Add(1)
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			// Still open after 1 MiB: the server must end it (431 or close).
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.Copy(io.Discard, conn); err == nil {
				closed.Add(1)
			}
		}()
	}
	wg.Wait()
	peak := procStatus(t, pid, "VmHWM")
	t.Logf("slow headers: %d connections ended within %s; server RSS idle %d MiB, peak %d MiB",
		closed.Load(), time.Since(start).Round(100*time.Millisecond), idle>>10, peak>>10)
	if closed.Load() != n || time.Since(start) > 15*time.Second {
		t.Fatalf("%d of %d slow-header connections ended by the server, after %s", closed.Load(), n, time.Since(start))
	}
	if grew := (peak - idle) >> 10; grew > slowClientBudgetMiB {
		t.Fatalf("server memory grew by %d MiB under slow clients (idle %d MiB, peak %d MiB)", grew, idle>>10, peak>>10)
	}
	// The server still serves.
	resp, err := http.Get("http://" + c.host + "/v2/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("server after slow clients: %v %v", err, resp)
	}
	resp.Body.Close()
}
