package allocator

import (
	"crypto/sha256"
	"math/bits"
	"math/rand/v2"
)

// Where a waiting reservation waits.
const (
	waitNone    = iota
	waitInQueue // in its pool's FIFO waitlist
	waitInDraw  // entered in its pool's open draw
)

// drawState is an open draw: its entries in entry order.
type drawState struct {
	entrants []*reservation // nil where an entrant left before the close
	byBuyer  map[string]*reservation
}

// compact drops withdrawn entries' slots once they are most of the list,
// keeping entry order and renumbering tickets, so memory follows the live
// entries however often buyers withdraw and re-enter.
func (d *drawState) compact() {
	dead := len(d.entrants) - len(d.byBuyer)
	if dead < 1024 || dead < len(d.entrants)/2 {
		return
	}
	live := d.entrants[:0]
	for _, r := range d.entrants {
		if r != nil {
			r.ticket = uint64(len(live))
			live = append(live, r)
		}
	}
	clear(d.entrants[len(live):])
	d.entrants = live
}

// tally accumulates what one request takes from each pool, so lines of one
// reservation on the same pool are checked together (a bundle cannot
// oversell). Requests have at most MaxLines lines: a linear scan is cheapest.
type tally struct {
	pool *Pool
	qty  int64 // units this request takes from pool
}

func findTally(ts []tally, p *Pool) *tally {
	for i := range ts {
		if ts[i].pool == p {
			return &ts[i]
		}
	}
	return nil
}

func (m *Machine) reserve(c *Command) Result {
	if !ValidID(c.Buyer) {
		return Result{Err: errorf(InvalidArgument, "bad buyer id")}
	}
	if len(c.Lines) == 0 || len(c.Lines) > MaxLines {
		return Result{Err: errorf(InvalidArgument, "a reservation has 1 to %d lines", MaxLines)}
	}
	// Small requests work in stack buffers.
	var poolBuf [8]*Pool
	var stateBuf [8]LineState
	pools := poolBuf[:0]
	if len(c.Lines) > len(poolBuf) {
		pools = make([]*Pool, 0, len(c.Lines))
	}
	minHold, minCap, minExt := int64(MaxTTLMs), int64(MaxTTLMs), int64(MaxExtensions)
	for _, l := range c.Lines {
		if l.Qty < 1 || l.Qty > MaxQty {
			return Result{Err: errorf(InvalidArgument, "qty must be between 1 and %d", MaxQty)}
		}
		p := m.pools[l.Pool]
		if p == nil {
			return Result{Err: errorf(NotFound, "no pool %q", l.Pool)}
		}
		pools = append(pools, p)
		minHold = min(minHold, p.Config.HoldTTLMs)
		minCap = min(minCap, p.Config.MaxHoldTTLMs)
		minExt = min(minExt, p.Config.MaxExtensions)
	}
	if c.Wait && (len(c.Lines) != 1 || !pools[0].Config.Waitlist.Enabled) {
		return Result{Err: errorf(InvalidArgument, "wait needs a single line on a pool with a waitlist")}
	}
	ttl := c.TTLMs
	if ttl == 0 {
		ttl = minHold
	}
	if ttl < MinTTLMs || ttl > minCap {
		return Result{Err: errorf(InvalidArgument, "ttl_ms must be between %d and the pools' max_hold_ttl_ms %d", MinTTLMs, minCap)}
	}
	for _, p := range pools {
		// A hot pool reclaims its own due holds first, so a request never
		// waits on a backlog of someone else's expiries.
		if p.table != 0 {
			m.reclaim(m.tableByID[p.table], m.cfg.ReclaimPerEntry)
		}
		// A draw whose close is due closes now (the touch rule).
		if p.draw != nil && m.clockMs >= p.Config.Draw.ClosesAtMs {
			m.closeDraw(p)
		}
	}
	if p := pools[0]; p.draw != nil {
		if len(c.Lines) != 1 {
			return Result{Err: errorf(InvalidArgument, "a draw entry has exactly one line")}
		}
		return m.enterDraw(c, p)
	}
	if n := m.active[c.Buyer]; n >= int32(m.cfg.MaxActivePerBuyer) {
		m.stats.Refused++
		return Result{Err: &Error{Code: BuyerLimit, Message: "the buyer has too many active reservations", Lines: linesIn(c, LineBuyerLimit)}}
	}

	states := stateBuf[:0]
	if len(c.Lines) > len(stateBuf) {
		states = make([]LineState, 0, len(c.Lines))
	}
	states = states[:len(c.Lines)]
	held, firstFail := classify(c, pools, states)
	for i, p := range pools {
		m.recordDemand(p, states[i] != LineHeld && states[i] != LineWaiting)
	}
	if firstFail >= 0 && (!c.Partial || held == 0) {
		m.stats.Refused++
		return Result{Err: refusal(c, states, firstFail)}
	}
	if m.nextID+1 >= maxSeq {
		return Result{Err: errorf(InvalidState, "reservation ids exhausted")}
	}
	m.nextID++
	r := &reservation{
		id:            m.nextID,
		buyer:         c.Buyer,
		state:         StateActive,
		createdAtMs:   m.clockMs,
		expiresAtMs:   m.clockMs + ttl,
		capMs:         m.clockMs + minCap,
		maxExtensions: minExt,
		table:         pools[0].table,
	}
	r.setLines(len(c.Lines))
	for i, l := range c.Lines {
		p := pools[i]
		r.lines[i] = line{pool: p, qty: l.Qty, state: states[i]}
		if states[i] == LineHeld || states[i] == LineWaiting {
			m.addUsage(p, c.Buyer, l.Qty)
		}
		if states[i] == LineHeld {
			m.grant(p, l.Qty, nil)
		}
	}
	m.res.put(r)
	m.active[c.Buyer]++
	if states[0] == LineWaiting {
		// Queued: it waits wait_ttl_ms for units to come back.
		r.state = StateWaiting
		r.expiresAtMs = m.clockMs + pools[0].Config.Waitlist.WaitTTLMs
		r.where = waitInQueue
		pools[0].waitq.push(r)
		m.waiting++
		m.stats.Queued++
	} else {
		m.stats.Reserved++
		m.stats.ActiveHolds++
	}
	m.scheduleNew(r, r.expiresAtMs)
	return Result{Reservation: m.view(r)}
}

