// Package lease expires reservation holds and idempotency keys inside the
// deterministic replicated state machine.
//
// The Wheel is a hierarchical timing wheel (Varghese & Lauck) driven only by
// the integer millisecond clock the state machine is given: it starts no
// goroutines, reads no wall clock, does no I/O and uses no randomness, so
// every replica that applies the same log produces the same expiries.
//
// # Determinism
//
// The one property the state machine relies on is that the keys returned by
// successive Advance calls are exactly the live keys with a deadline at or
// before the clock, in ascending (DueMs, Key) order, whatever the wheel's
// internal history was. A replica rebuilt from a snapshot (NewWheel(clock)
// followed by Add for every live lease, in any order) therefore expires
// exactly what the original would have. The Go map inside is used only for
// key lookup and is never iterated.
//
// # Layout
//
// Times are mapped order-preservingly onto uint64 (flip the sign bit) so
// negative times and the whole int64 range need no special cases. The wheel
// has 11 levels of 64 slots; level l slot s covers the 2^(6l) ms whose bits
// 6l..6l+5 equal s, so level 0 slots are exactly 1 ms and level 10 (which
// uses only 16 of its slots) covers the top 4 bits. Because 11 levels cover
// all 64 bits, any deadline is placed exactly: nothing is clamped and nothing
// can fire early or late, even at math.MaxInt64.
//
// An entry due after the wheel's internal cursor c lives at the level of the
// highest bit in which its (mapped) deadline differs from c. Entries of one
// level therefore all lie after c and before every entry of any higher level,
// so the earliest occupied slot is the lowest set bit of the lowest non-empty
// level's occupancy bitmap: skipping any stretch of empty time costs at most
// one bitmap scan per level.
package lease

import (
	"cmp"
	"math/bits"
	"slices"
)

// Expired is one lease taken off the wheel by Advance.
type Expired struct {
	Key   uint64
	DueMs int64
}

const (
	slotBits      = 6
	slotsPerLevel = 1 << slotBits
	slotMask      = slotsPerLevel - 1
	// numLevels levels of slotBits bits cover all 64 bits of a mapped time.
	numLevels = (64 + slotBits - 1) / slotBits

	// Slab index 0 is never allocated, so the zero int32 is the nil link
	// and the wheel's head arrays need no initialisation.
	nilIdx int32 = 0
	// Markers stored in entry.prev for entries that are not in a linked list.
	inLate int32 = -1 // in the late heap; entry.next holds the heap position
	inFree int32 = -2 // on the free list
)

// entry is one slab cell: 24 bytes. Where the entry lives is not stored; it
// is recomputed from its deadline and the cursor (see remove), which keeps
// the cell small.
type entry struct {
	key  uint64
	due  int64
	next int32
	prev int32
}

// Wheel is a hierarchical timing wheel with millisecond resolution holding at
// most one deadline per uint64 key. It is not safe for concurrent use; the
// state machine applies entries one at a time anyway.
//
// Memory is a 24-byte slab cell plus one Go map entry per lease (about 65
// bytes per live lease in total at 1M leases, measured by
// BenchmarkWheelAddCancel), plus about 8.5 KiB of fixed slot arrays. Freed
// cells are reused; like the map, the slab keeps its high-water size.
//
// The zero Wheel is not usable; call NewWheel.
type Wheel struct {
	// clock is the caller-visible time (NowMs): the largest time given to
	// NewWheel or Advance.
	clock int64
	// cursor (mapped) is how far the slots have been processed: every entry
	// due at or before it is in the ready list or the late heap, every
	// entry due after it is in the wheel slots. cursor <= mapped(clock).
	// Advance moves it lazily, only as far as it must to return max keys,
	// so a capped Advance does bounded work even after a long clock jump.
	cursor uint64

	entries []entry          // slab; entries[0] is the unused nil cell
	free    int32            // head of the free list, linked through next
	index   map[uint64]int32 // key -> slab index; lookup only, never iterated

	occupied [numLevels]uint64               // bit s set iff heads[l][s] != nilIdx
	heads    [numLevels][slotsPerLevel]int32 // doubly linked slot lists
	// mins[l][s] (l >= 1) is a lower bound of the mapped deadlines in the
	// slot: exact when the slot was filled, possibly stale-low after its
	// minimum is cancelled. It only feeds NextDueMs.
	mins [numLevels][slotsPerLevel]uint64

	// ready holds the entries due exactly at cursor that the last processed
	// slot yielded, sorted by key, as a doubly linked list (O(1) cancel).
	ready int32
	// late is a binary min-heap by (due, key) of entries that were added
	// with a deadline at or before cursor. These cannot go into the slots
	// (which only hold the future) and may interleave with the ready list,
	// e.g. when a replica is rebuilt from a snapshot with overdue leases.
	late []int32

	scratch []int32 // reused buffer for sorting a slot's due entries
}

