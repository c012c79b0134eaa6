package lease

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
)

// refModel is the obviously-correct specification: a slice kept sorted by
// (DueMs, Key).
type refModel struct {
	clock  int64
	due    map[uint64]int64
	sorted []Expired
}

func newRef(now int64) *refModel {
	return &refModel{clock: now, due: map[uint64]int64{}}
}

func cmpExpired(a, b Expired) int {
	switch {
	case a.DueMs < b.DueMs:
		return -1
	case a.DueMs > b.DueMs:
		return 1
	case a.Key < b.Key:
		return -1
	case a.Key > b.Key:
		return 1
	}
	return 0
}

func (m *refModel) cancel(key uint64) bool {
	d, ok := m.due[key]
	if !ok {
		return false
	}
	i, found := slices.BinarySearchFunc(m.sorted, Expired{key, d}, cmpExpired)
	if !found {
		panic("ref: inconsistent")
	}
	m.sorted = slices.Delete(m.sorted, i, i+1)
	delete(m.due, key)
	return true
}

func (m *refModel) add(key uint64, due int64) {
	m.cancel(key)
	e := Expired{key, due}
	i, _ := slices.BinarySearchFunc(m.sorted, e, cmpExpired)
	m.sorted = slices.Insert(m.sorted, i, e)
	m.due[key] = due
}

func (m *refModel) advance(now int64, max int) []Expired {
	m.clock = maxI64(m.clock, now)
	n := 0
	for n < len(m.sorted) && m.sorted[n].DueMs <= m.clock && (max <= 0 || n < max) {
		n++
	}
	out := slices.Clone(m.sorted[:n])
	m.sorted = slices.Delete(m.sorted, 0, n)
	for _, e := range out {
		delete(m.due, e.Key)
	}
	return out
}

func maxI64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// satAdd adds without wrapping, so generated times stay meaningful.
func satAdd(a, b int64) int64 {
	s := a + b
	if b > 0 && s < a {
		return math.MaxInt64
	}
	if b < 0 && s > a {
		return math.MinInt64
	}
	return s
}

