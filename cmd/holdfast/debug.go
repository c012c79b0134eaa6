package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"sync/atomic"
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
// Shutdown can park forever (a replication pipeline blocked on a peer that
// stopped reading, hashicorp/raft#612): the process must still exit on
// SIGTERM. Exiting with the store open loses nothing acknowledged: every
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
