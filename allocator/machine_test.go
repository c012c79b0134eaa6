package allocator

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
)

// world drives a Machine with random commands and checks invariants from
// the outside (results) and the inside (the machine's records).
type world struct {
	t       *testing.T
	m       *Machine
	rng     *rand.Rand
	nowMs   int64
	pools   []string
	buyers  []string
	ids     []uint64 // reservations handed out
	log     []entry  // everything applied, for replay
	replays map[string]Result
	// keysExpire: the config forgets keys within the test, so a reused
	// key is not necessarily a replay.
	keysExpire bool
	// What forgotten confirmed reservations sold.
	forgottenSold  map[string]int64
	forgottenUsage map[usageKey]int64
	idemCmds       map[string]Command
}

// usageKey names one buyer's usage of one pool in the test's own ledger.
type usageKey struct{ buyer, pool string }

type entry struct {
	nowMs int64
	cmds  []Command
}

func newWorld(t *testing.T, seed uint64, cfg Config) *world {
	w := &world{
		t: t, m: New(cfg), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		nowMs: 1_700_000_000_000, replays: map[string]Result{}, idemCmds: map[string]Command{},
		forgottenSold: map[string]int64{}, forgottenUsage: map[usageKey]int64{},
	}
	for i := range 4 {
		w.pools = append(w.pools, fmt.Sprintf("pool-%d", i))
	}
	for i := range 12 {
		w.buyers = append(w.buyers, fmt.Sprintf("u-%d", i))
	}
	return w
}

func (w *world) randomCommand() Command {
	r := w.rng
	pick := func(ids []uint64) uint64 {
		if len(ids) == 0 || r.IntN(20) == 0 {
			return uint64(r.IntN(1000) + 1) // often unknown
		}
		return ids[r.IntN(len(ids))]
	}
	switch k := r.IntN(100); {
	case k < 6:
		cfg := DefaultPoolConfig(int64(r.IntN(40)))
		cfg.PerBuyerLimit = int64(r.IntN(4))
		cfg.HoldTTLMs = int64(1 + r.IntN(3000))
		cfg.MaxHoldTTLMs = cfg.HoldTTLMs + int64(r.IntN(5000))
		cfg.MaxExtensions = int64(r.IntN(3))
		if r.IntN(2) == 0 {
			cfg.Waitlist = WaitlistConfig{Enabled: true, OfferTTLMs: int64(1 + r.IntN(2000)), WaitTTLMs: int64(1 + r.IntN(6000))}
		}
		if r.IntN(4) == 0 {
			// A draw opening soon for a short window.
			open := w.nowMs + int64(r.IntN(1500)) - 500
			cfg.Mode = ModeDraw
			cfg.Draw = DrawConfig{OpensAtMs: open, ClosesAtMs: open + 1 + int64(r.IntN(3000)), Seed: fmt.Sprint(r.IntN(3))}
		}
		cfg.Demand.WarmRPS = int64(1 + r.IntN(2))
		cfg.Demand.HotRPS = cfg.Demand.WarmRPS + int64(r.IntN(3)) // pools turn hot and cool: tables move
		return Command{Kind: KindPutPool, Pool: w.pools[r.IntN(len(w.pools))], Config: cfg}
	case k < 10:
		return Command{Kind: KindAdjustPool, Pool: w.pools[r.IntN(len(w.pools))], Delta: int64(r.IntN(21) - 10)}
	case k < 55:
		c := Command{Kind: KindReserve, Buyer: w.buyers[r.IntN(len(w.buyers))], Partial: r.IntN(3) == 0}
		for range 1 + r.IntN(3) {
			c.Lines = append(c.Lines, LineRequest{Pool: w.pools[r.IntN(len(w.pools))], Qty: int64(1 + r.IntN(3))})
		}
		if r.IntN(2) == 0 {
			c.TTLMs = int64(1 + r.IntN(4000))
		}
		if len(c.Lines) == 1 && r.IntN(3) == 0 {
			c.Wait = true
		}
		return c
	case k < 72:
		return Command{Kind: KindConfirm, Reservation: pick(w.ids)}
	case k < 87:
		return Command{Kind: KindRelease, Reservation: pick(w.ids)}
	case k < 95:
		return Command{Kind: KindExtend, Reservation: pick(w.ids), TTLMs: int64(1 + r.IntN(3000))}
	default:
		return Command{Kind: KindTick}
	}
}

