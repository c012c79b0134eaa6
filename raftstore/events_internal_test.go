package raftstore

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRepeatLimiter(t *testing.T) {
	var r repeatLimiter
	t0 := time.Unix(1000, 0)
	if ok, n := r.allow("a", t0); !ok || n != 0 {
		t.Fatalf("first: %v %d", ok, n)
	}
	for i := range 3 {
		if ok, _ := r.allow("a", t0.Add(time.Duration(i+1)*time.Second)); ok {
			t.Fatal("a repeat within repeatEvery was let through")
		}
	}
	if ok, _ := r.allow("b", t0.Add(time.Second)); !ok {
		t.Fatal("another message was held back")
	}
	if ok, n := r.allow("a", t0.Add(repeatEvery)); !ok || n != 3 {
		t.Fatalf("after repeatEvery: %v, %d held back, want 3", ok, n)
	}
	for i := range maxRepeatKeys + 10 { // bounded
		r.allow(strings.Repeat("x", i+1), t0)
	}
	if len(r.seen) > maxRepeatKeys {
		t.Fatalf("%d keys tracked", len(r.seen))
	}
}

// TestRaftAndPebbleLogs: raft's warnings and Pebble's errors become slog
// records tagged with their component, repeats held back; their chatter
// (raft's info, Pebble's flushes) stays out of the info level.
func TestRaftAndPebbleLogs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))

	h := raftLogger(nil, log)
	h.Info("entering follower state", "follower", "x")
	h.Warn("failed to contact", "server-id", "n2", "time", time.Second)
	h.Warn("failed to contact", "server-id", "n2", "time", 2*time.Second)
	h.Error("failed to appendEntries to", "peer", "n3")

	p := newPebbleLogger(log)
	p.Infof("[JOB %d] flushed", 7)
	p.Errorf("pebble: background error: %v", "disk full")
	p.Errorf("pebble: background error: %v", "disk full")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		`level=WARN msg="failed to contact" component=raft server-id=n2 time=1s`,
		`level=ERROR msg="failed to appendEntries to" component=raft peer=n3`,
		`level=ERROR msg="pebble: background error: disk full" component=pebble`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, w := range want {
		if !strings.HasSuffix(lines[i], w) {
			t.Fatalf("line %d = %q, want it to end with %q", i, lines[i], w)
		}
	}

	var out bytes.Buffer
	h = raftLogger(&out, log) // tests pass io.Discard: hclog text there
	h.Warn("x")
	if !strings.Contains(out.String(), "[WARN]  raft: x") {
		t.Fatalf("RaftLog output %q", out.String())
	}
}