// toU maps int64 to uint64 preserving order, so MinInt64 -> 0.
func toU(t int64) uint64 { return uint64(t) ^ (1 << 63) }

// fromU is the inverse of toU.
func fromU(u uint64) int64 { return int64(u ^ (1 << 63)) }

// NewWheel returns an empty wheel whose clock is nowMs. Any int64 is
// accepted, including negative values.
func NewWheel(nowMs int64) *Wheel {
	return &Wheel{
		clock:   nowMs,
		cursor:  toU(nowMs),
		entries: make([]entry, 1, 64),
		index:   make(map[uint64]int32),
	}
}

// Len returns the number of scheduled keys, including keys already due but
// not yet returned by Advance.
func (w *Wheel) Len() int { return len(w.index) }

// NowMs returns the wheel's clock: the largest time passed to NewWheel or
// Advance.
func (w *Wheel) NowMs() int64 { return w.clock }

// Due reports key's deadline, and ok=false if key is not scheduled. A key
// that is due but not yet returned by Advance is still scheduled.
func (w *Wheel) Due(key uint64) (dueMs int64, ok bool) {
	i, ok := w.index[key]
	if !ok {
		return 0, false
	}
	return w.entries[i].due, true
}

// Add schedules key at dueMs; if key is already scheduled it is moved
// (reschedule). A dueMs at or before the wheel's clock fires on the next
// Advance, ordered with every other due key by (DueMs, Key). Any int64
// deadline is accepted and kept exactly. Add is O(1) for deadlines after the
// wheel's internal cursor and O(log n) in the number of overdue keys
// otherwise.
func (w *Wheel) Add(key uint64, dueMs int64) {
	if i, ok := w.index[key]; ok {
		e := &w.entries[i]
		if e.due == dueMs {
			// Same deadline: the entry already sits where it belongs and
			// output order depends only on (due, key), so leave it.
			return
		}
		w.remove(i)
		e.due = dueMs
		w.place(i)
		return
	}
	i := w.alloc()
	e := &w.entries[i]
	e.key = key
	e.due = dueMs
	w.index[key] = i
	w.place(i)
}

// Insert schedules a key the caller knows is not scheduled, with one map
// operation instead of Add's two. Inserting a scheduled key is a caller bug
// and panics (detected by the index not growing), before any state changes
// beyond the index itself.
func (w *Wheel) Insert(key uint64, dueMs int64) {
	i := w.alloc()
	n := len(w.index)
	w.index[key] = i
	if len(w.index) == n {
		panic("lease: Insert of a scheduled key")
	}
	e := &w.entries[i]
	e.key = key
	e.due = dueMs
	w.place(i)
}

// Cancel removes key and reports whether it was scheduled. It is O(1),
// except for a key that was added already overdue and not yet returned by
// Advance, which costs O(log n) in the number of such keys.
func (w *Wheel) Cancel(key uint64) bool {
	i, ok := w.index[key]
	if !ok {
		return false
	}
	w.remove(i)
	delete(w.index, key)
	w.release(i)
	return true
}