// step applies one entry of 1-4 random commands, some idempotent, some
// replays of earlier idempotent commands, and checks everything.
func (w *world) step() {
	w.nowMs += int64(w.rng.IntN(400))
	if w.rng.IntN(50) == 0 {
		w.nowMs -= int64(w.rng.IntN(5000)) // a leader whose clock went back
	}
	var cmds []Command
	for range 1 + w.rng.IntN(4) {
		if len(w.idemCmds) > 0 && w.rng.IntN(10) == 0 {
			// Replay a remembered idempotent command (keys never expire
			// within these tests).
			key := fmt.Sprintf("k-%d", w.rng.IntN(len(w.idemCmds)))
			if c, ok := w.idemCmds[key]; ok {
				cmds = append(cmds, c)
				continue
			}
		}
		c := w.randomCommand()
		if c.Kind != KindTick && w.rng.IntN(4) == 0 {
			c.IdemKey = fmt.Sprintf("k-%d", len(w.idemCmds))
			c.ReqHash[0] = byte(len(w.idemCmds))
			c.ReqHash[1] = byte(c.Kind)
			w.idemCmds[c.IdemKey] = c
		}
		cmds = append(cmds, c)
	}
	before := w.m.clockMs
	confirmed := map[uint64]*reservation{}
	w.m.res.each(func(r *reservation) {
		if r.state == StateConfirmed {
			confirmed[r.id] = r
		}
	})
	results := w.m.Apply(w.nowMs, cmds, nil)
	for id, r := range confirmed {
		if w.m.res.get(id) == nil { // forgotten after RetainFinishedMs: its sale stays
			for _, l := range r.lines {
				if l.state == LineSold {
					w.forgottenSold[l.pool.ID] += l.qty
					w.forgottenUsage[usageKey{r.buyer, l.pool.ID}] += l.qty
				}
			}
		}
	}
	w.log = append(w.log, entry{w.nowMs, cmds})
	if w.m.clockMs < before {
		w.t.Fatalf("clock went back: %d -> %d", before, w.m.clockMs)
	}
	if before != 0 && w.m.clockMs-before > w.m.cfg.MaxClockStepMs {
		w.t.Fatalf("clock stepped %d ms in one entry (max %d)", w.m.clockMs-before, w.m.cfg.MaxClockStepMs)
	}
	for i, res := range results {
		c := cmds[i]
		if c.IdemKey != "" {
			if first, ok := w.replays[c.IdemKey]; ok && !w.keysExpire {
				if !res.Replayed || !sameResult(first, res) {
					w.t.Fatalf("replay of %s differs:\nfirst %+v\nagain %+v", c.IdemKey, first, res)
				}
			} else {
				w.replays[c.IdemKey] = res
			}
		}
		if res.Err == nil && res.Reservation != nil && c.Kind == KindReserve && !res.Replayed {
			w.ids = append(w.ids, res.Reservation.ID)
			if !reconfiguredAfter(cmds[i+1:]) {
				w.checkGrant(&c, res.Reservation)
			}
		}
	}
	w.checkInvariants()
}

// reconfiguredAfter: a later PutPool in the same entry may lower a limit
// below what an earlier grant legitimately took.
func reconfiguredAfter(cmds []Command) bool {
	for _, c := range cmds {
		if c.Kind == KindPutPool {
			return true
		}
	}
	return false
}

func sameResult(a, b Result) bool {
	a.Replayed, b.Replayed = false, false
	return fmt.Sprintf("%+v %+v %+v %+v", a.Err, a.Pool, a.Reservation, a.Created) ==
		fmt.Sprintf("%+v %+v %+v %+v", b.Err, b.Pool, b.Reservation, b.Created)
}

// checkGrant: right after a grant no buyer is over its limit on any pool
// the grant touched.
func (w *world) checkGrant(c *Command, v *ReservationView) {
	for _, l := range v.Lines {
		if l.State != LineHeld {
			continue
		}
		p := w.m.pools[l.Pool]
		if lim := p.Config.PerBuyerLimit; lim > 0 {
			if u := w.m.pools[l.Pool].usage[c.Buyer]; u > lim {
				w.t.Fatalf("buyer %s holds %d of %s, limit %d", c.Buyer, u, l.Pool, lim)
			}
		}
	}
}

