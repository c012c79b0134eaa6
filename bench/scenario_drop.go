package bench

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// dropScenario is a sneaker drop: many buyers, one pool of scarce units,
// a per-buyer limit, first come first served or a draw. Each buyer:
//
//  1. reads the product page (InStock) — the cart read of the
//     late-disappointment measure;
//  2. after 50-500 ms asks for one unit (with wait:true under --wait); a
//     share (--dupes) double-clicks: a second request right after, with
//     another idempotency key, which the per-buyer limit must refuse;
//  3. when granted: abandons with probability --abandon (the hold
//     expires) or confirms after a think time (--think-min..--think-max);
//  4. when queued (waitlist or draw) and the target is a HoldReader: polls
//     the hold every --poll until it is offered units (then as 3), it
//     expires, or its position is beyond --watch (the buyer gives up).
//     Draw entrants poll first once the draw has closed, spread over
//     --reveal.
type dropScenario struct{ o *options }

func (d *dropScenario) sessions() int { return d.o.buyers }

func (d *dropScenario) opsPerSession() float64 { return 2 + d.o.dupes }

func (d *dropScenario) defaultDrain() time.Duration {
	dr := d.o.thinkMax + d.o.holdTTL + 2*time.Second
	if d.o.mode == "draw" {
		dr += d.o.reveal + d.o.pollEvery
	}
	return dr
}

type dropBuyer struct {
	// mu guards the fields continuations change: a target that grants a
	// double click gives one buyer two concurrent chains.
	mu      sync.Mutex
	id      string
	entryAt time.Time // first reserve sent
	shownAt time.Time // last time the page showed the pool in stock
	holds   []string
	acked   []string
	granted int64
	won     bool // draw: active at the first poll after the close
	reveal  bool // draw: the first poll after the close answered
}

type dropRun struct {
	o        *options
	t        Target
	hr       HoldReader
	pool     PoolSpec
	draw     bool
	closesAt time.Time
	buyers   []dropBuyer
	// firstWait is when the harness first got a "waiting" answer for
	// fcfs --wait, or the draw's close: any fresh request sent after it and
	// granted jumped the queue.
	firstWait minTime
	// pending are the granted holds whose confirm was not acknowledged.
	pending pendingHolds
	c       *counters
	late    struct{ attempts, soldOut, disappointed atomic.Int64 }
}

// Counter indexes of a drop run.
const (
	dGranted = iota
	dOffers
	dConfirmed
	dConfirmExpired
	dAbandoned
	dWaiting
	dGaveUp
	dSoldOut
	dBuyerLimit
	dDupeGranted
	dJumps
	dPolls
)

func (d *dropScenario) newRun(env *runEnv) (scenarioRun, string) {
	o := d.o
	r := &dropRun{o: o, t: env.t, buyers: make([]dropBuyer, o.buyers),
		c: newCounters("granted", "offers", "confirmed", "confirm_expired", "abandoned", "waiting", "gave_up",
			"sold_out", "buyer_limit", "dupe_granted", "queue_jumps", "polls")}
	r.hr, _ = env.t.(HoldReader)
	r.pool = PoolSpec{ID: env.prefix + "-drop", OnHand: int64(o.units), PerBuyerLimit: int64(o.limit),
		HoldTTLMs: o.holdTTL.Milliseconds(), Waitlist: o.wait}
	for i := range r.buyers {
		r.buyers[i].id = env.prefix + "-b" + strconv.Itoa(i)
	}
	note := ""
	if o.mode == "draw" {
		r.draw = true
		// Entries from now until the arrival window ends (setup is short).
		r.closesAt = env.start.Add(o.duration + time.Second).Truncate(time.Millisecond)
		r.pool.Draw = &DrawSpec{OpensAt: env.start.Add(-time.Second), ClosesAt: r.closesAt, Seed: env.prefix}
		r.firstWait.observe(r.closesAt)
		if r.hr == nil {
			note = "the target cannot report hold states: draw results and waitlist offers are not observed"
		}
	} else if o.wait && r.hr == nil {
		note = "the target cannot report hold states: waitlist offers are not observed"
	}
	return r, note
}

func (r *dropRun) pools() []PoolSpec { return []PoolSpec{r.pool} }

