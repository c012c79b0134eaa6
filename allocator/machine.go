package allocator

import (
	"sort"
	"sync"

	"github.com/holdfast/holdfast/lease"
)

// Config tunes a Machine. Zero fields take the documented defaults. Every
// replica of one log must use the same Config: it shapes outcomes.
type Config struct {
	// MaxClockStepMs bounds how far one log entry may move the clock
	// forward, so a leader whose clock jumps cannot expire everything at
	// once. Default 1000.
	MaxClockStepMs int64
	// ReclaimPerEntry bounds how many due deadlines one log entry reclaims;
	// the rest are reclaimed by later entries (the leader proposes ticks
	// while any are due). A hold past due counts as expired when it is
	// touched, but its units return to the pool only when reclaimed: during
	// a backlog a request may be refused for units that are about to come
	// back. Default 4096, so a backlog needs over 800k expiries a second.
	ReclaimPerEntry int
	// IdempotencyTTLMs is how long an idempotency key is remembered.
	// Default 24 h.
	IdempotencyTTLMs int64
	// MaxIdempotencyKeys bounds memory: past it the oldest key is
	// forgotten early. Default 4,000,000.
	MaxIdempotencyKeys int
	// RetainFinishedMs is how long a confirmed, released or expired
	// reservation stays readable before it is forgotten. Default 24 h.
	RetainFinishedMs int64
}

func (c Config) withDefaults() Config {
	if c.MaxClockStepMs <= 0 {
		c.MaxClockStepMs = 1000
	}
	if c.ReclaimPerEntry <= 0 {
		c.ReclaimPerEntry = 4096
	}
	if c.IdempotencyTTLMs <= 0 {
		c.IdempotencyTTLMs = 24 * 3600 * 1000
	}
	if c.MaxIdempotencyKeys <= 0 {
		c.MaxIdempotencyKeys = 4_000_000
	}
	if c.RetainFinishedMs <= 0 {
		c.RetainFinishedMs = 24 * 3600 * 1000
	}
	return c
}

// Result is the outcome of one command. Views are copies, safe to use
// after Apply returns.
type Result struct {
	Err         *Error
	Created     bool // PutPool created the pool (rather than reconfigured it)
	Replayed    bool // answered from an idempotency record
	Pool        *PoolView
	Reservation *ReservationView
}

// Stats are counters for metrics. They are not part of the replicated state
// (a restored replica starts them at zero) and never influence outcomes.
type Stats struct {
	Reserved, Refused, Confirmed, Released, Expired uint64
	ActiveHolds                                     int64
	Reservations                                    int64
	IdempotencyKeys                                 int64
}

type idemRecord struct {
	seq         uint64
	expiresAtMs int64
	hash        [HashLen]byte
	result      Result
}

// maxSeq bounds reservation ids and idempotency sequences so that a
// sequence shifted into a wheel key keeps all its bits.
const maxSeq = 1 << 61

// Wheel keys carry the kind of deadline in the low bit. A reservation has at
// most one deadline at a time (its hold, its wait or its retention).
const (
	wheelReservation = 0
	wheelIdem        = 1
)

// Machine is the allocator's deterministic state machine. Apply mutates it
// from committed log entries; reads may run concurrently with Apply.
// Outcomes depend only on the commands and their log timestamps: no wall
// clock, no map iteration order, no unseeded randomness.
type Machine struct {
	mu  sync.RWMutex
	cfg Config

	clockMs int64
	nextID  uint64 // last reservation id handed out

	pools   map[string]*Pool
	poolIDs []string // sorted, for listing and snapshots
	res     resTable

	idem       map[string]*idemRecord
	idemBySeq  map[uint64]string
	idemSeq    uint64 // last sequence handed out
	idemOldest uint64 // no live record has a smaller sequence

	wheel   *lease.Wheel
	expired []lease.Expired // scratch for reclaim
	stats   Stats
}

// New returns an empty Machine.
func New(cfg Config) *Machine {
	return &Machine{
		cfg:       cfg.withDefaults(),
		pools:     make(map[string]*Pool),
		idem:      make(map[string]*idemRecord),
		idemBySeq: make(map[uint64]string),
		wheel:     lease.NewWheel(0),
	}
}

// ClockMs is the state machine's clock: the largest (step-bounded) leader
// timestamp applied so far.
func (m *Machine) ClockMs() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.clockMs
}

// NextDeadlineMs is the earliest pending deadline (or a lower bound of it);
// the leader proposes a tick once its clock passes it.
func (m *Machine) NextDeadlineMs() (int64, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.wheel.NextDueMs()
}

