package engine

import (
	"bytes"
	"maps"
	"strconv"
	"testing"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/cart"
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

// TestNextDeadlineIncludesCarts: an idle cart's expiry is a deadline the
// leader must tick for, even with no holds anywhere.
func TestNextDeadlineIncludesCarts(t *testing.T) {
	m := New(Config{Carts: cart.Config{IdleTTLMs: 5_000}, Allocator: allocator.Config{MaxClockStepMs: 60_000}})
	if err := m.OpenKV(newMemKV()); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.NextDeadlineMs(); ok {
		t.Fatal("a deadline on an empty machine")
	}
	c := cart.Command{Kind: cart.KindCreate, Owner: "anon:1"}
	r := m.Apply(1_000_000, [][]byte{c.AppendEncode(nil)})[0].(cart.Result)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	due, ok := m.NextDeadlineMs()
	if !ok || due != 1_005_000 {
		t.Fatalf("next deadline %d %v, want the idle cart's 1005000", due, ok)
	}
	m.Apply(due, nil) // the tick the leader proposes
	if _, err := m.Cart(r.Cart.ID); err == nil {
		t.Fatal("the idle cart outlived its deadline")
	}
}

// TestOneClockStepPerEntry: an entry of interleaved allocator and cart
// commands moves the clock once, by at most MaxClockStepMs, and the cart
// layer runs on that clock, not on the raw leader stamp.
func TestOneClockStepPerEntry(t *testing.T) {
	m := New(Config{Allocator: allocator.Config{MaxClockStepMs: 1000}})
	if err := m.OpenKV(newMemKV()); err != nil {
		t.Fatal(err)
	}
	put := allocator.Command{Kind: allocator.KindPutPool, Pool: "p", Config: allocator.DefaultPoolConfig(100)}
	m.Apply(1_000_000, [][]byte{put.AppendEncode(nil)})
	var cmds [][]byte
	for i := range 50 {
		if i%2 == 0 {
			c := allocator.Command{Kind: allocator.KindReserve, Buyer: "b" + strconv.Itoa(i), Lines: []allocator.LineRequest{{Pool: "p", Qty: 1}}}
			cmds = append(cmds, c.AppendEncode(nil))
		} else {
			c := cart.Command{Kind: cart.KindCreate, Owner: "anon:" + strconv.Itoa(i)}
			cmds = append(cmds, c.AppendEncode(nil))
		}
	}
	// A leader stamp a day ahead.
	out := m.Apply(1_000_000+86_400_000, cmds)
	if got := m.Alloc.ClockMs(); got != 1_001_000 {
		t.Fatalf("clock %d after one entry, want 1001000 (one step)", got)
	}
	for i, r := range out {
		switch v := r.(type) {
		case allocator.Result:
			if v.Err != nil || v.Reservation.CreatedAtMs != 1_001_000 {
				t.Fatalf("command %d: %+v", i, v)
			}
		case cart.Result:
			if v.Err != nil || v.Cart.CreatedAtMs != 1_001_000 {
				t.Fatalf("command %d: cart on clock %d, err %v", i, v.Cart.CreatedAtMs, v.Err)
			}
		}
	}
}