func (w *world) checkInvariants() {
	m := w.m
	var queued int64
	for _, p := range m.pools {
		queued += int64(p.waitq.len())
	}
	if queued != m.waiting {
		w.t.Fatalf("%d reservations in waitlists, the running count says %d", queued, m.waiting)
	}
	held := map[string]int64{}
	sold := maps.Clone(w.forgottenSold)
	usage := maps.Clone(w.forgottenUsage)
	m.res.each(func(r *reservation) {
		if got := m.res.get(r.id); got != r {
			w.t.Fatalf("reservation %d not found under its id", r.id)
		}
		var nSold, nReturned int
		for _, l := range r.lines {
			switch l.state {
			case LineHeld:
				if r.state != StateActive {
					w.t.Fatalf("%s reservation %d still holds units", r.state, r.id)
				}
				held[l.pool.ID] += l.qty
				usage[usageKey{r.buyer, l.pool.ID}] += l.qty
			case LineSold:
				nSold++
				if r.state != StateConfirmed {
					w.t.Fatalf("%s reservation %d has sold lines", r.state, r.id)
				}
				sold[l.pool.ID] += l.qty
				usage[usageKey{r.buyer, l.pool.ID}] += l.qty
			case LineReturned:
				nReturned++
			case LineWaiting:
				if r.state != StateWaiting {
					w.t.Fatalf("%s reservation %d has a waiting line", r.state, r.id)
				}
				usage[usageKey{r.buyer, l.pool.ID}] += l.qty
			}
		}
		if nSold > 0 && nReturned > 0 {
			w.t.Fatalf("reservation %d is both sold and returned", r.id)
		}
		due, ok := m.deadline(r)
		switch {
		case !ok:
			w.t.Fatalf("reservation %d has no deadline", r.id)
		case (r.state == StateActive || r.state == StateWaiting) && due != r.expiresAtMs:
			w.t.Fatalf("%s reservation %d: wheel %d, expires %d", r.state, r.id, due, r.expiresAtMs)
		case r.state.Terminal() && due != r.finishedAtMs+m.cfg.RetainFinishedMs:
			w.t.Fatalf("finished reservation %d: wheel %d", r.id, due)
		}
		if r.state == StateActive && r.expiresAtMs > r.capMs {
			w.t.Fatalf("reservation %d expires past its cap", r.id)
		}
		if r.extensions > r.maxExtensions {
			w.t.Fatalf("reservation %d extended %d times, max %d", r.id, r.extensions, r.maxExtensions)
		}
		if r.state == StateActive && r.expiresAtMs <= m.clockMs && m.cfg.ReclaimPerEntry >= 1<<20 {
			w.t.Fatalf("reservation %d active past its expiry with an unbounded reclaim", r.id)
		}
	})
	for id, p := range m.pools {
		if p.Held != held[id] || p.Sold != sold[id] {
			w.t.Fatalf("pool %s: held %d sold %d, reservations say %d %d", id, p.Held, p.Sold, held[id], sold[id])
		}
		if p.Held+p.Sold+p.Available() != p.Config.OnHand || p.Available() < 0 {
			w.t.Fatalf("pool %s: held %d + sold %d + available %d != on_hand %d", id, p.Held, p.Sold, p.Available(), p.Config.OnHand)
		}
	}
	entries := 0
	for _, p := range m.pools {
		entries += len(p.usage)
		for buyer, u := range p.usage {
			if k := (usageKey{buyer, p.ID}); usage[k] != u {
				w.t.Fatalf("usage %v = %d, reservations say %d", k, u, usage[k])
			}
		}
	}
	if len(usage) != entries {
		w.t.Fatalf("usage has %d entries, reservations say %d", entries, len(usage))
	}
	var active int64
	m.res.each(func(r *reservation) {
		if r.state == StateActive {
			active++
		}
	})
	if active != m.stats.ActiveHolds {
		w.t.Fatalf("active holds %d, counted %d", m.stats.ActiveHolds, active)
	}
	draws, waiting := 0, 0
	for _, p := range m.pools {
		if p.draw != nil {
			draws++
			for i, r := range p.draw.entrants {
				if r == nil {
					continue
				}
				waiting++
				if r.where != waitInDraw || r.ticket != uint64(i) || p.draw.byBuyer[r.buyer] != r || r.state != StateWaiting {
					w.t.Fatalf("draw entry %d of %s inconsistent", r.id, p.ID)
				}
			}
		}
		// The queue: exact positions 1..n in order, and the head does not
		// fit (else it would have been served).
		pos := int64(0)
		var qty int64
		p.waitq.each(func(r *reservation) {
			pos++
			waiting++
			qty += r.lines[0].qty
			if got := p.waitq.position(r); got != pos || r.where != waitInQueue || r.state != StateWaiting {
				w.t.Fatalf("pool %s: reservation %d at position %d reports %d", p.ID, r.id, pos, got)
			}
		})
		if pos != int64(p.waitq.len()) || qty != p.waitq.qty {
			w.t.Fatalf("pool %s: queue counts %d/%d, walked %d/%d", p.ID, p.waitq.len(), p.waitq.qty, pos, qty)
		}
		if h := p.waitq.peek(); h != nil && h.lines[0].qty <= p.Available() {
			for _, c := range w.log[len(w.log)-1].cmds {
				w.t.Logf("last entry: %+v", c)
			}
			w.t.Fatalf("pool %s: head %d wants %d with %d available, unserved", p.ID, h.id, h.lines[0].qty, p.Available())
		}
	}
	m.res.each(func(r *reservation) {
		if r.state == StateWaiting {
			waiting--
		}
	})
	if waiting != 0 {
		w.t.Fatalf("%d waiting reservations are in no queue or draw (or twice)", -waiting)
	}
	if m.stats.QueueJumps != 0 {
		w.t.Fatalf("queue jumps: %d", m.stats.QueueJumps)
	}
	if m.leases() != m.res.len()+len(m.idem)+draws {
		w.t.Fatalf("tables hold %d leases for %d reservations, %d keys and %d draws", m.leases(), m.res.len(), len(m.idem), draws)
	}
}