// Stats returns a copy of the counters.
func (m *Machine) Stats() Stats {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s := m.stats
	s.Reservations = int64(m.res.len())
	s.IdempotencyKeys = int64(len(m.idem))
	return s
}

// Apply applies the commands of one log entry stamped by the leader at
// nowMs, appending one Result per command to out.
func (m *Machine) Apply(nowMs int64, cmds []Command, out []Result) []Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.advance(nowMs)
	for i := range cmds {
		out = append(out, m.applyOne(&cmds[i]))
	}
	return out
}

// advance moves the clock (monotonic, step-bounded) and reclaims a bounded
// number of due deadlines in (due, key) order.
func (m *Machine) advance(nowMs int64) {
	switch {
	case m.clockMs == 0 && m.nextID == 0 && len(m.pools) == 0:
		m.clockMs = nowMs // first entry of a fresh machine: adopt the leader's time
	case nowMs > m.clockMs:
		m.clockMs += min(nowMs-m.clockMs, m.cfg.MaxClockStepMs)
	}
	m.expired = m.wheel.Advance(m.clockMs, m.cfg.ReclaimPerEntry, m.expired[:0])
	for _, e := range m.expired {
		id := e.Key >> 1
		switch e.Key & 1 {
		case wheelReservation:
			r := m.res.get(id)
			if r == nil {
				panic("allocator: wheel holds a deadline for an unknown reservation")
			}
			if r.state.Terminal() {
				m.res.del(id)
			} else {
				m.expire(r)
			}
		case wheelIdem:
			m.forgetIdem(id)
		}
	}
}

func (m *Machine) applyOne(c *Command) Result {
	if c.Kind == KindTick {
		return Result{}
	}
	if c.IdemKey != "" {
		if rec := m.idem[c.IdemKey]; rec != nil {
			if rec.hash != c.ReqHash {
				return Result{Err: errorf(IdempotencyMismatch, "idempotency key %q was used with a different request", c.IdemKey)}
			}
			r := rec.result
			r.Replayed = true
			return r
		}
	}
	res := m.dispatch(c)
	if c.IdemKey != "" {
		m.remember(c.IdemKey, c.ReqHash, res)
	}
	return res
}

func (m *Machine) dispatch(c *Command) Result {
	switch c.Kind {
	case KindPutPool:
		return m.putPool(c.Pool, &c.Config)
	case KindAdjustPool:
		return m.adjustPool(c.Pool, c.Delta)
	case KindReserve:
		return m.reserve(c)
	case KindConfirm:
		return m.confirm(c.Reservation)
	case KindRelease:
		return m.release(c.Reservation)
	case KindExtend:
		return m.extend(c.Reservation, c.TTLMs)
	}
	return Result{Err: errorf(InvalidArgument, "unknown command kind %d", c.Kind)}
}

// ---- pools ----

// DefaultPoolConfig returns a config with every default filled in and the
// given on_hand.
func DefaultPoolConfig(onHand int64) PoolConfig {
	return PoolConfig{
		OnHand:        onHand,
		HoldTTLMs:     DefaultHoldTTLMs,
		MaxHoldTTLMs:  DefaultMaxHoldTTLMs,
		MaxExtensions: DefaultMaxExtensions,
		Waitlist:      WaitlistConfig{OfferTTLMs: DefaultOfferTTLMs, WaitTTLMs: DefaultWaitTTLMs},
	}
}

// Validate checks a fully specified config against the contract's ranges.
func (c *PoolConfig) Validate() *Error {
	switch {
	case c.OnHand < 0 || c.OnHand > MaxStock:
		return errorf(InvalidArgument, "on_hand must be between 0 and %d", int64(MaxStock))
	case c.PerBuyerLimit < 0 || c.PerBuyerLimit > MaxStock:
		return errorf(InvalidArgument, "per_buyer_limit must be between 0 (no limit) and %d", int64(MaxStock))
	case c.HoldTTLMs < MinTTLMs || c.HoldTTLMs > MaxTTLMs:
		return errorf(InvalidArgument, "hold_ttl_ms must be between %d and %d", MinTTLMs, MaxTTLMs)
	case c.MaxHoldTTLMs < c.HoldTTLMs || c.MaxHoldTTLMs > MaxTTLMs:
		return errorf(InvalidArgument, "max_hold_ttl_ms must be between hold_ttl_ms and %d", MaxTTLMs)
	case c.MaxExtensions < 0 || c.MaxExtensions > MaxExtensions:
		return errorf(InvalidArgument, "max_extensions must be between 0 and %d", MaxExtensions)
	case c.Mode != ModeFCFS && c.Mode != ModeDraw:
		return errorf(InvalidArgument, "mode must be fcfs or draw")
	case c.Mode == ModeDraw:
		return errorf(InvalidArgument, "mode draw is not supported by this version")
	case c.Waitlist.Enabled:
		return errorf(InvalidArgument, "waitlists are not supported by this version")
	case c.Waitlist.OfferTTLMs < MinTTLMs || c.Waitlist.OfferTTLMs > MaxTTLMs:
		return errorf(InvalidArgument, "waitlist.offer_ttl_ms must be between %d and %d", MinTTLMs, MaxTTLMs)
	case c.Waitlist.WaitTTLMs < MinTTLMs || c.Waitlist.WaitTTLMs > MaxTTLMs:
		return errorf(InvalidArgument, "waitlist.wait_ttl_ms must be between %d and %d", MinTTLMs, MaxTTLMs)
	}
	return nil
}

