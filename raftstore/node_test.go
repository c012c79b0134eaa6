package raftstore_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
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

// single opens a one-node group on dir and waits until it leads.
func single(t *testing.T, dir, raftAddr string) (*raftstore.Node, *engine.Machine) {
	t.Helper()
	m := engine.New(engine.Config{})
	n, err := raftstore.Open(raftstore.Config{
		ID: "n1", DataDir: dir, RaftAddr: raftAddr, APIAddr: "127.0.0.1:1",
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLog: io.Discard,
	}, m)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, ok := n.Leader(); ok && n.IsLeader() {
			return n, m
		}
		if time.Now().After(deadline) {
			t.Fatal("single node did not become leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func propose(t *testing.T, n *raftstore.Node, c allocator.Command) allocator.Result {
	t.Helper()
	res, err := n.Propose(context.Background(), c.AppendEncode(nil))
	if err != nil {
		t.Fatalf("propose %v: %v", c.Kind, err)
	}
	return res.(allocator.Result)
}

// TestIdleTickExpiresHolds: with no traffic at all, the leader's ticks
// expire a hold soon after its expires_at, never before.
func TestIdleTickExpiresHolds(t *testing.T) {
	n, m := single(t, t.TempDir(), freeAddr(t))
	defer n.Close()
	propose(t, n, allocator.Command{Kind: allocator.KindPutPool, Pool: "p", Config: allocator.DefaultPoolConfig(10)})
	var worst time.Duration
	for range 5 {
		r := propose(t, n, allocator.Command{Kind: allocator.KindReserve, Buyer: "b", TTLMs: 120, Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}})
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		expiresAt := time.UnixMilli(r.Reservation.ExpiresAtMs)
		for {
			p, _ := m.Alloc.Pool("p")
			if p.Held == 0 {
				break
			}
			if time.Since(expiresAt) > 2*time.Second {
				t.Fatal("hold not expired 2 s after expires_at without traffic")
			}
			time.Sleep(time.Millisecond)
		}
		// The node's stamps are wall time at start plus monotonic time,
		// so comparing with the local wall clock is fair here.
		lag := time.Since(expiresAt)
		if lag < -5*time.Millisecond {
			t.Fatalf("hold expired %v before expires_at", -lag)
		}
		worst = max(worst, lag)
		v, _ := m.Alloc.Reservation(r.Reservation.ID)
		if v.State != allocator.StateExpired {
			t.Fatalf("state %v, want expired", v.State)
		}
	}
	t.Logf("worst expiry lag without traffic: %v", worst)
}

// TestSnapshotAndRestart: state survives a snapshot, more writes after it,
// and a restart from the data directory, byte for byte.
func TestSnapshotAndRestart(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n, m := single(t, dir, addr)
	propose(t, n, allocator.Command{Kind: allocator.KindPutPool, Pool: "p", Config: allocator.DefaultPoolConfig(1000)})
	for i := range 50 {
		r := propose(t, n, allocator.Command{Kind: allocator.KindReserve, Buyer: fmt.Sprintf("b%d", i), Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}})
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if i%2 == 0 {
			propose(t, n, allocator.Command{Kind: allocator.KindConfirm, Reservation: r.Reservation.ID})
		}
		if i == 25 {
			if err := n.Snapshot(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := n.ReadBarrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := m.Alloc.Snapshot()
	n.Close()

	n2, m2 := single(t, dir, addr)
	defer n2.Close()
	if err := n2.ReadBarrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := m2.Alloc.Snapshot()
	// Ticks may have moved the clock and reclaimed nothing else: compare
	// the pool, which holds every unit that was acknowledged.
	p1, p2 := poolOf(t, before), poolOf(t, m2.Alloc)
	if p1.Held != p2.Held || p1.Sold != p2.Sold || p1.Sold != 25 || p1.Held != 25 {
		t.Fatalf("pool before restart held %d sold %d, after held %d sold %d", p1.Held, p1.Sold, p2.Held, p2.Sold)
	}
	if len(after) == 0 {
		t.Fatal("empty state after restart")
	}
}

func poolOf(t *testing.T, src any) *allocator.PoolView {
	t.Helper()
	var m *allocator.Machine
	switch v := src.(type) {
	case []byte:
		m = allocator.New(allocator.Config{})
		if err := m.Restore(bytes.NewReader(v)); err != nil {
			t.Fatal(err)
		}
	case *allocator.Machine:
		m = v
	}
	p, err := m.Pool("p")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestProposeAfterClose fails cleanly rather than hanging.
func TestProposeAfterClose(t *testing.T) {
	n, _ := single(t, t.TempDir(), freeAddr(t))
	n.Close()
	c := allocator.Command{Kind: allocator.KindTick}
	if _, err := n.Propose(context.Background(), c.AppendEncode(nil)); err == nil {
		t.Fatal("propose after close succeeded")
	}
	if err := n.ReadBarrier(context.Background()); err == nil {
		t.Fatal("read barrier after close succeeded")
	}
}

// TestNowMsMonotonicAndOffset: stamps never go back and honour the offset.
func TestNowMsMonotonicAndOffset(t *testing.T) {
	m := engine.New(engine.Config{})
	n, err := raftstore.Open(raftstore.Config{
		ID: "n1", DataDir: t.TempDir(), RaftAddr: freeAddr(t), ClockOffset: time.Hour,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLog: io.Discard,
	}, m)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	last := n.NowMs()
	if d := last - time.Now().UnixMilli(); d < 59*60*1000 || d > 61*60*1000 {
		t.Fatalf("offset clock is %d ms ahead, want about 1 h", d)
	}
	for range 10000 {
		now := n.NowMs()
		if now < last {
			t.Fatalf("NowMs went back: %d -> %d", last, now)
		}
		last = now
	}
}

// countingSM records the largest entry it was given.
type countingSM struct {
	*engine.Machine
	mu      sync.Mutex
	maxCmds int
}

func (c *countingSM) Apply(nowMs int64, cmds [][]byte) []any {
	c.mu.Lock()
	c.maxCmds = max(c.maxCmds, len(cmds))
	c.mu.Unlock()
	return c.Machine.Apply(nowMs, cmds)
}

// TestGroupCommitBoundsEntries: however many proposals queue up, one log
// entry carries at most MaxBatchCmds commands.
func TestGroupCommitBoundsEntries(t *testing.T) {
	sm := &countingSM{Machine: engine.New(engine.Config{})}
	n, err := raftstore.Open(raftstore.Config{
		ID: "n1", DataDir: t.TempDir(), RaftAddr: freeAddr(t), MaxBatchCmds: 8, Pipelines: 1,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLog: io.Discard,
	}, sm)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for deadline := time.Now().Add(10 * time.Second); !n.IsLeader(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
	}
	tick := allocator.Command{Kind: allocator.KindTick}
	var wg sync.WaitGroup
	for range 2000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := n.Propose(context.Background(), tick.AppendEncode(nil)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.maxCmds > 8 || sm.maxCmds < 2 {
		t.Fatalf("largest entry carried %d commands, want 2..8 (batched, bounded)", sm.maxCmds)
	}
}

// TestLeaderClockContinuesFromLog: a node that takes leadership with its
// wall clock an hour ahead stamps entries from the log clock (cluster
// time), so its holds do not expire early; it converges toward its wall
// clock at most 1% faster than real time.
func TestLeaderClockContinuesFromLog(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n, m := single(t, dir, addr)
	propose(t, n, allocator.Command{Kind: allocator.KindPutPool, Pool: "p", Config: allocator.DefaultPoolConfig(10)})
	logClock := m.ClockMs()
	n.Close()

	m2 := engine.New(engine.Config{})
	n2, err := raftstore.Open(raftstore.Config{
		ID: "n1", DataDir: dir, RaftAddr: addr, APIAddr: "127.0.0.1:1", ClockOffset: time.Hour,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLog: io.Discard,
	}, m2)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, _, ok := n2.Leader(); ok && n2.IsLeader() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
	}
	r := propose(t, n2, allocator.Command{Kind: allocator.KindReserve, Buyer: "b", TTLMs: 60_000, Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if skew := r.Reservation.CreatedAtMs - logClock; skew > 60_000 || skew < 0 {
		t.Fatalf("hold stamped %d ms after the last log time; the new leader's hour-ahead wall clock leaked in", skew)
	}
}
