package lease

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

const day = int64(24 * 60 * 60 * 1000)

// genDue picks a deadline relative to base from a mixture that hits the
// interesting places: the past, now, the next few ms, level boundaries
// (powers of two and of 64), 30 days, far future and the int64 extremes.
func genDue(r *rand.Rand, base int64) int64 {
	switch r.IntN(12) {
	case 0:
		return satAdd(base, r.Int64N(11)-5)
	case 1:
		return satAdd(base, r.Int64N(130))
	case 2:
		return satAdd(base, satAdd(int64(1)<<r.IntN(63), r.Int64N(5)-2))
	case 3:
		return satAdd(base, r.Int64N(1<<20))
	case 4:
		return satAdd(base, satAdd(30*day, r.Int64N(2001)-1000))
	case 5:
		return []int64{math.MinInt64, math.MinInt64 + 1, math.MaxInt64, math.MaxInt64 - 1, 0, -1, 1}[r.IntN(7)]
	case 6:
		return satAdd(base, -r.Int64N(int64(1)<<r.IntN(40)+1))
	case 7:
		return int64(r.Uint64())
	case 8:
		// Aligned to a 64^k boundary relative to base, +-1.
		k := r.IntN(11)
		step := int64(1) << (6 * k)
		if k == 10 {
			step = math.MaxInt64
		}
		return satAdd(satAdd(base, step), r.Int64N(3)-1)
	default:
		return satAdd(base, r.Int64N(5000))
	}
}

// genNow picks the time for an Advance: mostly small forward steps, with
// backward calls, jumps and extremes.
func genNow(r *rand.Rand, clock int64) int64 {
	switch r.IntN(10) {
	case 0:
		return satAdd(clock, -r.Int64N(100))
	case 1:
		return clock
	case 2:
		return satAdd(clock, r.Int64N(1<<r.IntN(45)+1))
	case 3:
		return genDue(r, clock)
	default:
		return satAdd(clock, r.Int64N(200))
	}
}

func genMax(r *rand.Rand) int {
	switch r.IntN(4) {
	case 0:
		return 0
	case 1:
		return -r.IntN(3)
	default:
		return 1 + r.IntN(8)
	}
}

type propConfig struct {
	keySpace uint64 // keys drawn from [0, keySpace) plus a few extremes
	ops      int
	startNow int64
	sameDue  bool // draw many deadlines from a few values to pile up keys per ms
	gentle   bool // advance in small steps so large live sets build up
}

func runProperty(t *testing.T, seed uint64, cfg propConfig) {
	r := rand.New(rand.NewPCG(seed, 1))
	h := newHarness(t, cfg.startNow, seed)
	key := func() uint64 {
		if r.IntN(50) == 0 {
			return []uint64{0, 1, math.MaxUint64, math.MaxUint64 - 1}[r.IntN(4)]
		}
		return r.Uint64N(cfg.keySpace)
	}
	due := func() int64 {
		if cfg.sameDue && r.IntN(4) != 0 {
			// A few future ms shared by many keys, so whole batches
			// are sorted at once.
			return satAdd(h.ref.clock/1000*1000, int64(1+r.IntN(3))*1000)
		}
		return genDue(r, h.ref.clock)
	}
	for range cfg.ops {
		switch op := r.IntN(100); {
		case op < 40:
			h.add(key(), due())
		case op < 50 && len(h.ref.sorted) > 0:
			// Reschedule a live key.
			h.add(h.ref.sorted[r.IntN(len(h.ref.sorted))].Key, due())
		case op < 58 && len(h.ref.sorted) > 0:
			h.cancel(h.ref.sorted[r.IntN(len(h.ref.sorted))].Key)
		case op < 63:
			h.cancel(key())
		case op < 90:
			if cfg.gentle && r.IntN(50) != 0 {
				h.advance(satAdd(h.ref.clock, r.Int64N(40)), genMax(r))
			} else {
				h.advance(genNow(r, h.ref.clock), genMax(r))
			}
		case op < 97:
			h.advanceToNext()
		case op < 99:
			h.rebuild()
		default:
			h.add(key(), h.ref.clock)
		}
	}
	h.rebuild()
	h.drainAll(1 + r.IntN(5))
}