// classify decides, changing nothing, what each line of reserve command c
// would get from pools (pools[i] is line i's pool) in the current state:
// states[i] is held, waiting or why it was refused. It returns how many
// lines would be held or queued and the first refused line, or -1.
func classify(c *Command, pools []*Pool, states []LineState) (held, firstFail int) {
	var tallyBuf [8]tally // what earlier lines of c take from each pool
	tallies := tallyBuf[:0]
	firstFail = -1
	for i, l := range c.Lines {
		p := pools[i]
		t := findTally(tallies, p)
		if t == nil {
			tallies = append(tallies, tally{pool: p})
			t = &tallies[len(tallies)-1]
		}
		limit := p.Config.PerBuyerLimit
		switch {
		case p.draw != nil:
			states[i] = LineNotOpen // a multi-line request touching an open draw
		case limit > 0 && p.usage[c.Buyer]+t.qty+l.Qty > limit:
			states[i] = LineBuyerLimit
		case p.waitq.len() > 0 || l.Qty > p.Available()-t.qty:
			// Units that come back belong to the queue first: a fresh
			// request never takes them from a waiting buyer.
			states[i] = LineSoldOut
			if c.Wait && p.waitq.len() < MaxWaiting {
				states[i] = LineWaiting // waiting holds nothing
				held++
				continue
			}
		default:
			states[i] = LineHeld
			t.qty += l.Qty
			held++
			continue
		}
		if firstFail < 0 {
			firstFail = i
		}
	}
	return held, firstFail
}