func (r *dropRun) start(x *exec, i int) {
	b := &r.buyers[i]
	var in bool
	x.do("instock", func(ctx context.Context) (Outcome, error) {
		var err error
		in, err = r.t.InStock(ctx, r.pool.ID)
		return OK, err
	})
	if in {
		b.shownAt = time.Now()
	}
	x.after(x.uniform(50*time.Millisecond, 500*time.Millisecond), func(x *exec) { r.reserve(x, b, i) })
}

func (r *dropRun) reserveOnce(x *exec, b *dropBuyer, key string) (Hold, time.Time) {
	var h Hold
	sent := time.Now()
	x.do("reserve", func(ctx context.Context) (Outcome, error) {
		var err error
		h, err = r.t.Reserve(ctx, ReserveRequest{Buyer: b.id, Pool: r.pool.ID, Qty: 1,
			TTLMs: r.o.holdTTL.Milliseconds(), Wait: r.o.wait, IdemKey: key})
		return h.Outcome, err
	})
	if h.ID != "" {
		b.mu.Lock()
		b.holds = append(b.holds, h.ID)
		b.mu.Unlock()
	}
	return h, sent
}

func (r *dropRun) reserve(x *exec, b *dropBuyer, i int) {
	h, sent := r.reserveOnce(x, b, b.id+"-r1")
	b.entryAt = sent
	r.late.attempts.Add(1)
	r.afterReserve(x, b, h, sent, true)
	if x.chance(r.o.dupes) {
		h2, sent2 := r.reserveOnce(x, b, b.id+"-r2")
		if h2.Outcome == OK && h2.ID != h.ID {
			r.c.add(dDupeGranted, 1)
		}
		if h2.ID != h.ID || h.ID == "" {
			r.afterReserve(x, b, h2, sent2, false)
		}
	}
}

func (r *dropRun) afterReserve(x *exec, b *dropBuyer, h Hold, sent time.Time, first bool) {
	switch h.Outcome {
	case OK:
		if r.firstWait.before(sent) {
			r.c.add(dJumps, 1)
		}
		r.granted(x, b, h)
	case Waiting:
		r.c.add(dWaiting, 1)
		if !r.draw {
			r.firstWait.observe(time.Now())
		}
		if r.hr == nil {
			return
		}
		if r.draw && time.Now().Before(r.closesAt) {
			at := r.closesAt.Add(x.uniform(0, r.o.reveal))
			x.at(at, func(x *exec) { r.poll(x, b, h.ID) })
		} else {
			x.afterReal(x.uniform(r.o.pollEvery/2, r.o.pollEvery*3/2), func(x *exec) { r.poll(x, b, h.ID) })
		}
	case SoldOut:
		r.c.add(dSoldOut, 1)
		if first {
			r.late.soldOut.Add(1)
			if !b.shownAt.IsZero() && sent.Sub(b.shownAt) <= disappointWindow {
				r.late.disappointed.Add(1)
			}
		}
	case BuyerLimit:
		r.c.add(dBuyerLimit, 1)
	}
}

// granted: the buyer holds a unit (a fresh grant, a draw win or a
// waitlist offer).
func (r *dropRun) granted(x *exec, b *dropBuyer, h Hold) {
	b.mu.Lock()
	b.granted++
	b.mu.Unlock()
	r.c.add(dGranted, 1)
	r.pending.add(h.ID, h.ExpiresAt)
	if x.chance(r.o.abandon) {
		r.c.add(dAbandoned, 1)
		return
	}
	x.after(x.uniform(r.o.thinkMin, r.o.thinkMax), func(x *exec) {
		o := x.do("confirm", func(ctx context.Context) (Outcome, error) { return r.t.Confirm(ctx, h) })
		switch o {
		case OK:
			b.mu.Lock()
			b.acked = append(b.acked, h.ID)
			b.mu.Unlock()
			r.pending.confirmed(h.ID)
			r.c.add(dConfirmed, 1)
			return
		case Expired:
			r.c.add(dConfirmExpired, 1)
		}
	})
}