func (m *Machine) putPool(id string, cfg *PoolConfig) Result {
	if !ValidID(id) {
		return Result{Err: errorf(InvalidArgument, "bad pool id")}
	}
	if err := cfg.Validate(); err != nil {
		return Result{Err: err}
	}
	p := m.pools[id]
	created := p == nil
	if created {
		p = &Pool{ID: id, CreatedAtMs: m.clockMs}
		m.pools[id] = p
		i := sort.SearchStrings(m.poolIDs, id)
		m.poolIDs = append(m.poolIDs, "")
		copy(m.poolIDs[i+1:], m.poolIDs[i:])
		m.poolIDs[i] = id
	} else if cfg.OnHand < p.Held+p.Sold {
		return Result{Err: errorf(InvalidState, "on_hand %d is below held+sold %d", cfg.OnHand, p.Held+p.Sold)}
	}
	p.Config = *cfg
	p.UpdatedAtMs = m.clockMs
	return Result{Created: created, Pool: m.poolView(p)}
}

func (m *Machine) adjustPool(id string, delta int64) Result {
	p := m.pools[id]
	if p == nil {
		return Result{Err: errorf(NotFound, "no pool %q", id)}
	}
	if delta < -MaxStock || delta > MaxStock {
		return Result{Err: errorf(InvalidArgument, "delta must be between %d and %d", int64(-MaxStock), int64(MaxStock))}
	}
	onHand := p.Config.OnHand + delta
	if onHand > MaxStock {
		return Result{Err: errorf(InvalidArgument, "on_hand would exceed %d", int64(MaxStock))}
	}
	if onHand < p.Held+p.Sold {
		return Result{Err: errorf(InvalidState, "on_hand %d would be below held+sold %d", onHand, p.Held+p.Sold)}
	}
	p.Config.OnHand = onHand
	p.UpdatedAtMs = m.clockMs
	return Result{Pool: m.poolView(p)}
}