// TestWheelMatchesModel runs random interleavings of Add, reschedule,
// Cancel and Advance (with random max) against the sorted-slice model, with
// wheels rebuilt from the live set at random points receiving the same
// operations.
func TestWheelMatchesModel(t *testing.T) {
	configs := []struct {
		name string
		cfg  propConfig
	}{
		{"small-keys", propConfig{keySpace: 40, ops: 3000}},
		{"wide-keys", propConfig{keySpace: 1 << 40, ops: 3000, startNow: 1_700_000_000_000}},
		{"piles", propConfig{keySpace: 600, ops: 4000, startNow: -12345, sameDue: true, gentle: true}},
		{"gentle", propConfig{keySpace: 5000, ops: 4000, startNow: 987_654_321, gentle: true}},
		{"near-max", propConfig{keySpace: 100, ops: 2000, startNow: math.MaxInt64 - 1<<30}},
		{"near-min", propConfig{keySpace: 100, ops: 2000, startNow: math.MinInt64}},
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			for seed := uint64(1); seed <= 40; seed++ {
				runProperty(t, seed, c.cfg)
				if t.Failed() {
					t.Fatalf("seed %d", seed)
				}
			}
		})
	}
}

// TestRebuildMatchesIncremental builds a wheel with heavy churn (cancels,
// reschedules, capped partial drains), then checks that a wheel rebuilt from
// its live set returns the identical future sequence, drained with
// different caps and different clock steps on each side.
func TestRebuildMatchesIncremental(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		r := rand.New(rand.NewPCG(seed, 2))
		w := NewWheel(1000)
		live := map[uint64]int64{}
		for range 5000 {
			k := r.Uint64N(800)
			switch r.IntN(10) {
			case 0, 1:
				w.Cancel(k)
				delete(live, k)
			case 2:
				for _, e := range w.Advance(w.NowMs()+r.Int64N(300), 1+r.IntN(3), nil) {
					delete(live, e.Key)
				}
			default:
				d := genDue(r, w.NowMs())
				w.Add(k, d)
				live[k] = d
			}
		}
		// Snapshot in key order (any order must do).
		keys := make([]uint64, 0, len(live))
		for k := range live {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		fresh := NewWheel(w.NowMs())
		for i := len(keys) - 1; i >= 0; i-- {
			fresh.Add(keys[i], live[keys[i]])
		}
		if fresh.Len() != w.Len() {
			t.Fatalf("seed %d: Len %d vs %d", seed, fresh.Len(), w.Len())
		}
		// Drain both to the end of time with unrelated step patterns; the
		// concatenated sequences must be identical.
		var a, b []Expired
		now := w.NowMs()
		for w.Len() > 0 {
			if r.IntN(20) == 0 {
				now = satAdd(now, int64(r.Uint64()>>1))
			} else {
				now = satAdd(now, r.Int64N(1<<r.IntN(40)+1))
			}
			a = w.Advance(now, 1+r.IntN(4), a)
		}
		for fresh.Len() > 0 {
			b = fresh.Advance(math.MaxInt64, 7, b)
		}
		if !slices.EqualFunc(a, b, func(x, y Expired) bool { return x == y }) {
			t.Fatalf("seed %d: sequences differ (%d vs %d keys)", seed, len(a), len(b))
		}
		if !slices.IsSortedFunc(a, cmpExpired) {
			t.Fatalf("seed %d: sequence not sorted", seed)
		}
	}
}

func expect(t *testing.T, got []Expired, want ...Expired) {
	t.Helper()
	if len(want) == 0 && len(got) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
}