func TestRandomCommandsKeepInvariants(t *testing.T) {
	cfgs := []Config{
		{ReclaimPerEntry: 1 << 20},
		{ReclaimPerEntry: 1, MaxClockStepMs: 50}, // bounded reclaim and a lagging clock
	}
	for ci, cfg := range cfgs {
		for seed := range uint64(40) {
			t.Run(fmt.Sprintf("cfg%d/seed%d", ci, seed), func(t *testing.T) {
				w := newWorld(t, seed, cfg)
				for range 800 {
					w.step()
				}
			})
		}
	}
}

// TestDeterminism applies one log to two machines, and to a third restored
// from a snapshot taken mid-log, and compares state hashes.
func TestDeterminism(t *testing.T) {
	for seed := range uint64(20) {
		cfg := Config{ReclaimPerEntry: 1 + int(seed%3)*2, RetainFinishedMs: 20_000, IdempotencyTTLMs: 30_000, MaxIdempotencyKeys: 50}
		w := newWorld(t, seed, cfg)
		w.keysExpire = true
		for range 1500 {
			w.step()
		}
		a, b := New(cfg), New(cfg)
		var restored *Machine
		mid := len(w.log) / 2
		for i, e := range w.log {
			a.Apply(e.nowMs, e.cmds, nil)
			b.Apply(e.nowMs, e.cmds, nil)
			if i == mid {
				restored = New(cfg)
				if err := restored.Restore(bytes.NewReader(a.Snapshot())); err != nil {
					t.Fatal(err)
				}
				if restored.StateHash() != a.StateHash() {
					t.Fatalf("seed %d: restored state differs at entry %d", seed, i)
				}
			}
			if i > mid {
				restored.Apply(e.nowMs, e.cmds, nil)
			}
		}
		ha, hb, hr, hw := a.StateHash(), b.StateHash(), restored.StateHash(), w.m.StateHash()
		if ha != hb || ha != hr || ha != hw {
			t.Fatalf("seed %d: state hashes differ: %x %x %x %x", seed, ha[:6], hb[:6], hr[:6], hw[:6])
		}
		if a.res.len() == 0 {
			t.Fatalf("seed %d: log left no reservations; the test proves little", seed)
		}
	}
}