// checkInvariants walks every internal structure. It is O(n) and test-only.
func checkInvariants(w *Wheel) error {
	seen := make(map[int32]bool)
	visit := func(i int32, where string) error {
		if i <= 0 || int(i) >= len(w.entries) {
			return fmt.Errorf("%s: index %d out of range", where, i)
		}
		if seen[i] {
			return fmt.Errorf("%s: index %d reached twice", where, i)
		}
		seen[i] = true
		e := w.entries[i]
		if j, ok := w.index[e.key]; !ok || j != i {
			return fmt.Errorf("%s: index map for key %d = %d,%v want %d", where, e.key, j, ok, i)
		}
		return nil
	}
	if w.cursor > toU(w.clock) {
		return fmt.Errorf("cursor %d beyond clock %d", fromU(w.cursor), w.clock)
	}
	for lvl := range numLevels {
		for slot := range slotsPerLevel {
			head := w.heads[lvl][slot]
			if (head != nilIdx) != (w.occupied[lvl]&(1<<slot) != 0) {
				return fmt.Errorf("level %d slot %d: bitmap disagrees with list", lvl, slot)
			}
			if head == nilIdx {
				continue
			}
			start := w.slotStart(lvl, uint64(slot))
			if lvl > 0 && (w.mins[lvl][slot] < start) {
				return fmt.Errorf("level %d slot %d: min below slot start", lvl, slot)
			}
			prev := nilIdx
			for i := head; i != nilIdx; i = w.entries[i].next {
				where := fmt.Sprintf("level %d slot %d", lvl, slot)
				if err := visit(i, where); err != nil {
					return err
				}
				e := w.entries[i]
				if e.prev != prev {
					return fmt.Errorf("%s: bad prev link", where)
				}
				prev = i
				u := toU(e.due)
				if u <= w.cursor {
					return fmt.Errorf("%s: due %d not after cursor %d", where, e.due, fromU(w.cursor))
				}
				wl := (63 - bits.LeadingZeros64(u^w.cursor)) / slotBits
				ws := int(u >> uint(wl*slotBits) & slotMask)
				if wl != lvl || ws != slot {
					return fmt.Errorf("%s: due %d belongs in level %d slot %d", where, e.due, wl, ws)
				}
				if lvl > 0 && u < w.mins[lvl][slot] {
					return fmt.Errorf("%s: min %d above member %d", where, w.mins[lvl][slot], u)
				}
			}
		}
	}
	prev := nilIdx
	for i := w.ready; i != nilIdx; i = w.entries[i].next {
		if err := visit(i, "ready"); err != nil {
			return err
		}
		e := w.entries[i]
		if e.prev != prev {
			return fmt.Errorf("ready: bad prev link")
		}
		if toU(e.due) != w.cursor {
			return fmt.Errorf("ready: due %d != cursor %d", e.due, fromU(w.cursor))
		}
		if prev != nilIdx && w.entries[prev].key >= e.key {
			return fmt.Errorf("ready: keys not ascending")
		}
		prev = i
	}
	for p, i := range w.late {
		if err := visit(i, "late"); err != nil {
			return err
		}
		e := w.entries[i]
		if e.prev != inLate || int(e.next) != p {
			return fmt.Errorf("late: position bookkeeping wrong at %d", p)
		}
		if toU(e.due) > w.cursor {
			return fmt.Errorf("late: due %d after cursor", e.due)
		}
		if p > 0 && w.less(i, w.late[(p-1)/2]) {
			return fmt.Errorf("late: heap order broken at %d", p)
		}
	}
	if len(seen) != len(w.index) {
		return fmt.Errorf("reached %d entries, index has %d", len(seen), len(w.index))
	}
	nfree := 0
	for i := w.free; i != nilIdx; i = w.entries[i].next {
		if w.entries[i].prev != inFree || seen[i] {
			return fmt.Errorf("free list: bad entry %d", i)
		}
		nfree++
		if nfree > len(w.entries) {
			return fmt.Errorf("free list: cycle")
		}
	}
	if nfree+len(seen)+1 != len(w.entries) {
		return fmt.Errorf("slab leak: %d free + %d live + 1 != %d", nfree, len(seen), len(w.entries))
	}
	return nil
}

// harness applies the same operations to the reference model, a primary
// wheel and any number of wheels rebuilt from snapshots, and compares every
// observable result.
type harness struct {
	tb     testing.TB
	ref    *refModel
	wheels []*Wheel // wheels[0] is the primary, built incrementally
	shuf   *rand.Rand
	ops    int
	// checkEvery > 0 runs the O(n) invariant walk every that many ops.
	checkEvery int
	maxShadows int
}

func newHarness(tb testing.TB, now int64, seed uint64) *harness {
	return &harness{
		tb:         tb,
		ref:        newRef(now),
		wheels:     []*Wheel{NewWheel(now)},
		shuf:       rand.New(rand.NewPCG(seed, 0x5eed)),
		checkEvery: 37,
		maxShadows: 2,
	}
}

func (h *harness) fatalf(format string, args ...any) {
	h.tb.Helper()
	h.tb.Fatalf("op %d: "+format, append([]any{h.ops}, args...)...)
}

func (h *harness) add(key uint64, due int64) {
	h.tb.Helper()
	h.ref.add(key, due)
	for _, w := range h.wheels {
		w.Add(key, due)
	}
	h.after(key)
}

func (h *harness) cancel(key uint64) {
	h.tb.Helper()
	want := h.ref.cancel(key)
	for wi, w := range h.wheels {
		if got := w.Cancel(key); got != want {
			h.fatalf("wheel %d: Cancel(%d) = %v, want %v", wi, key, got, want)
		}
	}
	h.after(key)
}