func TestEmptyWheel(t *testing.T) {
	for _, now := range []int64{0, -5, math.MinInt64, math.MaxInt64} {
		w := NewWheel(now)
		if w.Len() != 0 || w.NowMs() != now {
			t.Fatal("fresh wheel not empty")
		}
		if _, ok := w.NextDueMs(); ok {
			t.Fatal("NextDueMs ok on empty wheel")
		}
		if w.Cancel(7) {
			t.Fatal("Cancel on empty wheel")
		}
		if _, ok := w.Due(7); ok {
			t.Fatal("Due on empty wheel")
		}
		expect(t, w.Advance(math.MaxInt64, 0, nil))
		expect(t, w.Advance(math.MinInt64, 3, nil))
		if w.NowMs() != math.MaxInt64 {
			t.Fatal("clock did not move to MaxInt64")
		}
		if err := checkInvariants(w); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPastAndNow(t *testing.T) {
	w := NewWheel(1000)
	w.Add(3, 1000) // == now
	w.Add(1, 5)    // past
	w.Add(2, -7)   // negative, past
	w.Add(4, 1001) // 1 ms ahead
	if d, _ := w.NextDueMs(); d != -7 {
		t.Fatalf("NextDueMs %d want -7", d)
	}
	// Advance to an earlier time: clock stays at 1000, due keys still fire.
	expect(t, w.Advance(10, 0, nil), Expired{2, -7}, Expired{1, 5}, Expired{3, 1000})
	if w.NowMs() != 1000 {
		t.Fatalf("clock moved backwards to %d", w.NowMs())
	}
	expect(t, w.Advance(1000, 0, nil))
	expect(t, w.Advance(1001, 0, nil), Expired{4, 1001})
}

func TestOneMsAndBoundaries(t *testing.T) {
	starts := []int64{0, 1, 63, 64, 4095, 1_700_000_000_123, -1, -64, -1_000_003,
		math.MinInt64, math.MinInt64 + 77, math.MaxInt64 - 1<<40}
	for _, now := range starts {
		for k := 0; k < 63; k++ {
			for _, adj := range []int64{-1, 0, 1} {
				d := satAdd(satAdd(now, int64(1)<<k), adj)
				if d <= now+1 {
					continue
				}
				w := NewWheel(now)
				w.Add(9, d)
				w.Add(10, now+1)
				if nd, _ := w.NextDueMs(); nd != now+1 {
					t.Fatalf("now %d: NextDueMs %d want %d", now, nd, now+1)
				}
				expect(t, w.Advance(now, 0, nil))
				expect(t, w.Advance(now+1, 0, nil), Expired{10, now + 1})
				if nd, _ := w.NextDueMs(); nd > d {
					t.Fatalf("now %d due %d: NextDueMs %d later", now, d, nd)
				}
				expect(t, w.Advance(d-1, 0, nil))
				if err := checkInvariants(w); err != nil {
					t.Fatal(err)
				}
				// After advancing to the ms before, the deadline is in
				// the 1 ms level, so NextDueMs is exact.
				if nd, _ := w.NextDueMs(); nd != d {
					t.Fatalf("now %d due %d: NextDueMs %d not exact at d-1", now, d, nd)
				}
				expect(t, w.Advance(d, 0, nil), Expired{9, d})
				if w.Len() != 0 {
					t.Fatal("not empty")
				}
			}
		}
	}
}

func TestFarFuture(t *testing.T) {
	const now = int64(1_700_000_000_000)
	w := NewWheel(now)
	dues := map[uint64]int64{
		1: now + 30*day,
		2: now + 30*day + 1,
		3: now + 31*day,
		4: now + 1000*day,
		5: now + 100*365*day,
		6: math.MaxInt64,
		7: math.MaxInt64 - 1,
	}
	for k, d := range dues { // insertion order must not matter
		w.Add(k, d)
	}
	for _, k := range []uint64{1, 2, 3, 4, 5, 7, 6} { // deadline order
		// Each step jumps straight to the ms before the next deadline.
		d := dues[k]
		expect(t, w.Advance(d-1, 0, nil))
		expect(t, w.Advance(d, 0, nil), Expired{k, d})
	}
}

func TestExtremeOrdering(t *testing.T) {
	w := NewWheel(math.MinInt64)
	w.Add(5, math.MaxInt64)
	w.Add(4, math.MinInt64)
	w.Add(3, math.MinInt64+1)
	w.Add(2, 0)
	w.Add(1, math.MaxInt64)
	expect(t, w.Advance(math.MinInt64, 0, nil), Expired{4, math.MinInt64})
	expect(t, w.Advance(math.MaxInt64-1, 0, nil), Expired{3, math.MinInt64 + 1}, Expired{2, 0})
	if nd, _ := w.NextDueMs(); nd != math.MaxInt64 {
		t.Fatalf("NextDueMs %d", nd)
	}
	expect(t, w.Advance(math.MaxInt64, 1, nil), Expired{1, math.MaxInt64})
	expect(t, w.Advance(math.MaxInt64, 1, nil), Expired{5, math.MaxInt64})
	// A clock at MaxInt64 still accepts and fires everything.
	w.Add(9, math.MaxInt64)
	w.Add(8, 12)
	expect(t, w.Advance(0, 0, nil), Expired{8, 12}, Expired{9, math.MaxInt64})
}

// TestClockJump spreads keys over 60 days and jumps years ahead, both in
// one uncapped Advance and in capped steps, checking order and that the
// wheel processes lazily under a cap.
func TestClockJump(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	build := func() (*Wheel, []Expired) {
		w := NewWheel(0)
		var all []Expired
		for k := uint64(0); k < 5000; k++ {
			d := r.Int64N(60 * day)
			if k%10 == 0 {
				d = 30 * day // a pile in one ms
			}
			w.Add(k, d)
			all = append(all, Expired{k, d})
		}
		slices.SortFunc(all, cmpExpired)
		return w, all
	}
	w, all := build()
	expect(t, w.Advance(200*365*day, 0, nil), all...)
	w, all = build()
	var got []Expired
	for w.Len() > 0 {
		before := len(got)
		got = w.Advance(200*365*day, 13, got)
		if len(got)-before > 13 {
			t.Fatal("cap exceeded")
		}
		if err := checkInvariants(w); err != nil {
			t.Fatal(err)
		}
	}
	expect(t, got, all...)
	// Jumping across empty time is cheap: nothing to do but the clock.
	w = NewWheel(0)
	w.Add(1, 10*365*day)
	for i := int64(1); i < 1000; i++ {
		expect(t, w.Advance(i*day, 0, nil))
	}
	expect(t, w.Advance(10*365*day, 0, nil), Expired{1, 10 * 365 * day})
}

// TestCapLeftoversAndLateAdds checks that keys left over by max come first
// and interleave correctly with keys added afterwards at or before the
// clock, and that cancelling or rescheduling leftovers works.
func TestCapLeftoversAndLateAdds(t *testing.T) {
	w := NewWheel(0)
	for k := uint64(1); k <= 10; k++ {
		w.Add(k, 100)
	}
	w.Add(50, 101)
	w.Add(51, 150)
	expect(t, w.Advance(120, 3, nil), Expired{1, 100}, Expired{2, 100}, Expired{3, 100})
	w.Add(0, 100)  // same ms as leftovers, smaller key
	w.Add(20, 99)  // before the leftovers
	w.Add(21, 100) // same ms, larger key
	w.Add(22, 110) // after the cursor, before the clock
	w.Cancel(5)    // a leftover in the ready list
	w.Add(6, 101)  // reschedule a leftover
	w.Add(51, 100) // reschedule a future key into the past
	if nd, _ := w.NextDueMs(); nd != 99 {
		t.Fatalf("NextDueMs %d want 99", nd)
	}
	if err := checkInvariants(w); err != nil {
		t.Fatal(err)
	}
	expect(t, w.Advance(0, 4, nil), Expired{20, 99}, Expired{0, 100}, Expired{4, 100}, Expired{7, 100})
	expect(t, w.Advance(0, 0, nil),
		Expired{8, 100}, Expired{9, 100}, Expired{10, 100}, Expired{21, 100}, Expired{51, 100},
		Expired{6, 101}, Expired{50, 101}, Expired{22, 110})
	if w.Len() != 0 {
		t.Fatalf("Len %d", w.Len())
	}
}

// TestRebuildWithOverdueBacklog models a snapshot taken while a capped
// drain was behind: the rebuilt wheel holds every lease as overdue.
func TestRebuildWithOverdueBacklog(t *testing.T) {
	w := NewWheel(0)
	r := rand.New(rand.NewPCG(3, 3))
	for k := uint64(0); k < 3000; k++ {
		w.Add(k*7919%3001, r.Int64N(5000))
	}
	w.Advance(10_000, 100, nil)
	fresh := NewWheel(w.NowMs())
	live := w.Advance(math.MinInt64, 0, nil)
	// w is drained now; rebuild two wheels from the captured live set in
	// opposite orders and compare them with each other.
	other := NewWheel(w.NowMs())
	for i := range live {
		fresh.Add(live[i].Key, live[i].DueMs)
		other.Add(live[len(live)-1-i].Key, live[len(live)-1-i].DueMs)
	}
	var a, b []Expired
	for fresh.Len() > 0 {
		a = fresh.Advance(0, 17, a)
	}
	b = other.Advance(0, 0, b)
	expect(t, a, live...)
	expect(t, b, live...)
}

func TestDueAndReschedule(t *testing.T) {
	w := NewWheel(0)
	w.Add(1, 500)
	if d, ok := w.Due(1); !ok || d != 500 {
		t.Fatal("Due after Add")
	}
	w.Add(1, 500) // same deadline: no-op
	w.Add(1, 70_000)
	w.Add(1, 20)
	if d, _ := w.Due(1); d != 20 {
		t.Fatal("Due after reschedule")
	}
	expect(t, w.Advance(19, 0, nil))
	w.Add(1, 19) // reschedule into the past
	expect(t, w.Advance(19, 0, nil), Expired{1, 19})
	if _, ok := w.Due(1); ok {
		t.Fatal("Due after expiry")
	}
	if w.Cancel(1) {
		t.Fatal("Cancel after expiry")
	}
}

// TestSlabReuse checks that churn reuses cells instead of growing the slab.
func TestSlabReuse(t *testing.T) {
	w := NewWheel(0)
	for i := range 100_000 {
		k := uint64(i % 1000)
		w.Add(k, int64(i)+1000)
		if i%2 == 0 {
			w.Cancel(uint64((i + 500) % 1000))
		}
		w.Advance(int64(i), 0, nil)
	}
	if n := len(w.entries); n > 1001 {
		t.Fatalf("slab grew to %d cells for at most 1000 live keys", n)
	}
	if err := checkInvariants(w); err != nil {
		t.Fatal(err)
	}
}

func TestInsertMatchesAdd(t *testing.T) {
	a, b := NewWheel(0), NewWheel(0)
	for k := uint64(1); k <= 1000; k++ {
		due := int64(k*7919) % 5000
		a.Add(k, due)
		b.Insert(k, due)
	}
	ea := a.Advance(5000, 0, nil)
	eb := b.Advance(5000, 0, nil)
	if len(ea) != 1000 || len(ea) != len(eb) {
		t.Fatalf("%d and %d expired, want 1000", len(ea), len(eb))
	}
	for i := range ea {
		if ea[i] != eb[i] {
			t.Fatalf("expiry %d: Add gave %+v, Insert %+v", i, ea[i], eb[i])
		}
	}
	b.Insert(1, 10)
	defer func() {
		if recover() == nil {
			t.Fatal("Insert of a scheduled key did not panic")
		}
	}()
	b.Insert(1, 20)
}
