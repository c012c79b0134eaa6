package raftstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

// logCapture keeps a node's log records (info and above, as the default
// --log-level does) as decoded JSON objects.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *logCapture) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(c, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// records returns every record so far.
func (c *logCapture) records(t *testing.T) []map[string]any {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(c.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		out = append(out, r)
	}
	return out
}

// count is how many records from index from on have this level and msg
// ("" matches any msg).
func count(recs []map[string]any, from int, level, msg string) int {
	k := 0
	for _, r := range recs[min(from, len(recs)):] {
		if r["level"] == level && (msg == "" || r["msg"] == msg) {
			k++
		}
	}
	return k
}

func describe(recs []map[string]any, from int) string {
	var b strings.Builder
	for _, r := range recs[min(from, len(recs)):] {
		fmt.Fprintf(&b, "\n  %v %v %v", r["level"], r["msg"], r)
	}
	return b.String()
}

// waitLog waits until c holds a record of level and msg after index from.
func waitLog(t *testing.T, c *logCapture, from int, level, msg string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for count(c.records(t), from, level, msg) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no %s %q line within %v; lines:%s", level, msg, timeout, describe(c.records(t), from))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type loggedNode struct {
	id, dir, raftAddr string
	log               *logCapture
	node              *raftstore.Node
}

func (n *loggedNode) open(t *testing.T, peers []raftstore.Peer) {
	t.Helper()
	n.log = &logCapture{}
	var err error
	n.node, err = raftstore.Open(raftstore.Config{
		// Default timeouts: an election flapping on a busy machine would
		// (rightly) log more lines than these tests expect.
		ID: n.id, DataDir: n.dir, RaftAddr: n.raftAddr, APIAddr: "127.0.0.1:1", Peers: peers,
		Logger: n.log.logger(), // RaftLog nil: raft's own lines go here too
	}, engine.New(engine.Config{}))
	if err != nil {
		t.Fatal(err)
	}
}

// openLoggedCluster opens three logged nodes as one cluster; the test's
// cleanup closes whichever of them is open then.
func openLoggedCluster(t *testing.T) ([]*loggedNode, []raftstore.Peer) {
	t.Helper()
	nodes := make([]*loggedNode, 3)
	var peers []raftstore.Peer
	for i := range nodes {
		nodes[i] = &loggedNode{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), raftAddr: freeAddr(t)}
		peers = append(peers, raftstore.Peer{ID: nodes[i].id, Addr: nodes[i].raftAddr})
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if n.node != nil {
				n.node.Close()
			}
		}
	})
	for _, n := range nodes {
		n.open(t, peers)
	}
	return nodes, peers
}