// Advance moves the clock to nowMs (a smaller nowMs than the current clock
// leaves the clock where it is) and appends to out, and removes, at most max
// keys whose deadline is at or before the clock, in ascending (DueMs, Key)
// order; max <= 0 means no limit. Keys left over because of max come first on
// the next call: they are simply the smallest due keys, so only a key added
// in between with a smaller (DueMs, Key) can precede them. It never returns a
// key early. The returned sequence depends only on the live keys, their
// deadlines and the clock, never on how the wheel got there.
//
// Due keys are compared against the clock after it has moved, i.e. against
// max(nowMs, NowMs()): an Advance to an earlier time still drains leftovers.
//
// Cost: O(levels) to skip any amount of empty time, plus amortised
// O(levels) slot moves per key over its lifetime, plus sorting the keys that
// share a millisecond. With max > 0 it processes only as many slots as it
// needs for max keys.
func (w *Wheel) Advance(nowMs int64, max int, out []Expired) []Expired {
	if nowMs > w.clock {
		w.clock = nowMs
	}
	limit := toU(w.clock)
	for n := 0; max <= 0 || n < max; {
		// Everything in ready and late is due at or before cursor and
		// everything in the slots after it, so the smaller of their two
		// heads is the smallest live (due, key).
		i := w.ready
		fromLate := false
		if len(w.late) > 0 {
			if j := w.late[0]; i == nilIdx || w.less(j, i) {
				i = j
				fromLate = true
			}
		}
		if i == nilIdx {
			if w.cursor >= limit || !w.step(limit) {
				break
			}
			continue
		}
		if fromLate {
			w.lateRemove(0)
		} else {
			w.readyUnlink(i)
		}
		e := &w.entries[i]
		out = append(out, Expired{Key: e.key, DueMs: e.due})
		delete(w.index, e.key)
		w.release(i)
		n++
	}
	return out
}

// NextDueMs returns a lower bound of the earliest deadline, ok=false when the
// wheel is empty. It is never later than the true earliest deadline.
//
// It is exact when the earliest key is already due or sits in the finest
// (1 ms) level, and also when it sits in a coarser slot whose minimum has not
// been cancelled or rescheduled since the slot was filled (each coarse slot
// keeps a lower bound of its deadlines, tightened on insert, not on removal).
// Otherwise it may be early, but never earlier than the start of that slot;
// one Advance to the returned time, which then returns nothing, makes it exact
// again, provided no Cancel or Add intervenes.
//
// Because it can depend on history, two replicas with the same live set may
// get different answers: use it only to decide when to propose a tick, never
// as replicated state.
func (w *Wheel) NextDueMs() (dueMs int64, ok bool) {
	if len(w.index) == 0 {
		return 0, false
	}
	best := nilIdx
	if w.ready != nilIdx {
		best = w.ready
	}
	if len(w.late) > 0 && (best == nilIdx || w.less(w.late[0], best)) {
		best = w.late[0]
	}
	if best != nilIdx {
		return w.entries[best].due, true
	}
	for lvl := range numLevels {
		occ := w.occupied[lvl]
		if occ == 0 {
			continue
		}
		slot := uint64(bits.TrailingZeros64(occ))
		start := w.slotStart(lvl, slot)
		if lvl > 0 {
			start = max(start, w.mins[lvl][slot])
		}
		return fromU(start), true
	}
	panic("lease: live keys but no ready, late or slotted entry")
}

// slotStart is the first mapped time of slot at level lvl in the cursor's
// current level-(lvl+1) window. Shifts of 64 or more yield 0 in Go, which is
// what the top level needs.
func (w *Wheel) slotStart(lvl int, slot uint64) uint64 {
	shift := uint(lvl * slotBits)
	return w.cursor>>(shift+slotBits)<<(shift+slotBits) | slot<<shift
}