// refusal is the error of a request classify refused: the first refused
// line's reason, and every line's state (a line that would have fit on its
// own is "available": nothing was held).
func refusal(c *Command, states []LineState, firstFail int) *Error {
	code := SoldOut
	switch states[firstFail] {
	case LineBuyerLimit:
		code = BuyerLimit
	case LineNotOpen:
		code = NotOpen
	}
	e := &Error{Code: code, Message: refusalMessage(code), Lines: make([]LineView, len(c.Lines))}
	for i, l := range c.Lines {
		s := states[i]
		if s == LineHeld {
			s = LineAvailable
		}
		e.Lines[i] = LineView{Pool: l.Pool, Qty: l.Qty, State: s}
	}
	return e
}

func refusalMessage(c Code) string {
	switch c {
	case BuyerLimit:
		return "the buyer would exceed the pool's per-buyer limit"
	case NotOpen:
		return "the draw is not open"
	}
	return "not enough units for this request"
}

// linesIn renders a refused request's lines, all in state s.
func linesIn(c *Command, s LineState) []LineView {
	out := make([]LineView, len(c.Lines))
	for i, l := range c.Lines {
		out[i] = LineView{Pool: l.Pool, Qty: l.Qty, State: s}
	}
	return out
}

func (m *Machine) addUsage(p *Pool, buyer string, qty int64) {
	if p.usage == nil {
		p.usage = make(map[string]int64)
	}
	p.usage[buyer] += qty
}

func (m *Machine) subUsage(p *Pool, buyer string, qty int64) {
	if u := p.usage[buyer] - qty; u > 0 {
		p.usage[buyer] = u
	} else {
		delete(p.usage, buyer)
	}
}

// grant takes qty units of p for a hold. to is the waiting reservation
// being served, nil for a fresh request. It counts a queue jump when
// anyone but the head of the queue is served while the head's request
// fits: the allocator's rules make that impossible, and the counter proves
// it.
func (m *Machine) grant(p *Pool, qty int64, to *reservation) {
	if head := p.waitq.peek(); head != nil && head != to && head.lines[0].qty <= p.Available() {
		m.stats.QueueJumps++
	}
	p.Held += qty
}

// enterDraw enters a single-line request in p's open draw.
func (m *Machine) enterDraw(c *Command, p *Pool) Result {
	l := c.Lines[0]
	if m.clockMs < p.Config.Draw.OpensAtMs {
		m.recordDemand(p, true)
		m.stats.Refused++
		return Result{Err: &Error{Code: NotOpen, Message: "the draw opens at opens_at", Lines: linesIn(c, LineNotOpen)}}
	}
	if r := p.draw.byBuyer[c.Buyer]; r != nil {
		m.recordDemand(p, false)
		return Result{Reservation: m.view(r)} // one entry per buyer: the first one
	}
	limit := p.Config.PerBuyerLimit
	switch {
	case limit > 0 && p.usage[c.Buyer]+l.Qty > limit:
		m.recordDemand(p, true)
		m.stats.Refused++
		return Result{Err: &Error{Code: BuyerLimit, Message: refusalMessage(BuyerLimit), Lines: linesIn(c, LineBuyerLimit)}}
	case m.active[c.Buyer] >= int32(m.cfg.MaxActivePerBuyer):
		m.recordDemand(p, true)
		m.stats.Refused++
		return Result{Err: &Error{Code: BuyerLimit, Message: "the buyer has too many active reservations", Lines: linesIn(c, LineBuyerLimit)}}
	case len(p.draw.byBuyer)+p.waitq.len() >= MaxWaiting:
		// Live entries only (withdrawn ones do not count, so a replica
		// restored without their slots answers alike), plus the queue the
		// draw will join at its close.
		m.recordDemand(p, true)
		m.stats.Refused++
		return Result{Err: &Error{Code: SoldOut, Message: "the draw is full", Lines: linesIn(c, LineSoldOut)}}
	}
	m.recordDemand(p, false)
	m.nextID++
	r := &reservation{
		id:          m.nextID,
		buyer:       c.Buyer,
		state:       StateWaiting,
		createdAtMs: m.clockMs,
		// An entry waits for the draw, then wait_ttl_ms for an offer.
		expiresAtMs: p.Config.Draw.ClosesAtMs + p.Config.Waitlist.WaitTTLMs,
		where:       waitInDraw,
		ticket:      uint64(len(p.draw.entrants)),
		table:       p.table,
	}
	r.setLines(1)
	r.lines[0] = line{pool: p, qty: l.Qty, state: LineWaiting}
	p.draw.entrants = append(p.draw.entrants, r)
	p.draw.byBuyer[c.Buyer] = r
	m.addUsage(p, c.Buyer, l.Qty)
	m.active[c.Buyer]++
	m.res.put(r)
	m.scheduleNew(r, r.expiresAtMs)
	m.stats.DrawEntries++
	p.stats.Entries++
	return Result{Reservation: m.view(r)}
}

