package lease

import (
	"container/heap"
	"math/rand/v2"
	"runtime"
	"testing"
)

const (
	benchLive = 1_000_000
	minTTL    = int64(1_000)          // 1 s
	maxTTL    = int64(30 * 60 * 1000) // 30 min
)

// leaseHeap is the baseline: a container/heap binary heap of (due, key)
// with a key -> position map so Cancel can find an entry.
type leaseHeap struct {
	items []heapItem
	pos   map[uint64]int
}

type heapItem struct {
	due int64
	key uint64
}

func newLeaseHeap() *leaseHeap { return &leaseHeap{pos: map[uint64]int{}} }

func (h *leaseHeap) Len() int { return len(h.items) }

func (h *leaseHeap) Less(i, j int) bool {
	a, b := h.items[i], h.items[j]
	return a.due < b.due || a.due == b.due && a.key < b.key
}

func (h *leaseHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.pos[h.items[i].key] = i
	h.pos[h.items[j].key] = j
}

func (h *leaseHeap) Push(x any) {
	it := x.(heapItem)
	h.pos[it.key] = len(h.items)
	h.items = append(h.items, it)
}

func (h *leaseHeap) Pop() any {
	n := len(h.items) - 1
	it := h.items[n]
	h.items = h.items[:n]
	delete(h.pos, it.key)
	return it
}

func (h *leaseHeap) add(key uint64, due int64) {
	if i, ok := h.pos[key]; ok {
		h.items[i].due = due
		heap.Fix(h, i)
		return
	}
	heap.Push(h, heapItem{due, key})
}

func (h *leaseHeap) cancel(key uint64) bool {
	i, ok := h.pos[key]
	if ok {
		heap.Remove(h, i)
	}
	return ok
}

func (h *leaseHeap) advance(now int64, out []Expired) []Expired {
	for len(h.items) > 0 && h.items[0].due <= now {
		it := heap.Pop(h).(heapItem)
		out = append(out, Expired{Key: it.key, DueMs: it.due})
	}
	return out
}

func ttl(r *rand.Rand) int64 { return minTTL + r.Int64N(maxTTL-minTTL+1) }

// residual draws the remaining life of a lease in a steady state where
// leases are re-added with ttl(): a length-biased TTL (rejection sampling),
// then a uniform point in it. Prefilling with it makes the expiry rate start
// at its long-run value (~1.1 per ms for 1M leases) instead of ramping up.
func residual(r *rand.Rand) int64 {
	for {
		t := ttl(r)
		if r.Int64N(maxTTL) < t {
			return 1 + r.Int64N(t)
		}
	}
}

func heapBytes() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// prefill returns the keys 1..benchLive and the bytes per lease the fill
// retained.
func prefill(r *rand.Rand, add func(uint64, int64), due func(*rand.Rand) int64) ([]uint64, float64) {
	keys := make([]uint64, benchLive)
	before := heapBytes()
	for i := range keys {
		keys[i] = uint64(i + 1)
		add(keys[i], due(r))
	}
	after := heapBytes()
	return keys, float64(after-before) / benchLive
}

// addCancelLoop runs the add+cancel benchmark body shared by both
// implementations: add one new lease, cancel one random live lease.
func addCancelLoop(b *testing.B, r *rand.Rand, keys []uint64, add func(uint64, int64), cancel func(uint64) bool) {
	next := uint64(len(keys) + 1)
	for b.Loop() {
		add(next, ttl(r))
		j := r.IntN(len(keys))
		if !cancel(keys[j]) {
			b.Fatal("cancel missed a live key")
		}
		keys[j] = next
		next++
	}
}

// BenchmarkWheelAddCancel: 1M live leases with TTLs 1 s..30 min; each op
// adds one lease and cancels a random live one. Also reports the wheel's
// retained bytes per live lease (slab + index map + slot arrays).
func BenchmarkWheelAddCancel(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	w := NewWheel(0)
	keys, perLease := prefill(r, w.Add, ttl)
	addCancelLoop(b, r, keys, w.Add, w.Cancel)
	// After the loop: b.Loop's first call resets user metrics.
	b.ReportMetric(perLease, "B/lease")
	runtime.KeepAlive(w)
}

// BenchmarkHeapAddCancel is the container/heap baseline for
// BenchmarkWheelAddCancel.
func BenchmarkHeapAddCancel(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	h := newLeaseHeap()
	keys, perLease := prefill(r, h.add, ttl)
	addCancelLoop(b, r, keys, h.add, h.cancel)
	// After the loop: b.Loop's first call resets user metrics.
	b.ReportMetric(perLease, "B/lease")
	runtime.KeepAlive(h)
}

// advanceLoop: each op moves the clock 1 ms, expires what is due and
// re-adds as many fresh leases, so the live count stays at 1M.
func advanceLoop(b *testing.B, r *rand.Rand, advance func(int64, []Expired) []Expired, add func(uint64, int64)) {
	now := int64(0)
	next := uint64(benchLive + 1)
	out := make([]Expired, 0, 64)
	expired, ops := 0, 0
	for b.Loop() {
		now++
		out = advance(now, out[:0])
		for range out {
			add(next, now+ttl(r))
			next++
		}
		expired += len(out)
		ops++
	}
	b.ReportMetric(float64(expired)/float64(ops), "expired/op")
}

// BenchmarkWheelAdvance: steady-state expiry at 1M live leases, 1 ms per op.
func BenchmarkWheelAdvance(b *testing.B) {
	r := rand.New(rand.NewPCG(2, 2))
	w := NewWheel(0)
	prefill(r, w.Add, residual)
	advanceLoop(b, r, func(now int64, out []Expired) []Expired {
		return w.Advance(now, 0, out)
	}, w.Add)
}

// BenchmarkHeapAdvance is the container/heap baseline for
// BenchmarkWheelAdvance.
func BenchmarkHeapAdvance(b *testing.B) {
	r := rand.New(rand.NewPCG(2, 2))
	h := newLeaseHeap()
	prefill(r, h.add, residual)
	advanceLoop(b, r, h.advance, h.add)
}

// BenchmarkWheelRebuild measures restoring 1M leases from a snapshot:
// NewWheel plus Add for each, in random key order, per op.
func BenchmarkWheelRebuild(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 3))
	keys := make([]uint64, benchLive)
	dues := make([]int64, benchLive)
	for i := range keys {
		keys[i] = r.Uint64()
		dues[i] = ttl(r)
	}
	for b.Loop() {
		w := NewWheel(0)
		for i, k := range keys {
			w.Add(k, dues[i])
		}
	}
}
