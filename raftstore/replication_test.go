package raftstore_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

// TestFollowerCatchesUpAfterFailedAppend is the regression test for what
// the 30-minute chaos run found: a follower's disk filled under load, so
// its log store refused an append (Success=false); it was restarted with
// space back and never became ready. hashicorp/raft's pipeline replication
// had parked for good (hashicorp/raft#612): heartbeats kept flowing, so
// the follower never stood for election, but no entry reached it again.
// holdfast does not pipeline (noFastPath); the follower must catch up.
func TestFollowerCatchesUpAfterFailedAppend(t *testing.T) {
	dir := t.TempDir()
	ids := []string{"n1", "n2", "n3"}
	var peers []raftstore.Peer
	for _, id := range ids {
		peers = append(peers, raftstore.Peer{ID: id, Addr: freeAddr(t)})
	}
	open := func(i int) *raftstore.Node {
		n, err := raftstore.Open(raftstore.Config{
			ID: ids[i], DataDir: filepath.Join(dir, ids[i]), RaftAddr: peers[i].Addr, APIAddr: "127.0.0.1:1",
			Peers: peers, MaxBatchCmds: 2,
			HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
			LeaderLeaseTimeout: 250 * time.Millisecond,
			DebugDiskFullFile:  filepath.Join(dir, ids[i]+"-full"),
			Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLog: io.Discard,
		}, engine.New(engine.Config{}))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	nodes := make([]*raftstore.Node, len(ids))
	for i := range ids {
		nodes[i] = open(i)
	}
	defer func() {
		if t.Failed() {
			return // a parked pipeline also blocks raft's Shutdown forever
		}
		for _, n := range nodes {
			n.Close()
		}
	}()
	leader := func() int {
		for i, n := range nodes {
			if n.IsLeader() {
				return i
			}
		}
		return -1
	}
	l := -1
	for deadline := time.Now().Add(10 * time.Second); l < 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		l = leader()
	}
	f := (l + 1) % len(nodes)

	// Many writers and two commands per entry, so the leader has appends
	// in flight to f when f's disk fills: that is when the pipeline parked.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Go(func() {
			for k := 0; ctx.Err() == nil; k++ {
				c := allocator.Command{Kind: allocator.KindPutPool, Pool: fmt.Sprintf("p%d-%d", w, k%50), Config: allocator.PoolConfig{OnHand: int64(k)}}
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := nodes[l].Propose(pctx, c.AppendEncode(nil))
				cancel()
				if err != nil {
					time.Sleep(5 * time.Millisecond) // e.g. not leader any more: do not spin
				}
			}
		})
	}
	defer func() { stop(); wg.Wait() }() // runs before the nodes close
	time.Sleep(500 * time.Millisecond)
	// The stall needs the rejection to meet appends in flight (small
	// batches and many writers put several in flight), a race: four
	// rounds make it likely. With pipelining back on, the test failed at
	// round 1 or 2.
	for round := range 4 {
		full := filepath.Join(dir, ids[f]+"-full")
		if err := os.WriteFile(full, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); nodes[f].Err() == nil; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				// After round 0 this is the stall itself: no append
				// reaches f any more, so nothing is written to fail.
				t.Fatalf("round %d: no append reached follower %s in 10 s (applied %d, leader committed %d): replication to it stopped",
					round, ids[f], nodes[f].Status().AppliedIndex, nodes[l].Status().CommitIndex)
			}
		}
		time.Sleep(300 * time.Millisecond) // the leader keeps sending; f keeps refusing
		os.Remove(full)
		nodes[f].Close()
		nodes[f] = open(f)
		if round < 3 {
			time.Sleep(time.Second)
		}
	}

	// Space is back and f restarted: it must catch up with the leader
	// while the writes go on, then again once they stop. (A change of
	// leader would also heal a parked pipeline; on an idle machine there
	// is none, and the check holds either way.)
	// The target is taken once: a follower learns the commit index a
	// round late, so under steady writes it is never equal to the
	// leader's latest, but it must pass any index the leader had.
	caughtUp := func(within time.Duration) bool {
		cur := leader()
		if cur < 0 {
			cur = l
		}
		target := nodes[cur].Status().CommitIndex
		for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if nodes[f].Status().AppliedIndex >= target {
				return true
			}
		}
		return false
	}
	ok := caughtUp(20 * time.Second)
	stop()
	wg.Wait()
	if !ok || !caughtUp(10*time.Second) {
		t.Fatalf("follower %s stuck at applied index %d, leader %s committed %d: replication to it stopped",
			ids[f], nodes[f].Status().AppliedIndex, ids[l], nodes[l].Status().CommitIndex)
	}
	if cur := leader(); cur != l {
		t.Logf("leadership moved from %s during the test (now: %d)", ids[l], cur)
	}
}
