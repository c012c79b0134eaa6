package allocator

import (
	"fmt"
	"testing"
)

// Benchmarks of the state machine's hot path. Run on one core:
//
//	GOMAXPROCS=1 go test ./allocator -run XXX -bench . -benchmem -count 1
//
// The target is 1,000,000 reserve commands per second.

const (
	benchPools      = 1000
	benchEntryCmds  = 256     // commands per log entry
	benchRingBuyers = 1 << 16 // distinct buyers before commands repeat
)

// benchMachine returns a machine with benchPools pools of huge stock and no
// per-buyer limit, and the pool ids. The ring reuses buyers, so the cap on
// active reservations per buyer is lifted: these benchmarks measure grants,
// and the cap has its own tests.
func benchMachine(b *testing.B) (*Machine, []string) {
	m := New(Config{MaxActivePerBuyer: 1 << 30})
	ids := make([]string, benchPools)
	cmds := make([]Command, benchPools)
	for i := range ids {
		ids[i] = fmt.Sprintf("sku-%04d:black:42:seller-1:fc-1", i)
		cmds[i] = putCmd(ids[i], DefaultPoolConfig(MaxStock))
	}
	for _, r := range m.Apply(t0, cmds, nil) {
		if r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	return m, ids
}

// reserveRing pre-builds n single-line, one-unit reserves from distinct
// buyers, spread over the pools.
func reserveRing(pools []string, n int) []Command {
	ring := make([]Command, n)
	for i := range ring {
		ring[i] = Command{
			Kind:  KindReserve,
			Buyer: fmt.Sprintf("user:%08d", i),
			Lines: []LineRequest{{Pool: pools[i%len(pools)], Qty: 1}},
		}
	}
	return ring
}

func BenchmarkApplyReserve(b *testing.B) {
	m, pools := benchMachine(b)
	ring := reserveRing(pools, benchRingBuyers)
	out := make([]Result, 0, benchEntryCmds)
	now := t0
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(benchEntryCmds, b.N-done)
		off := done % len(ring) // len(ring) is a multiple of benchEntryCmds
		now++
		out = m.Apply(now, ring[off:off+n], out[:0])
		for i := range out {
			if out[i].Err != nil {
				b.Fatal(out[i].Err) // every command must be a grant
			}
		}
		done += n
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reserves/s")
}

// BenchmarkApplyReserveConfirm: one op is a reserve and the confirm of that
// reservation. Each entry holds 128 reserves, then the 128 confirms.
func BenchmarkApplyReserveConfirm(b *testing.B) {
	const half = benchEntryCmds / 2
	m, pools := benchMachine(b)
	reserves := reserveRing(pools, benchRingBuyers)
	confirms := make([]Command, half)
	for i := range confirms {
		confirms[i].Kind = KindConfirm
	}
	entries := make([][]Command, benchRingBuyers/half)
	for i := range entries {
		e := make([]Command, 0, benchEntryCmds)
		e = append(e, reserves[i*half:(i+1)*half]...)
		entries[i] = append(e, confirms...)
	}
	out := make([]Result, 0, benchEntryCmds)
	now := t0
	nextID := uint64(0) // ids are handed out densely from 1
	b.ReportAllocs()
	b.ResetTimer()
	for done, ei := 0, 0; done < b.N; ei++ {
		n := min(half, b.N-done)
		e := entries[ei%len(entries)]
		for i := range n {
			e[half+i].Reservation = nextID + 1 + uint64(i)
		}
		cmds := e
		if n < half { // the last, short entry
			cmds = append(e[:n:n], e[half:half+n]...)
		}
		now++
		out = m.Apply(now, cmds, out[:0])
		nextID += uint64(n)
		done += n
	}
	b.StopTimer()
	for _, r := range out {
		if r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	if s := m.Stats(); s.Confirmed != uint64(b.N) {
		b.Fatalf("confirmed %d of %d", s.Confirmed, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

func BenchmarkDecodeCommand(b *testing.B) {
	c := idem(Command{
		Kind:  KindReserve,
		Buyer: "user:00012345",
		TTLMs: 120_000,
		Lines: []LineRequest{{Pool: "sku-0042:black:42:seller-1:fc-1", Qty: 1}},
	}, "checkout-7f3a9c1e", 1)
	enc := c.AppendEncode(nil)
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeCommand(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeCommand(b *testing.B) {
	c := idem(Command{
		Kind:  KindReserve,
		Buyer: "user:00012345",
		TTLMs: 120_000,
		Lines: []LineRequest{{Pool: "sku-0042:black:42:seller-1:fc-1", Qty: 1}},
	}, "checkout-7f3a9c1e", 1)
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = c.AppendEncode(buf[:0])
	}
}