// step moves the cursor to the start of the earliest occupied slot if that is
// at or before limit and processes that slot, reporting true; otherwise it
// moves the cursor to limit and reports false. It is only called with the
// ready list and the late heap empty.
func (w *Wheel) step(limit uint64) bool {
	for lvl := range numLevels {
		occ := w.occupied[lvl]
		if occ == 0 {
			continue
		}
		slot := uint64(bits.TrailingZeros64(occ))
		start := w.slotStart(lvl, slot)
		if start > limit {
			// Every slot at this and higher levels starts later still.
			break
		}
		if start <= w.cursor {
			panic("lease: occupied slot at or before cursor")
		}
		// Moving the cursor to start keeps every other entry's level and
		// slot valid: no other occupied slot starts at or before start.
		w.cursor = start
		w.cascade(lvl, slot)
		return true
	}
	// No slot starts in (cursor, limit], so entries keep their places
	// relative to limit too.
	w.cursor = limit
	return false
}

// cascade empties the slot that starts at the cursor: entries due exactly at
// the cursor become the ready list, sorted by key; the rest move to lower
// levels.
func (w *Wheel) cascade(lvl int, slot uint64) {
	i := w.heads[lvl][slot]
	w.heads[lvl][slot] = nilIdx
	w.occupied[lvl] &^= 1 << slot
	batch := w.scratch[:0]
	for i != nilIdx {
		e := &w.entries[i]
		next := e.next
		switch u := toU(e.due); {
		case u == w.cursor:
			batch = append(batch, i)
		case u > w.cursor && lvl > 0:
			w.place(i)
		default:
			panic("lease: slot entry outside its slot's range")
		}
		i = next
	}
	if len(batch) > 0 {
		if w.ready != nilIdx {
			panic("lease: cascade with non-empty ready list")
		}
		w.sortByKey(batch)
		prev := nilIdx
		for _, j := range batch {
			e := &w.entries[j]
			e.prev = prev
			e.next = nilIdx
			if prev == nilIdx {
				w.ready = j
			} else {
				w.entries[prev].next = j
			}
			prev = j
		}
	}
	w.scratch = batch[:0]
}

// sortByKey sorts slab indices by key. Batches are usually a handful of
// keys, where insertion sort beats the generic sort.
func (w *Wheel) sortByKey(s []int32) {
	if len(s) > 16 {
		slices.SortFunc(s, func(a, b int32) int {
			return cmp.Compare(w.entries[a].key, w.entries[b].key)
		})
		return
	}
	for k := 1; k < len(s); k++ {
		v := s[k]
		kv := w.entries[v].key
		j := k
		for ; j > 0 && w.entries[s[j-1]].key > kv; j-- {
			s[j] = s[j-1]
		}
		s[j] = v
	}
}

// place files entry i by its deadline: into the late heap if it is at or
// before the cursor, else into the slot of the level of the highest bit in
// which its mapped deadline differs from the cursor. O(1).
func (w *Wheel) place(i int32) {
	e := &w.entries[i]
	u := toU(e.due)
	if u <= w.cursor {
		w.latePush(i)
		return
	}
	lvl := (63 - bits.LeadingZeros64(u^w.cursor)) / slotBits
	slot := u >> uint(lvl*slotBits) & slotMask
	head := &w.heads[lvl][slot]
	e.prev = nilIdx
	e.next = *head
	if *head != nilIdx {
		w.entries[*head].prev = i
		if u < w.mins[lvl][slot] {
			w.mins[lvl][slot] = u
		}
	} else {
		w.occupied[lvl] |= 1 << slot
		w.mins[lvl][slot] = u
	}
	*head = i
}

