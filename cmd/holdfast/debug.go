package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// clockFilePollInterval is how often --debug-clock-file is re-read.
const clockFilePollInterval = 20 * time.Millisecond

// watchClockFile serves --debug-clock-file (fault tests only): the file
// holds a Go duration ("-5m", "90s"; missing or empty means 0) that is
// added to this node's wall clock, re-read every clockFilePollInterval
// until ctx ends, so a test can step a running node's clock back and
// forth. The returned function reads the current offset.
func watchClockFile(ctx context.Context, path string, log *slog.Logger) func() time.Duration {
	var offsetNs atomic.Int64
	read := func() {
		b, err := os.ReadFile(path)
		if err != nil {
			offsetNs.Store(0)
			return
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			offsetNs.Store(0)
			return
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			log.Warn("bad --debug-clock-file content; keeping the previous offset", "path", path, "err", err)
			return
		}
		if old := offsetNs.Swap(int64(d)); old != int64(d) {
			log.Info("debug clock offset", "offset", d)
		}
	}
	read()
	go func() {
		t := time.NewTicker(clockFilePollInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				read()
			}
		}
	}()
	return func() time.Duration { return time.Duration(offsetNs.Load()) }
}

// closeWithin runs closeFn and waits at most limit for it. hashicorp/raft's
// Shutdown waits for its goroutines, and one in an RPC to a peer that
// stopped answering waits out the transport's I/O timeout (raftstore closes
// the connections, but this is the safety net for any other hang of that
// kind): the process must still exit on SIGTERM. Exiting with the store open loses nothing acknowledged: every
// acknowledged write was fsynced, as after SIGKILL.
//
// When the limit passes, every goroutine's stack is written to stacks, so
// the log shows where the shutdown was stuck.
func closeWithin(limit time.Duration, closeFn func() error, stacks io.Writer) (finished bool, err error) {
	done := make(chan error, 1)
	go func() { done <- closeFn() }()
	select {
	case err := <-done:
		return true, err
	case <-time.After(limit):
		if stacks != nil {
			_ = pprof.Lookup("goroutine").WriteTo(stacks, 1)
		}
		return false, nil
	}
}

// dumpStacksOnSIGUSR1 writes every goroutine's stack to w (the node's log)
// each time the process gets SIGUSR1, and keeps running: an operator, or
// the chaos suite, can see where a node that will not become ready or
// will not catch up is waiting, without killing it as SIGQUIT would. The
// returned function stops it.
func dumpStacksOnSIGUSR1(w io.Writer, log *slog.Logger) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-ch:
				log.Warn("goroutine dump (SIGUSR1) follows")
				_ = pprof.Lookup("goroutine").WriteTo(w, 2)
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}
