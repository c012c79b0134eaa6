package logstore

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

// recordingFSM records the commands it applies, in order.
type recordingFSM struct {
	mu   sync.Mutex
	cmds [][]byte
}

func (f *recordingFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, append([]byte(nil), l.Data...))
	return len(f.cmds)
}

func (f *recordingFSM) Snapshot() (raft.FSMSnapshot, error) { return noopSnapshot{}, nil }

func (f *recordingFSM) Restore(rc io.ReadCloser) error { return rc.Close() }

func (f *recordingFSM) applied() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.cmds...)
}

type noopSnapshot struct{}

func (noopSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (noopSnapshot) Release()                             {}

func raftConfig() *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = "n1"
	c.HeartbeatTimeout = 50 * time.Millisecond
	c.ElectionTimeout = 50 * time.Millisecond
	c.LeaderLeaseTimeout = 50 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.LogOutput = io.Discard
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestRaftSmoke runs a single-node hashicorp/raft on a Store (as LogStore
// and StableStore), applies 100 commands, restarts on the reopened DB and
// checks that the log and stable state survive and the FSM replays.
func TestRaftSmoke(t *testing.T) {
	dir := t.TempDir() // the real filesystem, as in production
	const group = 42
	const n = 100

	db, err := Open(dir, Options{FS: vfs.Default})
	if err != nil {
		t.Fatal(err)
	}
	store := mustGroup(t, db, group)
	snaps := raft.NewInmemSnapshotStore()

	// A fresh store must read as "no state" (the "not found" contract).
	if has, err := raft.HasExistingState(store, store, snaps); err != nil || has {
		t.Fatalf("HasExistingState on a fresh store = %v, %v", has, err)
	}

	fsm := &recordingFSM{}
	addr, trans := raft.NewInmemTransport("")
	r, err := raft.NewRaft(raftConfig(), fsm, store, store, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	boot := raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: addr}}}
	if err := r.BootstrapCluster(boot).Error(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "leadership", func() bool { return r.State() == raft.Leader })

	var want [][]byte
	for i := range n {
		cmd := fmt.Appendf(nil, "reserve sku-%d", i)
		want = append(want, cmd)
		if err := r.Apply(cmd, 5*time.Second).Error(); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	if err := r.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	lastBefore := r.LastIndex()
	if got, _ := store.LastIndex(); got != lastBefore {
		t.Fatalf("store LastIndex %d, raft LastIndex %d", got, lastBefore)
	}
	if lastBefore < n+2 { // bootstrap configuration + leader no-op + commands
		t.Fatalf("LastIndex %d < %d", lastBefore, n+2)
	}
	term, err := store.GetUint64([]byte("CurrentTerm"))
	if err != nil || term == 0 {
		t.Fatalf("CurrentTerm = %d, %v", term, err)
	}
	if got := fsm.applied(); len(got) != n {
		t.Fatalf("FSM applied %d commands, want %d", len(got), n)
	}
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	_ = trans.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart on the reopened DB, with the log cache raft users normally
	// put in front of the store.
	db, err = Open(dir, Options{FS: vfs.Default})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store = mustGroup(t, db, group)
	if got, _ := store.LastIndex(); got != lastBefore {
		t.Fatalf("reopened LastIndex %d, want %d", got, lastBefore)
	}
	if first, _ := store.FirstIndex(); first != 1 {
		t.Fatalf("reopened FirstIndex %d, want 1", first)
	}
	if got, err := store.GetUint64([]byte("CurrentTerm")); err != nil || got != term {
		t.Fatalf("reopened CurrentTerm = %d, %v; want %d", got, err, term)
	}
	logs, err := raft.NewLogCache(64, store)
	if err != nil {
		t.Fatal(err)
	}
	fsm2 := &recordingFSM{}
	_, trans2 := raft.NewInmemTransport(addr)
	r2, err := raft.NewRaft(raftConfig(), fsm2, logs, store, snaps, trans2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r2.Shutdown().Error(); err != nil {
			t.Error(err)
		}
		_ = trans2.Close()
	}()
	waitFor(t, "leadership after restart", func() bool { return r2.State() == raft.Leader })
	waitFor(t, "FSM replay", func() bool { return len(fsm2.applied()) >= n })
	got := fsm2.applied()
	if len(got) != n {
		t.Fatalf("replayed %d commands, want %d", len(got), n)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("replayed command %d = %q, want %q", i, got[i], want[i])
		}
	}
	if r2.LastIndex() <= lastBefore {
		t.Fatalf("LastIndex after restart %d, want > %d (new leader no-op)", r2.LastIndex(), lastBefore)
	}
	if err := r2.Apply([]byte("after restart"), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if got, _ := store.LastIndex(); got != r2.LastIndex() {
		t.Fatalf("store LastIndex %d, raft %d", got, r2.LastIndex())
	}
}
