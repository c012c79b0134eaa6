package raftstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

// quietSingle opens a one-node group that writes no idle ticks (the log
// clock is only moved by writes), so its state stays put between writes
// and can be compared byte for byte.
func quietSingle(t *testing.T, dir, raftAddr string) (*raftstore.Node, *engine.Machine) {
	t.Helper()
	m := engine.New(engine.Config{})
	n, err := raftstore.Open(raftstore.Config{
		ID: "n1", DataDir: dir, RaftAddr: raftAddr, APIAddr: "127.0.0.1:1",
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, FreshnessMs: int64(time.Hour / time.Millisecond),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLog: io.Discard,
	}, m)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return n, m
}

func takeBackup(t *testing.T, n *raftstore.Node) ([]byte, raftstore.BackupHeader) {
	t.Helper()
	b, err := n.OpenBackup(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != b.Size {
		t.Fatalf("backup stream %d bytes, announced %d", len(data), b.Size)
	}
	return data, b.Header
}

// TestBackupRestoreRoundTrip: a backup taken on a live node restores into
// a new data directory as a node whose allocator state is byte-identical
// to the source's at the backup, and which then takes writes.
func TestBackupRestoreRoundTrip(t *testing.T) {
	n, m := quietSingle(t, t.TempDir(), freeAddr(t))
	defer n.Close()
	propose(t, n, allocator.Command{Kind: allocator.KindPutPool, Pool: "p", Config: allocator.DefaultPoolConfig(100)})
	var held []uint64
	for i := range 30 {
		r := propose(t, n, allocator.Command{Kind: allocator.KindReserve, Buyer: fmt.Sprintf("b%d", i), IdemKey: fmt.Sprintf("k%d", i), Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}})
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if i%3 == 0 {
			propose(t, n, allocator.Command{Kind: allocator.KindConfirm, Reservation: r.Reservation.ID})
		}
		held = append(held, r.Reservation.ID)
	}
	data, hdr := takeBackup(t, n)
	want := m.Alloc.StateHash()
	if hdr.LastIndex == 0 || hdr.ClusterTimeMs != m.Alloc.ClockMs() || hdr.Node != "n1" {
		t.Fatalf("header %+v; clock %d", hdr, m.Alloc.ClockMs())
	}
	if _, err := raftstore.VerifyBackup(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}

	dir, addr := t.TempDir(), freeAddr(t)
	got, err := raftstore.RestoreBackup(raftstore.Config{ID: "n1", DataDir: dir, RaftAddr: addr, RaftLog: io.Discard}, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if got != hdr {
		t.Fatalf("restore read header %+v, backup wrote %+v", got, hdr)
	}
	n2, m2 := quietSingle(t, dir, addr)
	defer n2.Close()
	if h := m2.Alloc.StateHash(); h != want {
		t.Fatal("restored state differs from the source at the backup")
	}
	if st := n2.Status(); st.LastIndex < hdr.LastIndex {
		t.Fatalf("restored node last index %d, backup %d", st.LastIndex, hdr.LastIndex)
	}
	for _, id := range held {
		if _, e := m2.Alloc.Reservation(id); e != nil {
			t.Fatalf("reservation %d missing after restore: %v", id, e)
		}
	}
	// The restored cluster takes writes, and remembers idempotency keys.
	r := propose(t, n2, allocator.Command{Kind: allocator.KindReserve, Buyer: "b0", IdemKey: "k0", Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}})
	if r.Err != nil || r.Reservation.ID != held[0] {
		t.Fatalf("idempotent retry after restore: %+v", r)
	}
	r = propose(t, n2, allocator.Command{Kind: allocator.KindReserve, Buyer: "new", Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	// A second backup of an unchanged node verifies too (nothing new to
	// snapshot is not an error: the backup writes its own entry).
	takeBackup(t, n2)
	takeBackup(t, n2)
}

// TestRestoreRefusesBadInput: a damaged backup or a data directory in use
// is refused, and leaves the directory as it was.
func TestRestoreRefusesBadInput(t *testing.T) {
	n, _ := quietSingle(t, t.TempDir(), freeAddr(t))
	propose(t, n, allocator.Command{Kind: allocator.KindPutPool, Pool: "p", Config: allocator.DefaultPoolConfig(100)})
	data, _ := takeBackup(t, n)
	n.Close()

	cfg := func(dir string) raftstore.Config {
		return raftstore.Config{ID: "n1", DataDir: dir, RaftAddr: "127.0.0.1:1", RaftLog: io.Discard}
	}
	flipped := bytes.Clone(data)
	flipped[len(flipped)-3] ^= 0x40
	cases := map[string][]byte{
		"flipped byte": flipped,
		"truncated":    data[:len(data)-10],
		"not a backup": []byte("hello\n{}\n"),
		"empty":        nil,
	}
	for name, b := range cases {
		dir := t.TempDir()
		_, err := raftstore.RestoreBackup(cfg(dir), bytes.NewReader(b))
		if !errors.Is(err, raftstore.ErrBadBackup) {
			t.Errorf("%s: err %v, want ErrBadBackup", name, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%s: left %d entries in the data directory", name, len(ents))
		}
		if _, err := raftstore.VerifyBackup(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: VerifyBackup accepted it", name)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "something"), []byte("x"), 0o644)
	if _, err := raftstore.RestoreBackup(cfg(dir), bytes.NewReader(data)); !errors.Is(err, raftstore.ErrNotEmpty) {
		t.Fatalf("non-empty data dir: %v", err)
	}
}