// ---- reservations ----

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
	if c.Wait {
		return Result{Err: errorf(InvalidArgument, "wait needs a single line on a pool with a waitlist")}
	}
	// Small requests work in stack buffers.
	var tallyBuf [8]tally
	var poolBuf [8]*Pool
	var stateBuf [8]LineState
	tallies := tallyBuf[:0]
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
	ttl := c.TTLMs
	if ttl == 0 {
		ttl = minHold
	}
	if ttl < MinTTLMs || ttl > minCap {
		return Result{Err: errorf(InvalidArgument, "ttl_ms must be between %d and the pools' max_hold_ttl_ms %d", MinTTLMs, minCap)}
	}

	states := stateBuf[:0]
	if len(c.Lines) > len(stateBuf) {
		states = make([]LineState, 0, len(c.Lines))
	}
	states = states[:len(c.Lines)]
	held, firstFail := 0, -1
	for i, l := range c.Lines {
		p := pools[i]
		t := findTally(tallies, p)
		if t == nil {
			tallies = append(tallies, tally{pool: p})
			t = &tallies[len(tallies)-1]
		}
		limit := p.Config.PerBuyerLimit
		switch {
		case limit > 0 && p.usage[c.Buyer]+t.qty+l.Qty > limit:
			states[i] = LineBuyerLimit
		case l.Qty > p.Available()-t.qty:
			states[i] = LineSoldOut
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
	if firstFail >= 0 && (!c.Partial || held == 0) {
		m.stats.Refused++
		code := SoldOut
		if states[firstFail] == LineBuyerLimit {
			code = BuyerLimit
		}
		e := &Error{Code: code, Message: "not enough units for this request", Lines: make([]LineView, len(c.Lines))}
		if code == BuyerLimit {
			e.Message = "the buyer would exceed the pool's per-buyer limit"
		}
		for i, l := range c.Lines {
			s := states[i]
			if s == LineHeld {
				s = LineAvailable // would have fit on its own; nothing was held
			}
			e.Lines[i] = LineView{Pool: l.Pool, Qty: l.Qty, State: s}
		}
		return Result{Err: e}
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
	}
	r.setLines(len(c.Lines))
	for i, l := range c.Lines {
		p := pools[i]
		r.lines[i] = line{pool: p, qty: l.Qty, state: states[i]}
		if states[i] == LineHeld {
			p.Held += l.Qty
			if p.usage == nil {
				p.usage = make(map[string]int64)
			}
			p.usage[c.Buyer] += l.Qty
		}
	}
	m.res.put(r)
	m.wheel.Add(r.id<<1|wheelReservation, r.expiresAtMs)
	m.stats.Reserved++
	m.stats.ActiveHolds++
	return Result{Reservation: r.view()}
}

// lookup finds a reservation and applies the touch rule: a hold whose
// expires_at has passed in log time is expired now, even if the wheel has
// not reclaimed it yet.
func (m *Machine) lookup(id uint64) (*reservation, *Error) {
	r := m.res.get(id)
	if r == nil {
		return nil, errorf(NotFound, "no reservation %s", FormatReservationID(id))
	}
	if r.state == StateActive && m.clockMs >= r.expiresAtMs {
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
		return Result{Reservation: r.view()}
	case StateExpired:
		return Result{Err: errorf(Expired, "the hold expired before confirm"), Reservation: r.view()}
	case StateActive:
	default:
		return Result{Err: errorf(InvalidState, "cannot confirm a %s reservation", r.state), Reservation: r.view()}
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
	return Result{Reservation: r.view()}
}

func (m *Machine) release(id uint64) Result {
	r, err := m.lookup(id)
	if err != nil {
		return Result{Err: err}
	}
	switch r.state {
	case StateReleased:
		return Result{Reservation: r.view()}
	case StateExpired:
		return Result{Err: errorf(Expired, "the hold already expired; its units are back"), Reservation: r.view()}
	case StateActive:
	default:
		return Result{Err: errorf(InvalidState, "cannot release a %s reservation", r.state), Reservation: r.view()}
	}
	m.returnUnits(r)
	m.finish(r, StateReleased)
	m.stats.Released++
	return Result{Reservation: r.view()}
}

func (m *Machine) extend(id uint64, ttl int64) Result {
	r, err := m.lookup(id)
	if err != nil {
		return Result{Err: err}
	}
	switch r.state {
	case StateExpired:
		return Result{Err: errorf(Expired, "the hold already expired"), Reservation: r.view()}
	case StateActive:
	default:
		return Result{Err: errorf(InvalidState, "cannot extend a %s reservation", r.state), Reservation: r.view()}
	}
	if ttl < MinTTLMs || ttl > MaxTTLMs {
		return Result{Err: errorf(InvalidArgument, "ttl_ms must be between %d and %d", MinTTLMs, MaxTTLMs)}
	}
	if r.extensions >= r.maxExtensions {
		return Result{Err: errorf(InvalidState, "max_extensions (%d) reached", r.maxExtensions), Reservation: r.view()}
	}
	if r.expiresAtMs >= r.capMs {
		return Result{Err: errorf(InvalidState, "max_hold_ttl_ms reached"), Reservation: r.view()}
	}
	// expires_at becomes now+ttl_ms, capped at created_at+max_hold_ttl_ms,
	// and never moves earlier.
	r.expiresAtMs = max(r.expiresAtMs, min(m.clockMs+ttl, r.capMs))
	r.extensions++
	m.wheel.Add(r.id<<1|wheelReservation, r.expiresAtMs)
	return Result{Reservation: r.view()}
}

// expire ends an active hold whose deadline passed and returns its units.
func (m *Machine) expire(r *reservation) {
	m.returnUnits(r)
	m.finish(r, StateExpired)
	m.stats.Expired++
}

func (m *Machine) returnUnits(r *reservation) {
	for i := range r.lines {
		l := &r.lines[i]
		if l.state != LineHeld {
			continue
		}
		l.pool.Held -= l.qty
		if u := l.pool.usage[r.buyer] - l.qty; u > 0 {
			l.pool.usage[r.buyer] = u
		} else {
			delete(l.pool.usage, r.buyer)
		}
		l.state = LineReturned
	}
}

// finish moves an active reservation to a terminal state and schedules
// when it is forgotten.
func (m *Machine) finish(r *reservation, s ReservationState) {
	if r.state == StateActive {
		m.stats.ActiveHolds--
	}
	r.state = s
	r.finishedAtMs = m.clockMs
	m.wheel.Add(r.id<<1|wheelReservation, m.clockMs+m.cfg.RetainFinishedMs)
}

// ---- idempotency ----

func (m *Machine) remember(key string, hash [HashLen]byte, res Result) {
	if m.idemSeq+1 >= maxSeq {
		return // not reachable in practice; never wrap into another key
	}
	m.idemSeq++
	rec := &idemRecord{seq: m.idemSeq, expiresAtMs: m.clockMs + m.cfg.IdempotencyTTLMs, hash: hash, result: res}
	m.idem[key] = rec
	m.idemBySeq[rec.seq] = key
	m.wheel.Add(rec.seq<<1|wheelIdem, rec.expiresAtMs)
	// Over the cap, forget the oldest records early. Sequence numbers are
	// dense, so the scan is bounded by how many were forgotten since.
	for len(m.idem) > m.cfg.MaxIdempotencyKeys {
		m.idemOldest++
		if _, ok := m.idemBySeq[m.idemOldest]; ok {
			m.wheel.Cancel(m.idemOldest<<1 | wheelIdem)
			m.forgetIdem(m.idemOldest)
		}
	}
}

func (m *Machine) forgetIdem(seq uint64) {
	key, ok := m.idemBySeq[seq]
	if !ok || m.idem[key] == nil || m.idem[key].seq != seq {
		panic("allocator: wheel holds a deadline for an unknown idempotency record")
	}
	delete(m.idemBySeq, seq)
	delete(m.idem, key)
	// Records expire in sequence order (one TTL, monotonic clock): keeping
	// idemOldest tight keeps the eviction scan in remember short.
	if seq == m.idemOldest+1 {
		m.idemOldest = seq
	}
}

// ---- reads ----

func (m *Machine) poolView(p *Pool) *PoolView {
	return &PoolView{
		ID:          p.ID,
		Config:      p.Config,
		Held:        p.Held,
		Sold:        p.Sold,
		Available:   p.Available(),
		Claim:       claimOf(p),
		CreatedAtMs: p.CreatedAtMs,
		UpdatedAtMs: p.UpdatedAtMs,
	}
}

// LowStockFraction: a pool with less than this fraction of on_hand available
// (or fewer than LowStockUnits units) is low, and carts must confirm at
// checkout rather than show it as in stock.
const (
	LowStockFraction = 0.10
	LowStockUnits    = 10
)

func claimOf(p *Pool) Claim {
	avail := p.Available()
	switch {
	case avail <= 0:
		return ClaimSoldOut
	case avail < LowStockUnits || float64(avail) < LowStockFraction*float64(p.Config.OnHand):
		return ClaimConfirmAtCheckout
	}
	return ClaimSoft
}

// Pool returns a pool, or a not_found error.
func (m *Machine) Pool(id string) (*PoolView, *Error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	p := m.pools[id]
	if p == nil {
		return nil, errorf(NotFound, "no pool %q", id)
	}
	return m.poolView(p), nil
}

// Pools lists up to limit pools with ids after the given one, in id order,
// and reports whether more follow.
func (m *Machine) Pools(after string, limit int) ([]*PoolView, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	i := sort.SearchStrings(m.poolIDs, after)
	if i < len(m.poolIDs) && m.poolIDs[i] == after {
		i++
	}
	end := min(len(m.poolIDs), i+limit)
	out := make([]*PoolView, 0, end-i)
	for _, id := range m.poolIDs[i:end] {
		out = append(out, m.poolView(m.pools[id]))
	}
	return out, end < len(m.poolIDs)
}

// Reservation returns a reservation as of the last applied entry. A hold
// past its expires_at is shown as expired even before the wheel reclaims it,
// so a read never promises units the next write would refuse.
func (m *Machine) Reservation(id uint64) (*ReservationView, *Error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r := m.res.get(id)
	if r == nil {
		return nil, errorf(NotFound, "no reservation %s", FormatReservationID(id))
	}
	v := r.view()
	if v.State == StateActive && m.clockMs >= v.ExpiresAtMs {
		v.State = StateExpired
		for i := range v.Lines {
			if v.Lines[i].State == LineHeld {
				v.Lines[i].State = LineReturned
			}
		}
	}
	return v, nil
}
