package raftstore_test

import (
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

// TestCloseWithBlackholedPeer is the regression test for what chaos
// (TermUnderBlackhole) found behind a slow SIGTERM, the shape of
// hashicorp/raft#612: raft.Shutdown waits for its goroutines, and one in
// an RPC to a peer that accepts connections but never answers waits the
// transport's full 10 s I/O timeout, then the next RPC another 10 s. Close
// must close the transport's connections so such RPCs fail at once.
func TestCloseWithBlackholedPeer(t *testing.T) {
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	defer func() {
		hole.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()

	addr := freeAddr(t)
	n, err := raftstore.Open(raftstore.Config{
		ID: "n1", DataDir: t.TempDir(), RaftAddr: addr, APIAddr: "127.0.0.1:1",
		Peers:            []raftstore.Peer{{ID: "n1", Addr: addr}, {ID: "n2", Addr: hole.Addr().String()}},
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLog: io.Discard,
	}, engine.New(engine.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	// Let it stand for election: its vote request to n2 is now waiting.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		k := len(held)
		mu.Unlock()
		if k > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if err := n.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %s with a blackholed peer (want well under the transport's 10 s I/O timeout)", d.Round(time.Millisecond))
	}
}
