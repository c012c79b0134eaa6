package allocator

import (
	"bytes"
	"reflect"
	"testing"
)

// TestReplayAfterRestoreIsTheSameObject: an idempotent PutPool answered
// from a restored replica returns exactly the first answer, including the
// view's demand, heat and waitlist figures.
func TestReplayAfterRestoreIsTheSameObject(t *testing.T) {
	m := New(Config{})
	cfg := DefaultPoolConfig(2)
	cfg.Waitlist.Enabled = true
	cfg.Demand.WarmRPS, cfg.Demand.HotRPS = 1, 2
	m.Apply(1_000_000, []Command{{Kind: KindPutPool, Pool: "p", Config: cfg}}, nil)
	for i := range 40 { // demand, and a queue behind the two held units
		c := Command{Kind: KindReserve, Buyer: "b" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Lines: []LineRequest{{Pool: "p", Qty: 1}}, Wait: true}
		m.Apply(1_000_000+int64(i), []Command{c}, nil)
	}
	put := Command{Kind: KindPutPool, Pool: "p", Config: cfg, IdemKey: "k", ReqHash: [HashLen]byte{1}}
	first := m.Apply(1_000_100, []Command{put}, nil)[0]
	if first.Pool.Heat == HeatCold || first.Pool.Waiting == 0 || first.Pool.RequestsPerSec == 0 {
		t.Fatalf("test setup: view %+v lacks heat, rates or a queue", first.Pool)
	}
	r := New(Config{})
	if err := r.Restore(bytes.NewReader(m.Snapshot())); err != nil {
		t.Fatal(err)
	}
	again := r.Apply(1_000_200, []Command{put}, nil)[0]
	if !again.Replayed {
		t.Fatal("not answered from the idempotency record")
	}
	again.Replayed = false
	if !reflect.DeepEqual(first, again) {
		t.Fatalf("replay after restore differs:\nfirst %+v\nagain %+v", first.Pool, again.Pool)
	}
}