// TestLogsOneLinePerEvent: at the default level a node logs one line when
// it learns of a leader, when a snapshot is taken, when one is restored,
// and nothing for ordinary writes.
func TestLogsOneLinePerEvent(t *testing.T) {
	nodes, peers := openLoggedCluster(t)

	// Start: each node logs the members it found and the leader, once.
	for _, n := range nodes {
		waitLog(t, n.log, 0, "INFO", "leader elected", 10*time.Second)
	}
	time.Sleep(600 * time.Millisecond) // two watcher checks: nothing more may come
	var leader *loggedNode
	for _, n := range nodes {
		recs := n.log.records(t)
		if count(recs, 0, "INFO", "leader elected") != 1 || count(recs, 0, "INFO", "cluster members") != 1 {
			t.Fatalf("%s at start:%s", n.id, describe(recs, 0))
		}
		if n.node.IsLeader() {
			leader = n
		}
	}
	if leader == nil {
		t.Fatal("no leader")
	}

	// Ordinary writes: nothing at info. (Raft may warn on a busy machine.)
	marks := map[string]int{}
	for _, n := range nodes {
		marks[n.id] = len(n.log.records(t))
	}
	propose(t, leader.node, allocator.Command{Kind: allocator.KindPutPool, Pool: "p", Config: allocator.DefaultPoolConfig(1000)})
	for i := range 50 {
		propose(t, leader.node, allocator.Command{Kind: allocator.KindReserve, Buyer: fmt.Sprintf("b%d", i), Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}})
	}

	// A snapshot: one line on the node that took it.
	if err := leader.node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	waitLog(t, leader.log, marks[leader.id], "INFO", "snapshot taken", 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	for _, n := range nodes {
		recs := n.log.records(t)
		want := 0
		if n == leader {
			want = 1
		}
		if count(recs, marks[n.id], "INFO", "") != want || count(recs, marks[n.id], "INFO", "snapshot taken") != want {
			t.Fatalf("%s after 51 writes and a snapshot on %s, want %d line(s):%s", n.id, leader.id, want, describe(recs, marks[n.id]))
		}
		marks[n.id] = len(recs)
	}

	// Membership changes: one line each on every node that did not make
	// them (the leader also logs the operation itself: see AddMember).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n4 := freeAddr(t)
	change := func(what string, do func() error, want string) {
		t.Helper()
		if err := do(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for _, n := range nodes {
			if n == leader {
				continue
			}
			waitLog(t, n.log, marks[n.id], "INFO", "membership changed", 5*time.Second)
			time.Sleep(300 * time.Millisecond)
			recs := n.log.records(t)
			var got []string
			for _, r := range recs[marks[n.id]:] {
				if r["level"] == "INFO" {
					got = append(got, fmt.Sprintf("%v added=%v removed=%v", r["msg"], r["added"], r["removed"]))
				}
			}
			if len(got) != 1 || got[0] != want {
				t.Fatalf("%s, %s: info lines %q, want [%q]", what, n.id, got, want)
			}
			marks[n.id] = len(recs)
		}
	}
	change("add n4", func() error { return leader.node.AddMember(ctx, "n4", n4, "", false) },
		"membership changed added=n4="+n4+"(nonvoter) removed=<nil>")
	change("remove n4", func() error { return leader.node.RemoveMember(ctx, "n4") },
		"membership changed added=<nil> removed=n4="+n4+"(nonvoter)")
	marks[leader.id] = len(leader.log.records(t))

	// A leadership change (the leader stops): each survivor logs the new
	// leader once, at info.
	old := leader
	old.node.Close()
	old.node = nil
	var survivors []*loggedNode
	for _, n := range nodes {
		if n != old {
			survivors = append(survivors, n)
			waitLog(t, n.log, marks[n.id], "INFO", "leader elected", 10*time.Second)
		}
	}
	time.Sleep(600 * time.Millisecond)
	for _, n := range survivors {
		recs := n.log.records(t)
		if count(recs, marks[n.id], "INFO", "") != 1 {
			t.Fatalf("%s: want exactly one info line for the leadership change:%s", n.id, describe(recs, marks[n.id]))
		}
		for _, r := range recs[marks[n.id]:] {
			if r["level"] == "INFO" && (r["previous"] != old.id || r["leader"] == old.id) {
				t.Fatalf("%s: leader line %v, want previous=%s and a new leader", n.id, r, old.id)
			}
		}
	}

	// The old leader's data directory opened again: its snapshot is
	// restored, once. (On a fresh Raft address: another test may have
	// taken the old port since.)
	old.raftAddr = freeAddr(t)
	old.open(t, peers)
	time.Sleep(300 * time.Millisecond) // raft restores during Open; let the watcher settle
	recs := old.log.records(t)
	if count(recs, 0, "INFO", "snapshot restored") != 1 {
		t.Fatalf("%s after restart, want one snapshot restored line:%s", old.id, describe(recs, 0))
	}
}

// backlogSM is a state machine whose earliest deadline the test sets.
type backlogSM struct {
	clockMs atomic.Int64
	dueMs   atomic.Int64 // 0: nothing pending
}

func (s *backlogSM) Apply(nowMs int64, cmds [][]byte) []any {
	s.clockMs.Store(nowMs)
	return make([]any, len(cmds))
}
func (s *backlogSM) Snapshot() (raftstore.Snapshot, error) { return emptySnapshot{}, nil }
func (s *backlogSM) Restore(r io.Reader) error             { _, err := io.Copy(io.Discard, r); return err }
func (s *backlogSM) ClockMs() int64                        { return s.clockMs.Load() }
func (s *backlogSM) NextDeadlineMs() (int64, bool) {
	d := s.dueMs.Load()
	return d, d != 0
}

type emptySnapshot struct{}

func (emptySnapshot) Persist(io.Writer) error { return nil }
func (emptySnapshot) Release()                {}

// TestLogsExpiryBacklog: a deadline that stays overdue is reported once,
// and once more when the backlog clears.
func TestLogsExpiryBacklog(t *testing.T) {
	c := &logCapture{}
	sm := &backlogSM{}
	n, err := raftstore.Open(raftstore.Config{
		ID: "n1", DataDir: t.TempDir(), RaftAddr: freeAddr(t), APIAddr: "127.0.0.1:1",
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, Logger: c.logger(), RaftLog: io.Discard,
	}, sm)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	waitLog(t, c, 0, "INFO", "leader elected", 10*time.Second)
	mark := len(c.records(t))

	// A deadline 5 s overdue that ticks do not clear (as when applying
	// falls behind).
	sm.dueMs.Store(time.Now().Add(-5 * time.Second).UnixMilli())
	waitLog(t, c, mark, "WARN", "expiry backlog", 5*time.Second)
	time.Sleep(600 * time.Millisecond)
	sm.dueMs.Store(0)
	waitLog(t, c, mark, "INFO", "expiry backlog cleared", 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	recs := c.records(t)
	if count(recs, mark, "WARN", "expiry backlog") != 1 || count(recs, mark, "INFO", "") != 1 || count(recs, mark, "INFO", "expiry backlog cleared") != 1 {
		t.Fatalf("want one backlog line and one cleared line:%s", describe(recs, mark))
	}
}

// TestLogsOneLinePerOperation: a leadership transfer and a membership
// change each log one info line per node (the events watcher's), not one
// more from the operation on the node that ran it.
func TestLogsOneLinePerOperation(t *testing.T) {
	nodes, _ := openLoggedCluster(t)
	for _, n := range nodes {
		waitLog(t, n.log, 0, "INFO", "leader elected", 10*time.Second)
	}
	time.Sleep(600 * time.Millisecond)
	var leader *loggedNode
	for _, n := range nodes {
		if n.node.IsLeader() {
			leader = n
		}
	}
	mark := len(leader.log.records(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := leader.node.TransferLeadership(ctx, ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond)
	if recs := leader.log.records(t); count(recs, mark, "INFO", "") != 1 {
		t.Errorf("old leader %s, after a transfer:%s", leader.id, describe(recs, mark))
	}
	for _, n := range nodes {
		if n.node.IsLeader() {
			leader = n
		}
	}
	mark = len(leader.log.records(t))
	if err := leader.node.AddMember(ctx, "n4", freeAddr(t), "", false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond)
	if recs := leader.log.records(t); count(recs, mark, "INFO", "") != 1 {
		t.Errorf("leader %s, after adding a member:%s", leader.id, describe(recs, mark))
	}
}
