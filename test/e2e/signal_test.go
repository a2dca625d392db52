package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestSecondSignalStopsAtOnce: the first SIGTERM starts a graceful stop
// (the server keeps serving for http.shutdownDelay while /readyz answers
// 503); a second signal ends the process at once, where it used to be
// swallowed until the delay and the shutdown timeout ran out (here a
// minute and more).
func TestSecondSignalStopsAtOnce(t *testing.T) {
	begin(t)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(filepath.Join(runDir, "berth"), "serve", "--data-dir", t.TempDir(), "--addr", addr)
	cmd.Env = append(berthEnv(), "BERTH_HTTP_SHUTDOWN_DELAY=60s")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})
	ready := func() int {
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + addr + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := 0; ready() != 200; i++ {
		if i > 300 {
			t.Fatal("the server did not become ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	for i := 0; ready() != 503; i++ {
		if i > 100 {
			t.Fatal("/readyz did not answer 503 after SIGTERM (draining)")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second): // the drain alone lasts 60 s
		t.Fatal("a second SIGTERM did not end the process: it still drains")
	}
}
