package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeReadyAndSIGTERM: the contract's readiness line is printed even
// at log level warn, the node answers /v1/health, SIGUSR1 writes a
// goroutine dump to the log and changes nothing else, and SIGTERM shuts it
// down cleanly (exit code 0).
func TestServeReadyAndSIGTERM(t *testing.T) {
	httpAddr := freeAddr(t)
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- run([]string{"serve", "--data", t.TempDir(), "--http", httpAddr, "--raft", freeAddr(t), "--log-level", "warn"}, io.Discard, pw)
		pw.Close()
	}()
	ready := make(chan bool, 1)
	dumped := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		found := false
		for sc.Scan() {
			if !found && strings.Contains(sc.Text(), "ready") {
				found = true
				ready <- true
			}
			if strings.HasPrefix(sc.Text(), "goroutine ") && strings.Contains(sc.Text(), "[") {
				select {
				case dumped <- struct{}{}:
				default:
				}
			}
		}
		if !found {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("serve exited without printing a ready line")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no ready line within 20 s")
	}
	resp, err := http.Get("http://" + httpAddr + "/v1/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Holdfast-Node") != "n1" {
		t.Fatalf("health: %d, node %q", resp.StatusCode, resp.Header.Get("X-Holdfast-Node"))
	}
	// SIGUSR1: a goroutine dump in the log, and the node keeps serving.
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-dumped:
	case <-time.After(10 * time.Second):
		t.Fatal("no goroutine dump in the log after SIGUSR1")
	}
	if resp, err := http.Get("http://" + httpAddr + "/v1/health"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("health after SIGUSR1: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit code %d after SIGTERM", c)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
}

func TestVersionAndUsage(t *testing.T) {
	var out strings.Builder
	if c := run([]string{"version"}, &out, io.Discard); c != 0 || !strings.HasPrefix(out.String(), "holdfast ") {
		t.Fatalf("version: %d %q", c, out.String())
	}
	if c := run([]string{"bogus"}, io.Discard, io.Discard); c != 2 {
		t.Fatalf("unknown command exit %d, want 2", c)
	}
	if c := run([]string{"serve", "--peers", "n2=127.0.0.1:1"}, io.Discard, io.Discard); c != 2 {
		t.Fatalf("--peers without this node: exit %d, want 2", c)
	}
}