// closeDraw draws p: the live entries are shuffled by a PRNG seeded from
// the pool's id and seed (reproducible on every replica and replay), queued
// in drawn order, and the queue is served from its head with the pool's
// hold TTL. An entry whose qty does not fit what is left waits, and so do
// all behind it: drawn order is never jumped (docs/design.md).
func (m *Machine) closeDraw(p *Pool) {
	d := p.draw
	p.draw = nil
	m.tableByID[0].wheel.Cancel(poolKey(p.seq))
	live := make([]*reservation, 0, len(d.byBuyer))
	for _, r := range d.entrants {
		if r != nil {
			live = append(live, r)
		}
	}
	shuffle(drawRNG(p), live)
	for _, r := range live {
		r.where = waitInQueue
		p.waitq.push(r)
		m.waiting++
	}
	before := p.stats.Offers
	m.serveQueue(p, p.Config.HoldTTLMs, false)
	p.stats.Winners += p.stats.Offers - before
	m.stats.DrawWinners += uint64(p.stats.Offers - before)
}

// drawRNG is the draw's PRNG: ChaCha8 keyed by SHA-256 of the pool id and
// seed. Its output is fixed by its specification, so draws are reproducible
// across Go versions too.
func drawRNG(p *Pool) *rand.ChaCha8 {
	h := sha256.New()
	h.Write([]byte("holdfast/draw/v1\x00"))
	h.Write([]byte(p.ID))
	h.Write([]byte{0})
	h.Write([]byte(p.Config.Draw.Seed))
	var key [32]byte
	h.Sum(key[:0])
	return rand.NewChaCha8(key)
}

// shuffle is Fisher-Yates with an unbiased bounded draw (Lemire), written
// out so the order never depends on the standard library's algorithm.
func shuffle(rng *rand.ChaCha8, rs []*reservation) {
	for i := len(rs) - 1; i > 0; i-- {
		j := boundedRand(rng, uint64(i+1))
		rs[i], rs[j] = rs[j], rs[i]
	}
}

func boundedRand(rng *rand.ChaCha8, n uint64) uint64 {
	hi, lo := bits.Mul64(rng.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(rng.Uint64(), n)
		}
	}
	return hi
}

// serve offers units to p's queue head while the head's request fits; an
// offer is an active reservation for ttl (capped by max_hold_ttl_ms).
func (m *Machine) serve(p *Pool, ttl int64) { m.serveQueue(p, ttl, true) }

// serveQueue serves p's queue. With touch, a head whose wait is over is
// expired rather than served; a draw's close serves without it, because the
// draw is decided as of closes_at, however late the close is applied.
func (m *Machine) serveQueue(p *Pool, ttl int64, touch bool) {
	for {
		r := p.waitq.peek()
		if r == nil {
			return
		}
		if touch && m.clockMs >= r.expiresAtMs {
			// The touch rule: a head whose wait is over (not reclaimed yet
			// in a backlog) expires now instead of being offered units.
			m.stats.WaitsExpired++
			m.stats.Expired++
			p.stats.Expired++
			m.leaveWait(r, StateExpired)
			continue
		}
		if r.lines[0].qty > p.Available() {
			return
		}
		m.grant(p, r.lines[0].qty, r) // while r is still the head
		p.waitq.remove(r)
		m.waiting--
		r.where = waitNone
		r.state = StateActive
		r.lines[0].state = LineHeld
		r.offered = true
		r.expiresAtMs = m.clockMs + min(ttl, p.Config.MaxHoldTTLMs)
		r.capMs = m.clockMs + p.Config.MaxHoldTTLMs
		r.maxExtensions = p.Config.MaxExtensions
		r.extensions = 0
		m.unschedule(r)
		r.table = p.table
		m.schedule(r, r.expiresAtMs)
		m.stats.Offers++
		p.stats.Offers++
		m.stats.ActiveHolds++
	}
}