// remove takes live entry i out of whichever structure holds it. The slot is
// recomputed from the deadline and the cursor: moving the cursor never
// changes the level or slot an entry belongs in (see step).
func (w *Wheel) remove(i int32) {
	e := &w.entries[i]
	if e.prev == inLate {
		w.lateRemove(int(e.next))
		return
	}
	u := toU(e.due)
	if u <= w.cursor {
		w.readyUnlink(i)
		return
	}
	lvl := (63 - bits.LeadingZeros64(u^w.cursor)) / slotBits
	slot := u >> uint(lvl*slotBits) & slotMask
	if e.prev == nilIdx {
		if w.heads[lvl][slot] != i {
			panic("lease: entry not at head of its computed slot")
		}
		w.heads[lvl][slot] = e.next
		if e.next == nilIdx {
			w.occupied[lvl] &^= 1 << slot
		}
	} else {
		w.entries[e.prev].next = e.next
	}
	if e.next != nilIdx {
		w.entries[e.next].prev = e.prev
	}
}

// readyUnlink removes entry i from the ready list.
func (w *Wheel) readyUnlink(i int32) {
	e := &w.entries[i]
	if e.prev == nilIdx {
		if w.ready != i {
			panic("lease: entry not at head of ready list")
		}
		w.ready = e.next
	} else {
		w.entries[e.prev].next = e.next
	}
	if e.next != nilIdx {
		w.entries[e.next].prev = e.prev
	}
}

// alloc returns a free slab index, growing the slab if needed.
func (w *Wheel) alloc() int32 {
	if i := w.free; i != nilIdx {
		if w.entries[i].prev != inFree {
			panic("lease: free list holds a live entry")
		}
		w.free = w.entries[i].next
		return i
	}
	n := len(w.entries)
	if n > 1<<31-1 {
		panic("lease: more than 2^31-1 leases")
	}
	w.entries = append(w.entries, entry{})
	return int32(n)
}

// release puts slab index i on the free list. The slab never shrinks: it
// stays at the high-water mark of live leases, like the Go map beside it.
func (w *Wheel) release(i int32) {
	w.entries[i] = entry{next: w.free, prev: inFree}
	w.free = i
}

// less orders slab entries by (due, key), the output order.
func (w *Wheel) less(a, b int32) bool {
	ea, eb := &w.entries[a], &w.entries[b]
	return ea.due < eb.due || ea.due == eb.due && ea.key < eb.key
}

// lateSet stores slab index i at heap position p and records p in the entry
// so Cancel can find it.
func (w *Wheel) lateSet(p int, i int32) {
	w.late[p] = i
	w.entries[i].next = int32(p)
}

func (w *Wheel) latePush(i int32) {
	w.entries[i].prev = inLate
	w.late = append(w.late, i)
	w.lateSet(len(w.late)-1, i)
	w.lateUp(len(w.late) - 1)
}

// lateRemove deletes the element at heap position p.
func (w *Wheel) lateRemove(p int) {
	last := len(w.late) - 1
	if p != last {
		w.lateSet(p, w.late[last])
	}
	w.late = w.late[:last]
	if p != last {
		if !w.lateDown(p) {
			w.lateUp(p)
		}
	}
}

func (w *Wheel) lateUp(p int) {
	for p > 0 {
		parent := (p - 1) / 2
		if !w.less(w.late[p], w.late[parent]) {
			return
		}
		a, b := w.late[p], w.late[parent]
		w.lateSet(p, b)
		w.lateSet(parent, a)
		p = parent
	}
}

// lateDown sifts position p down and reports whether it moved.
func (w *Wheel) lateDown(p int) bool {
	start := p
	n := len(w.late)
	for {
		c := 2*p + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && w.less(w.late[r], w.late[c]) {
			c = r
		}
		if !w.less(w.late[c], w.late[p]) {
			break
		}
		a, b := w.late[p], w.late[c]
		w.lateSet(p, b)
		w.lateSet(c, a)
		p = c
	}
	return p != start
}
