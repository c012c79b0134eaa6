package raftstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

// openMember opens a node for the membership tests: small snapshot
// threshold and trailing log, so that a joining node must install a
// snapshot; no idle ticks, so states can be compared byte for byte.
func openMember(t *testing.T, id, raftAddr string, noBootstrap bool, logTo io.Writer) (*raftstore.Node, *engine.Machine) {
	t.Helper()
	if logTo == nil {
		logTo = io.Discard
	}
	m := engine.New(engine.Config{})
	n, err := raftstore.Open(raftstore.Config{
		ID: id, DataDir: t.TempDir(), RaftAddr: raftAddr, APIAddr: "api-" + id, NoBootstrap: noBootstrap,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, FreshnessMs: int64(time.Hour / time.Millisecond),
		SnapshotThreshold: 64, TrailingLogs: 16,
		Logger: slog.New(slog.NewTextHandler(logTo, nil)), RaftLog: io.Discard,
	}, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n, m
}

// TestJoinThroughSnapshot: a node that starts without bootstrapping is
// added as a non-voter to a cluster whose log was compacted, catches up by
// installing a snapshot (WaitApplied), is promoted, and then counts for
// the quorum: with the original node's partner gone, it keeps the cluster
// writable. Removing and transferring behave as documented.
func TestJoinThroughSnapshot(t *testing.T) {
	ctx := context.Background()
	n1, m1 := openMember(t, "n1", freeAddr(t), false, nil)
	for deadline := time.Now().Add(10 * time.Second); !n1.IsLeader(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("n1 does not lead")
		}
	}
	propose(t, n1, allocator.Command{Kind: allocator.KindPutPool, Pool: "p", Config: allocator.DefaultPoolConfig(100000)})
	for i := range 300 {
		propose(t, n1, allocator.Command{Kind: allocator.KindReserve, Buyer: fmt.Sprintf("b%d", i), Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}})
	}
	if err := n1.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if first := n1.Status().LastIndex; first < 300 {
		t.Fatalf("last index %d", first)
	}

	raft2 := freeAddr(t)
	var log2 lockedBuffer
	n2, m2 := openMember(t, "n2", raft2, true, &log2)
	if ms, _ := n2.Members(); len(ms) != 0 {
		t.Fatalf("a NoBootstrap node has members %v", ms)
	}
	if err := n2.AddMember(ctx, "x", "127.0.0.1:1", "", true); !errors.Is(err, raftstore.ErrNotLeader) {
		t.Fatalf("AddMember on a non-leader: %v", err)
	}
	st := func() raftstore.Status { return n1.Status() }
	if err := n1.AddMember(ctx, "n2", raft2, "api-n2", false); err != nil {
		t.Fatal(err)
	}
	commit := st().CommitIndex
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := n2.WaitApplied(wctx, commit); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log2.String(), "snapshot restored") {
		t.Fatalf("n2 caught up without a snapshot:\n%s", log2.String())
	}
	if err := n1.AddMember(ctx, "n2", raft2, "api-n2", true); err != nil {
		t.Fatal(err)
	}
	// Adding again changes nothing.
	before := st().LastIndex
	if err := n1.AddMember(ctx, "n2", raft2, "api-n2", true); err != nil || st().LastIndex != before {
		t.Fatalf("second AddMember: %v, last index %d -> %d", err, before, st().LastIndex)
	}
	if err := n1.AddMember(ctx, "n3", raft2, "", true); !errors.Is(err, raftstore.ErrMemberConflict) {
		t.Fatalf("a second id on n2's address: %v", err)
	}
	ms, err := n1.Members()
	if err != nil || len(ms) != 2 || ms[1].ID != "n2" || ms[1].Suffrage != "Voter" || ms[1].APIAddr != "api-n2" {
		t.Fatalf("members %+v %v", ms, err)
	}
	// n2 got the state through a snapshot: same allocator state.
	r := propose(t, n1, allocator.Command{Kind: allocator.KindReserve, Buyer: "after-join", Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for m2.Alloc.StateHash() != m1.Alloc.StateHash() {
		if time.Now().After(deadline) {
			t.Fatal("the joined node did not converge")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Leadership moves to n2 and back to whoever; n1 can then be removed
	// from n2, leaving n2 alone and still writable.
	lid, err := n1.TransferLeadership(ctx, "n2")
	if err != nil || lid != "n2" {
		t.Fatalf("transfer: %q %v", lid, err)
	}
	if _, err := n1.TransferLeadership(ctx, ""); !errors.Is(err, raftstore.ErrNotLeader) {
		t.Fatalf("transfer from a follower: %v", err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for !n2.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("n2 does not lead")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := n2.RemoveMember(ctx, "nope"); !errors.Is(err, raftstore.ErrNoSuchMember) {
		t.Fatalf("remove unknown: %v", err)
	}
	if err := n2.RemoveMember(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := n2.RemoveMember(ctx, "n2"); !errors.Is(err, raftstore.ErrMemberConflict) {
		t.Fatalf("remove the last voter: %v", err)
	}
	if _, err := n2.TransferLeadership(ctx, ""); !errors.Is(err, raftstore.ErrMemberConflict) {
		t.Fatalf("transfer with no other voter: %v", err)
	}
	if err := n2.StepDown(ctx); err != nil {
		t.Fatalf("StepDown alone: %v", err)
	}
	n1.Close()
	propose(t, n2, allocator.Command{Kind: allocator.KindReserve, Buyer: "alone", Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}})
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