// lookup finds a reservation and applies the touch rule: a hold or wait
// whose deadline has passed in log time ends now, even if the wheel has not
// reclaimed it yet.
func (m *Machine) lookup(id uint64) (*reservation, *Error) {
	r := m.res.get(id)
	if r == nil {
		return nil, errorf(NotFound, "no reservation %s", FormatReservationID(id))
	}
	// A draw entry touched after closes_at: the draw runs first, over every
	// entry it had at closes_at, so what is touched is its outcome.
	if p := r.lines[0].pool; r.where == waitInDraw && m.clockMs >= p.Config.Draw.ClosesAtMs {
		m.closeDraw(p)
	}
	if !r.state.Terminal() && m.clockMs >= r.expiresAtMs {
		m.expire(r)
	}
	return r, nil
}

func (m *Machine) confirm(id uint64) Result {
	r, err := m.lookup(id)
	if err != nil {
		return Result{Err: err}
	}
	switch r.state {
	case StateConfirmed:
		return Result{Reservation: m.view(r)}
	case StateExpired:
		return Result{Err: errorf(Expired, "the hold expired before confirm"), Reservation: m.view(r)}
	case StateActive:
	default:
		return Result{Err: errorf(InvalidState, "cannot confirm a %s reservation", r.state), Reservation: m.view(r)}
	}
	for i := range r.lines {
		l := &r.lines[i]
		if l.state == LineHeld {
			l.pool.Held -= l.qty
			l.pool.Sold += l.qty
			l.state = LineSold
		}
	}
	m.finish(r, StateConfirmed)
	m.stats.Confirmed++
	countPools(r, func(s *PoolStats) { s.Confirmed++ })
	return Result{Reservation: m.view(r)}
}

func (m *Machine) release(id uint64) Result {
	r, err := m.lookup(id)
	if err != nil {
		return Result{Err: err}
	}
	switch r.state {
	case StateReleased:
		return Result{Reservation: m.view(r)}
	case StateExpired:
		return Result{Err: errorf(Expired, "the hold already expired; its units are back"), Reservation: m.view(r)}
	case StateActive, StateWaiting:
	default:
		return Result{Err: errorf(InvalidState, "cannot release a %s reservation", r.state), Reservation: m.view(r)}
	}
	m.end(r, StateReleased)
	m.stats.Released++
	countPools(r, func(s *PoolStats) { s.Released++ })
	return Result{Reservation: m.view(r)}
}

func (m *Machine) extend(id uint64, ttl int64) Result {
	r, err := m.lookup(id)
	if err != nil {
		return Result{Err: err}
	}
	switch r.state {
	case StateExpired:
		return Result{Err: errorf(Expired, "the hold already expired"), Reservation: m.view(r)}
	case StateActive:
	default:
		return Result{Err: errorf(InvalidState, "cannot extend a %s reservation", r.state), Reservation: m.view(r)}
	}
	if ttl < MinTTLMs || ttl > MaxTTLMs {
		return Result{Err: errorf(InvalidArgument, "ttl_ms must be between %d and %d", MinTTLMs, MaxTTLMs)}
	}
	if r.extensions >= r.maxExtensions {
		return Result{Err: errorf(InvalidState, "max_extensions (%d) reached", r.maxExtensions), Reservation: m.view(r)}
	}
	if r.expiresAtMs >= r.capMs {
		return Result{Err: errorf(InvalidState, "max_hold_ttl_ms reached"), Reservation: m.view(r)}
	}
	// expires_at becomes now+ttl_ms, capped at created_at+max_hold_ttl_ms,
	// and never moves earlier.
	r.expiresAtMs = max(r.expiresAtMs, min(m.clockMs+ttl, r.capMs))
	r.extensions++
	m.schedule(r, r.expiresAtMs)
	return Result{Reservation: m.view(r)}
}

