package raftstore

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TestHeartbeatsGoThroughTheMainLoop: the wrapped TCP transport never
// installs raft's heartbeat fast path (hashicorp/raft#695), so a heartbeat
// arrives on the consumer channel that raft's main loop reads.
func TestHeartbeatsGoThroughTheMainLoop(t *testing.T) {
	logger := hclog.New(&hclog.LoggerOptions{Output: io.Discard})
	mk := func() *raft.NetworkTransport {
		tr, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 2, time.Second, logger)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	server, client := mk(), mk()
	wrapped := noFastPath{server}
	fastPath := make(chan struct{}, 1)
	wrapped.SetHeartbeatHandler(func(rpc raft.RPC) {
		fastPath <- struct{}{}
		rpc.Respond(&raft.AppendEntriesResponse{}, nil)
	})

	// A heartbeat: AppendEntries with no entries and a leader set.
	hb := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("leader"), Addr: []byte(client.LocalAddr())}, Term: 1}
	done := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		done <- client.AppendEntries("server", server.LocalAddr(), hb, &resp)
	}()
	select {
	case rpc := <-wrapped.Consumer():
		if _, ok := rpc.Command.(*raft.AppendEntriesRequest); !ok {
			t.Fatalf("consumer got %T", rpc.Command)
		}
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
	case <-fastPath:
		t.Fatal("the heartbeat took the fast path around raft's main loop")
	case <-time.After(5 * time.Second):
		t.Fatal("the heartbeat never arrived")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestReplicationIsNotPipelined: the wrapped transport refuses pipelined
// AppendEntries, so raft replicates with one RPC in flight per follower
// (hashicorp/raft#612; TestFollowerCatchesUpAfterFailedAppend shows why).
func TestReplicationIsNotPipelined(t *testing.T) {
	tr, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 2, time.Second, hclog.New(&hclog.LoggerOptions{Output: io.Discard}))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	bare, err := tr.AppendEntriesPipeline("peer", tr.LocalAddr())
	if err != nil {
		t.Fatalf("the bare transport does not pipeline (the wrapper hides nothing): %v", err)
	}
	bare.Close()
	if p, err := (noFastPath{tr}).AppendEntriesPipeline("peer", tr.LocalAddr()); !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("wrapped: pipeline %v, err %v; want raft.ErrPipelineReplicationNotSupported", p, err)
	}
}