func (h *harness) advance(now int64, max int) []Expired {
	h.tb.Helper()
	want := h.ref.advance(now, max)
	for wi, w := range h.wheels {
		// Sometimes pass a non-empty out to check append semantics.
		var prefix []Expired
		if h.ops%3 == 0 {
			prefix = []Expired{{Key: 42, DueMs: 42}}
		}
		got := w.Advance(now, max, prefix)
		if len(got) < len(prefix) || !slices.Equal(got[:len(prefix)], prefix) {
			h.fatalf("wheel %d: Advance clobbered out prefix", wi)
		}
		got = got[len(prefix):]
		if !slices.Equal(got, want) {
			h.fatalf("wheel %d: Advance(%d, %d) clock %d\n got %v\nwant %v", wi, now, max, h.ref.clock, got, want)
		}
		if w.NowMs() != h.ref.clock {
			h.fatalf("wheel %d: NowMs %d want %d", wi, w.NowMs(), h.ref.clock)
		}
	}
	for _, e := range want {
		if e.DueMs > h.ref.clock {
			h.fatalf("reference returned early key")
		}
	}
	h.after(0)
	return want
}

// advanceToNext advances the primary's clock to its own NextDueMs and, when
// that returns nothing, checks NextDueMs has become exact.
func (h *harness) advanceToNext() {
	h.tb.Helper()
	v, ok := h.wheels[0].NextDueMs()
	if !ok {
		return
	}
	if len(h.advance(v, 0)) == 0 && len(h.ref.sorted) > 0 {
		got, _ := h.wheels[0].NextDueMs()
		if want := h.ref.sorted[0].DueMs; got != want {
			h.fatalf("NextDueMs not exact after Advance to it: got %d want %d", got, want)
		}
	}
}

// rebuild adds a wheel built the way a snapshot restore builds it: NewWheel
// at the clock, then Add for every live lease in an arbitrary order.
func (h *harness) rebuild() {
	h.tb.Helper()
	live := slices.Clone(h.ref.sorted)
	h.shuf.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	w := NewWheel(h.ref.clock)
	for _, e := range live {
		w.Add(e.Key, e.DueMs)
	}
	if len(h.wheels) > h.maxShadows {
		// Replace the oldest shadow, keep the primary.
		h.wheels = slices.Delete(h.wheels, 1, 2)
	}
	h.wheels = append(h.wheels, w)
	h.after(0)
}

func (h *harness) after(key uint64) {
	h.tb.Helper()
	h.ops++
	wantLen := len(h.ref.sorted)
	var trueMin int64
	if wantLen > 0 {
		trueMin = h.ref.sorted[0].DueMs
	}
	wantDue, wantOK := h.ref.due[key]
	for wi, w := range h.wheels {
		if w.Len() != wantLen {
			h.fatalf("wheel %d: Len %d want %d", wi, w.Len(), wantLen)
		}
		v, ok := w.NextDueMs()
		if ok != (wantLen > 0) {
			h.fatalf("wheel %d: NextDueMs ok=%v with %d live", wi, ok, wantLen)
		}
		if ok && v > trueMin {
			h.fatalf("wheel %d: NextDueMs %d later than earliest %d", wi, v, trueMin)
		}
		if d, ok := w.Due(key); ok != wantOK || d != wantDue {
			h.fatalf("wheel %d: Due(%d) = %d,%v want %d,%v", wi, key, d, ok, wantDue, wantOK)
		}
		if h.checkEvery > 0 && h.ops%h.checkEvery == 0 {
			if err := checkInvariants(w); err != nil {
				h.fatalf("wheel %d: %v", wi, err)
			}
			for k, d := range h.ref.due { // map order is irrelevant here
				if got, ok := w.Due(k); !ok || got != d {
					h.fatalf("wheel %d: Due(%d) = %d,%v want %d", wi, k, got, ok, d)
				}
			}
		}
	}
}

// drainAll empties every wheel with a sequence of capped Advance calls at
// the far end of time and compares with the reference.
func (h *harness) drainAll(max int) {
	h.tb.Helper()
	for len(h.ref.sorted) > 0 {
		h.advance(math.MaxInt64, max)
	}
	h.advance(math.MaxInt64, 0)
}