// expire ends a hold or a wait whose deadline passed.
func (m *Machine) expire(r *reservation) {
	switch {
	case r.state == StateWaiting:
		m.stats.WaitsExpired++
	case r.offered:
		m.stats.OffersExpired++
	}
	m.end(r, StateExpired)
	m.stats.Expired++
	countPools(r, func(s *PoolStats) { s.Expired++ })
}

// countPools applies count to the stats of each distinct pool that one of
// r's lines took units from (or waited on): those now sold or returned. A
// line refused in a partial reservation got nothing from its pool.
func countPools(r *reservation, count func(*PoolStats)) {
	took := func(l *line) bool { return l.state == LineSold || l.state == LineReturned }
	for i := range r.lines {
		l := &r.lines[i]
		if !took(l) {
			continue
		}
		seen := false
		for j := 0; j < i && !seen; j++ {
			seen = r.lines[j].pool == l.pool && took(&r.lines[j])
		}
		if !seen {
			count(&l.pool.stats)
		}
	}
}

// end releases or expires an active or waiting reservation: held units go
// back (to the waitlist first), a waiting entry leaves its queue or draw.
func (m *Machine) end(r *reservation, s ReservationState) {
	if r.state == StateWaiting {
		m.leaveWait(r, s)
		p := r.lines[0].pool
		m.serve(p, p.Config.Waitlist.OfferTTLMs) // the head may have changed
		return
	}
	for i := range r.lines {
		l := &r.lines[i]
		if l.state != LineHeld {
			continue
		}
		l.pool.Held -= l.qty
		m.subUsage(l.pool, r.buyer, l.qty)
		l.state = LineReturned
	}
	m.finish(r, s)
	// Serve every line's pool: serve is O(1) when the head does not fit.
	for i := range r.lines {
		m.serve(r.lines[i].pool, r.lines[i].pool.Config.Waitlist.OfferTTLMs)
	}
}

// leaveWait ends a waiting reservation: it leaves its queue or draw and its
// qty stops counting against the buyer's limit. It does not serve.
func (m *Machine) leaveWait(r *reservation, s ReservationState) {
	p := r.lines[0].pool
	switch r.where {
	case waitInQueue:
		p.waitq.remove(r)
		m.waiting--
	case waitInDraw:
		p.draw.entrants[r.ticket] = nil
		delete(p.draw.byBuyer, r.buyer)
		p.draw.compact()
	}
	r.where = waitNone
	m.subUsage(p, r.buyer, r.lines[0].qty)
	r.lines[0].state = LineReturned
	m.finish(r, s)
}

// finish moves a reservation to a terminal state and schedules when it is
// forgotten, in the shared table.
func (m *Machine) finish(r *reservation, s ReservationState) {
	if r.state == StateActive {
		m.stats.ActiveHolds--
	}
	if n := m.active[r.buyer] - 1; n > 0 {
		m.active[r.buyer] = n
	} else {
		delete(m.active, r.buyer)
	}
	r.state = s
	r.finishedAtMs = m.clockMs
	m.unschedule(r)
	r.table = 0
	m.schedule(r, m.clockMs+m.cfg.RetainFinishedMs)
}

// view copies r for a result, with its exact queue position.
func (m *Machine) view(r *reservation) *ReservationView {
	v := r.view()
	if r.state == StateWaiting && r.where == waitInQueue {
		v.Position = r.lines[0].pool.waitq.position(r)
	}
	return v
}

// Reservation returns a reservation as of the last applied entry. A hold or
// wait past its deadline is shown as expired even before the wheel reclaims
// it, so a read never promises units the next write would refuse.
func (m *Machine) Reservation(id uint64) (*ReservationView, *Error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r := m.res.get(id)
	if r == nil {
		return nil, errorf(NotFound, "no reservation %s", FormatReservationID(id))
	}
	v := m.view(r)
	if !v.State.Terminal() && m.clockMs >= v.ExpiresAtMs {
		v.State = StateExpired
		v.Position = 0
		for i := range v.Lines {
			if s := v.Lines[i].State; s == LineHeld || s == LineWaiting {
				v.Lines[i].State = LineReturned
			}
		}
	}
	return v, nil
}