func (r *dropRun) poll(x *exec, b *dropBuyer, id string) {
	var st HoldStatus
	r.c.add(dPolls, 1)
	o := x.do("poll", func(ctx context.Context) (Outcome, error) {
		var err error
		st, err = r.hr.ReadHold(ctx, id)
		return OK, err
	})
	again := func() {
		x.afterReal(x.uniform(r.o.pollEvery/2, r.o.pollEvery*3/2), func(x *exec) { r.poll(x, b, id) })
	}
	if o != OK {
		again()
		return
	}
	b.mu.Lock()
	firstResult := r.draw && !b.reveal
	switch st.State {
	case HoldActive, HoldConfirmed:
		b.reveal, b.won = true, b.won || firstResult
	case HoldWaiting:
		b.reveal = b.reveal || st.Position > 0
	default:
		b.reveal = true
	}
	b.mu.Unlock()
	switch st.State {
	case HoldActive:
		if !firstResult {
			r.c.add(dOffers, 1)
		}
		r.granted(x, b, Hold{ID: id, Outcome: OK, ExpiresAt: st.ExpiresAt})
	case HoldWaiting:
		if st.Position == 0 { // a draw not closed yet on the target's clock
			again()
			return
		}
		if st.Position > int64(r.o.watch) {
			r.c.add(dGaveUp, 1)
			return
		}
		again()
	}
}

func (r *dropRun) finish(ctx context.Context, tr *TargetReport) {
	in := ledgerInput{pools: []PoolSpec{r.pool}, acked: map[string]int64{}, lastExpiry: r.pending.latest(), noWait: r.o.quickLedger}
	units := make([]int64, 0, len(r.buyers))
	var granted int64
	for i := range r.buyers {
		b := &r.buyers[i]
		in.holds = append(in.holds, b.holds...)
		for _, id := range b.acked {
			in.acked[id] = 1
		}
		if !b.entryAt.IsZero() {
			units = append(units, b.granted)
			granted += b.granted
		}
	}
	checkLedger(ctx, r.t, in, tr)

	f := &Fairness{Method: "fcfs: units granted per distinct buyer", Buyers: int64(len(units)), Units: granted, Jain: jain(units), QueueJumps: -1}
	if n := len(units); n > 0 {
		f.JainIdeal = min(1, float64(granted)/float64(n))
	}
	switch {
	case r.draw:
		f.Method = "draw: units granted per distinct buyer"
		f.QueueJumps = r.c.get(dJumps)
		f.JumpNote = "fresh grants sent after the draw closed, while losers wait"
		f.DecileWinRate, f.Entrants, f.Winners = r.deciles()
		if r.hr == nil {
			f.DecileWinRate = nil
		}
	case r.o.wait:
		f.QueueJumps = r.c.get(dJumps)
		f.JumpNote = "fresh grants sent after a request was acknowledged waiting"
	default:
		f.JumpNote = "no waitlist: a unit coming back may go to whoever asks next"
	}
	tr.Fairness = f
	tr.LateDisappointment = (&Disappointing{Attempts: r.late.attempts.Load(), FailedForStock: r.late.soldOut.Load(), Disappointed: r.late.disappointed.Load()}).finish()
	tr.Counters = r.c.export()
}

// deciles is the draw's win rate by entry-time decile among the entrants
// whose result the harness saw.
func (r *dropRun) deciles() ([]float64, int64, int64) {
	type entry struct {
		at  time.Time
		won bool
	}
	var es []entry
	var winners int64
	for i := range r.buyers {
		b := &r.buyers[i]
		if b.reveal && !b.entryAt.IsZero() && b.entryAt.Before(r.closesAt) {
			es = append(es, entry{b.entryAt, b.won})
			if b.won {
				winners++
			}
		}
	}
	if len(es) < 10 {
		return nil, int64(len(es)), winners
	}
	sort.Slice(es, func(i, j int) bool { return es[i].at.Before(es[j].at) })
	out := make([]float64, 10)
	for d := range 10 {
		lo, hi := d*len(es)/10, (d+1)*len(es)/10
		w := 0
		for _, e := range es[lo:hi] {
			if e.won {
				w++
			}
		}
		out[d] = float64(w) / float64(max(hi-lo, 1))
	}
	return out, int64(len(es)), winners
}

func (r *dropRun) String() string { return fmt.Sprintf("drop %s", r.pool.ID) }
