package api

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// failingListener fails its first Accepts with the given errors.
type failingListener struct {
	net.Listener
	errs []error
}

func (l *failingListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	return l.Listener.Accept()
}

// TestAcceptRetriesTemporaryErrors: running out of file descriptors
// (EMFILE, ENFILE) does not end Serve, which
// fasthttp would do on any error but a timeout; a closed listener does.
func TestAcceptRetriesTemporaryErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	opErr := func(e syscall.Errno) error {
		return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", e)}
	}
	fl := &failingListener{Listener: ln, errs: []error{opErr(syscall.EMFILE), opErr(syscall.ENFILE), opErr(syscall.EMFILE)}}
	rl := retryListener{fl, slog.New(slog.NewTextHandler(io.Discard, nil))}
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	start := time.Now()
	c, err := rl.Accept()
	if err != nil {
		t.Fatalf("Accept gave up: %v", err)
	}
	c.Close()
	// Backoff 5, 10, 20 ms: the retries pause, briefly.
	if d := time.Since(start); d < 35*time.Millisecond || d > time.Second {
		t.Fatalf("three failed accepts took %v", d)
	}
	if len(fl.errs) != 0 {
		t.Fatalf("%d errors left", len(fl.errs))
	}

	// Without it, fasthttp stops serving at the first EMFILE.
	bare := &fasthttp.Server{Handler: func(*fasthttp.RequestCtx) {}, Logger: fasthttpLogger{slog.New(slog.NewTextHandler(io.Discard, nil))}}
	if err := bare.Serve(&failingListener{Listener: ln, errs: []error{opErr(syscall.EMFILE)}}); !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("fasthttp's Serve on EMFILE: %v", err)
	}

	fl.errs = []error{opErr(syscall.EINVAL)}
	if _, err := rl.Accept(); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("a permanent error: got %v", err)
	}
	ln.Close()
	if _, err := rl.Accept(); err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a closed listener: got %v", err)
	}
}

// tlsListener hands out server-side TLS connections over ln's.
type tlsListener struct{ net.Listener }

func (l tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(c, &tls.Config{}), nil
}

// TestConnLimitKeepsTLS: the connection-counting wrapper must not hide
// TLS from fasthttp (it looks for Handshake and ConnectionState): a
// hidden one made forwarded requests use http:// against an HTTPS
// leader.
func TestConnLimitKeepsTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := &connLimitListener{Listener: tlsListener{ln}, max: 1, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	go func() {
		for range 2 {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return
			}
			defer c.Close()
		}
		time.Sleep(time.Second)
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(tlsConn); !ok {
		t.Fatalf("accepted %T: TLS hidden", c)
	}
	// The second connection is over the limit: refused without writing
	// (a TLS answer would need a handshake the client may never do), so
	// Accept goes on at once.
	done := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after a refused TLS connection: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Accept stuck on a refused TLS connection")
	}
}
