package allocator

import (
	"testing"
	"time"
)

// BenchmarkDrop runs the drop of TestDrop20000 through the state machine:
// a draw pool with 500 units and a per-buyer limit of 1, 20,000 distinct
// buyers entering in log entries of 256 commands spread over the window,
// then the entry that passes closes_at and runs the draw (shuffle, queue,
// 500 offers). One iteration is one whole drop on a fresh machine.
//
//	GOMAXPROCS=1 go test ./allocator -run XXX -bench Drop -benchmem -count 1
//
// Reported: ns/entry (per draw entry, i.e. per entrant's reserve command,
// log entries included), entries/s, and close-ms, the entry that closes
// the draw, measured separately.
func BenchmarkDrop(b *testing.B) {
	const (
		entrants = 20_000
		units    = 500
		perEntry = 256
	)
	cfg := dropConfig(units, 1, "drop-2026-11-26")
	log, closeAt := dropLog(cfg, entrants, perEntry)
	setup, entries, closing := log[:1], log[1:closeAt], log[closeAt:]
	out := make([]Result, 0, perEntry)
	var entryNs, closeNs time.Duration
	iters := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		m := New(Config{})
		for _, e := range setup {
			m.Apply(e.nowMs, e.cmds, out[:0])
		}
		b.StartTimer()

		start := time.Now()
		for _, e := range entries {
			out = m.Apply(e.nowMs, e.cmds, out[:0])
		}
		entered := time.Now()
		for _, e := range closing {
			m.Apply(e.nowMs, e.cmds, out[:0])
		}
		closed := time.Now()

		entryNs += entered.Sub(start)
		closeNs += closed.Sub(entered)
		iters++
		b.StopTimer()
		if p := m.pools[dropPoolID]; p.Held != units || p.waitq.len() != entrants-units {
			b.Fatalf("drop ended with %d held, %d waiting", p.Held, p.waitq.len())
		}
		b.StartTimer()
	}
	perEntryNs := float64(entryNs.Nanoseconds()) / float64(iters*entrants)
	b.ReportMetric(perEntryNs, "ns/entry")
	b.ReportMetric(1e9/perEntryNs, "entries/s")
	b.ReportMetric(float64(closeNs.Nanoseconds())/float64(iters)/1e6, "close-ms")
}
