package allocator

import (
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
	// MaxActivePerBuyer caps how many reservations one buyer may have
	// active or waiting at once, across all pools (anti-hoarding).
	// Default 20.
	MaxActivePerBuyer int
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
	if c.MaxActivePerBuyer <= 0 {
		c.MaxActivePerBuyer = 20
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
	Queued                                          uint64 // requests queued on a waitlist
	Offers                                          uint64 // waiting reservations offered units (draw winners included)
	OffersExpired                                   uint64 // offers that expired unconfirmed
	WaitsExpired                                    uint64 // waiting reservations that expired unserved
	DrawEntries                                     uint64
	DrawWinners                                     uint64
	// QueueJumps counts grants made while an earlier waiting request for
	// the same pool still fit. The rules make it impossible; it must stay 0.
	QueueJumps      uint64
	ActiveHolds     int64
	Waiting         int64 // reservations in waitlists
	Reservations    int64
	IdempotencyKeys int64
	LeaseTables     int64
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

// Machine is the allocator's deterministic state machine. Apply mutates it
// from committed log entries; reads may run concurrently with Apply.
// Outcomes depend only on the commands and their log timestamps: no wall
// clock, no map iteration order, no unseeded randomness.
type Machine struct {
	mu  sync.RWMutex
	cfg Config

	clockMs int64
	nextID  uint64 // last reservation id handed out

	pools       map[string]*Pool
	poolIDs     []string // sorted, for listing and snapshots
	poolBySeq   map[uint64]*Pool
	nextPoolSeq uint64
	res         resTable
	active      map[string]int32 // active + waiting reservations per buyer

	idem       map[string]*idemRecord
	idemBySeq  map[uint64]string
	idemSeq    uint64 // last sequence handed out
	idemOldest uint64 // no live record has a smaller sequence

	tables       []*leaseTable // sorted by id; tables[0] is the shared one
	tableByID    map[uint32]*leaseTable
	nextTable    uint32
	expired      []lease.Expired // scratch for reclaim
	tableScratch []*leaseTable
	stats        Stats
	waiting      int64 // reservations in every pool's waitlist, for Stats
}

// New returns an empty Machine.
func New(cfg Config) *Machine {
	m := &Machine{
		cfg:       cfg.withDefaults(),
		pools:     make(map[string]*Pool),
		poolBySeq: make(map[uint64]*Pool),
		active:    make(map[string]int32),
		idem:      make(map[string]*idemRecord),
		idemBySeq: make(map[uint64]string),
		tableByID: make(map[uint32]*leaseTable),
	}
	m.table(0)
	return m
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
	var next int64
	ok := false
	for _, t := range m.tables {
		if due, has := t.wheel.NextDueMs(); has && (!ok || due < next) {
			next, ok = due, true
		}
	}
	return next, ok
}

// Stats returns a copy of the counters.
func (m *Machine) Stats() Stats {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s := m.stats
	s.Reservations = int64(m.res.len())
	s.IdempotencyKeys = int64(len(m.idem))
	s.LeaseTables = int64(len(m.tables))
	s.Waiting = m.waiting // kept as it changes: Stats is read by every metrics scrape
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

// Advance starts a log entry stamped by the leader at nowMs: it moves the
// clock (once per entry: the step bound is per entry) and reclaims what
// fell due. ApplyCommands then applies the entry's commands. Apply is the
// two together.
func (m *Machine) Advance(nowMs int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.advance(nowMs)
}

// ApplyCommands applies commands at the clock of the last Advance.
func (m *Machine) ApplyCommands(cmds []Command, out []Result) []Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range cmds {
		out = append(out, m.applyOne(&cmds[i]))
	}
	return out
}

// advance moves the clock (monotonic, step-bounded) and reclaims a bounded
// number of due deadlines per lease table in (due, key) order.
func (m *Machine) advance(nowMs int64) {
	switch {
	case m.clockMs == 0 && m.nextID == 0 && len(m.pools) == 0:
		m.clockMs = nowMs // first entry of a fresh machine: adopt the leader's time
	case nowMs > m.clockMs:
		m.clockMs += min(nowMs-m.clockMs, m.cfg.MaxClockStepMs)
	}
	// Each table reclaims with its own budget, in table order: a hot
	// pool's storm cannot starve the shared table. Tables may be dropped
	// while reclaiming, so walk a copy.
	m.tableScratch = append(m.tableScratch[:0], m.tables...)
	for _, t := range m.tableScratch {
		m.reclaim(t, m.cfg.ReclaimPerEntry)
	}
	clear(m.tableScratch)
}

// setClock moves the clock forward to clockMs in one step, past the
// per-entry step bound: a cluster restored from a backup resumes at the
// time of the restore, so holds that expired in real time since the backup
// expire now (their reclaim starts here and goes on with the next
// entries). It never moves the clock back.
func (m *Machine) setClock(clockMs int64) Result {
	if clockMs > m.clockMs {
		m.clockMs = clockMs
		m.advance(clockMs) // reclaims what fell due, within the entry's budget
	}
	return Result{}
}

func (m *Machine) applyOne(c *Command) Result {
	if c.Kind == KindTick {
		return Result{}
	}
	if c.IdemKey != "" {
		if rec := m.idem[c.IdemKey]; rec != nil {
			if rec.hash != c.ReqHash {
				return Result{Err: MismatchError(c.IdemKey)}
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
	case KindRefusals:
		return m.recordRefusals(c.Refusals)
	case KindSetClock:
		return m.setClock(c.Delta)
	}
	return Result{Err: errorf(InvalidArgument, "unknown command kind %d", c.Kind)}
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
	m.tableByID[0].wheel.Add(idemKey(rec.seq), rec.expiresAtMs)
	// Over the cap, forget the oldest records early. Sequence numbers are
	// dense, so the scan is bounded by how many were forgotten since.
	for len(m.idem) > m.cfg.MaxIdempotencyKeys {
		m.idemOldest++
		if _, ok := m.idemBySeq[m.idemOldest]; ok {
			m.tableByID[0].wheel.Cancel(idemKey(m.idemOldest))
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
