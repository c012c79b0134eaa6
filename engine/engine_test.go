package engine

import (
	"bytes"
	"maps"
	"testing"

	"github.com/holdfast/holdfast/allocator"
)

func TestSnapshotRestoreWithKeyspace(t *testing.T) {
	src := New(Config{})
	kv := newMemKV()
	kv.m["stale"] = []byte("from before a restart")
	if err := src.OpenKV(kv); err != nil {
		t.Fatal(err)
	}
	if len(kv.m) != 0 {
		t.Fatalf("OpenKV kept %d stale keys", len(kv.m))
	}
	put := allocator.Command{Kind: allocator.KindPutPool, Pool: "p", Config: allocator.DefaultPoolConfig(10)}
	res := src.Apply(1000, [][]byte{put.AppendEncode(nil)})
	if r := res[0].(allocator.Result); r.Err != nil {
		t.Fatal(r.Err)
	}
	kv.m["a"], kv.m["b/1"], kv.m["empty"] = []byte("1"), bytes.Repeat([]byte{7}, 5000), []byte{}

	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	kv.m["after"] = []byte("written after the snapshot: not in it")
	var buf bytes.Buffer
	if err := snap.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	dst := New(Config{})
	dkv := newMemKV()
	if err := dst.OpenKV(dkv); err != nil {
		t.Fatal(err)
	}
	dkv.m["junk"] = []byte("x")
	if err := dst.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	want := maps.Clone(kv.m)
	delete(want, "after")
	if !maps.EqualFunc(want, dkv.m, bytes.Equal) {
		t.Fatalf("keyspace after restore %v, want %v", dkv.m, want)
	}
	if src.Alloc.StateHash() != dst.Alloc.StateHash() {
		t.Fatal("allocator differs after restore")
	}
	for i := range buf.Len() {
		if err := New(Config{}).Restore(bytes.NewReader(buf.Bytes()[:i])); err == nil {
			t.Fatalf("truncated snapshot (%d of %d bytes) restored", i, buf.Len())
		}
	}
}
