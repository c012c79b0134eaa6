package raftstore

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestClockJumpForwardDoesNotSpendBankedCatchUp is the regression test for
// a bug the fault-injection suite (chaos/) found: cluster time may run at
// most 1% faster than real time while behind the leader's wall clock, but
// the allowance was computed from the whole leadership, so a leader that
// had led for 100 s and then saw its wall clock jump forward moved log
// time 1 s at once (a leader of an hour: 36 s), expiring short holds
// early. The catch-up must be earned only while behind.
func TestClockJumpForwardDoesNotSpendBankedCatchUp(t *testing.T) {
	var offsetNs atomic.Int64
	start := time.Now().Add(-100 * time.Second) // led for 100 s
	n := &Node{
		cfg:       Config{ClockOffsetFunc: func() time.Duration { return time.Duration(offsetNs.Load()) }},
		clockBase: start,
		baseMs:    start.UnixMilli(),
	}
	// In step with the wall clock: no catch-up.
	before := n.NowMs()
	if d := before - time.Now().UnixMilli(); d < -5 || d > 5 {
		t.Fatalf("in step: cluster time off the wall clock by %d ms", d)
	}
	offsetNs.Store(int64(5 * time.Minute)) // the wall clock jumps forward
	mono := time.Now()
	jumped := n.NowMs()
	real := time.Since(mono).Milliseconds()
	if step := jumped - before - real; step > 5 {
		t.Fatalf("a forward wall clock jump moved cluster time %d ms at once (want at most 1%% of the time since)", step)
	}
	// Behind the wall clock it catches up, at most 1% faster than real
	// time: over ~1 s of calls every 5 ms, about 10 ms.
	for time.Since(mono) < time.Second {
		time.Sleep(5 * time.Millisecond)
		n.NowMs()
	}
	final := n.NowMs()
	elapsed := time.Since(mono).Milliseconds()
	extra := final - before - elapsed
	if extra < 3 || extra > elapsed/100+3 {
		t.Fatalf("catch-up over %d ms: %d ms (want about 1%%)", elapsed, extra)
	}
	// The wall clock steps back: cluster time never goes back.
	offsetNs.Store(int64(-5 * time.Minute))
	if back := n.NowMs(); back < final {
		t.Fatalf("cluster time went back: %d after %d", back, final)
	}
}
