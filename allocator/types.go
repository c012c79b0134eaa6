package allocator

// Limits of the external contract. The API validates them before proposing;
// the state machine checks them again so a bad log entry cannot corrupt state.
const (
	MaxQty        = 1_000_000
	MaxStock      = 1_000_000_000_000
	MaxIDLen      = 128
	MaxLines      = 100
	MinTTLMs      = 1
	MaxTTLMs      = 30 * 24 * 3600 * 1000 // 30 days
	MaxExtensions = 1000
)

// Mode is how a pool hands out units under contention.
type Mode uint8

// Modes.
const (
	ModeFCFS Mode = iota // first come, first served
	ModeDraw             // entries between opens_at and closes_at, seeded draw at close
)

// String returns the contract's name of the mode.
func (m Mode) String() string {
	if m == ModeDraw {
		return "draw"
	}
	return "fcfs"
}

// DrawConfig is the window and seed of a draw pool.
type DrawConfig struct {
	OpensAtMs  int64
	ClosesAtMs int64
	Seed       string
}

// WaitlistConfig configures a pool's FIFO waitlist.
type WaitlistConfig struct {
	Enabled    bool
	OfferTTLMs int64
	WaitTTLMs  int64
}

// PoolConfig is everything a client sets on a pool with PUT.
type PoolConfig struct {
	OnHand        int64
	PerBuyerLimit int64 // 0: no limit
	HoldTTLMs     int64 // default TTL of a hold when a request gives none
	MaxHoldTTLMs  int64 // a hold never lives past created_at + this
	MaxExtensions int64
	Mode          Mode
	Draw          DrawConfig
	Waitlist      WaitlistConfig
	Demand        DemandConfig
}

// Defaults applied to a PoolConfig field left at zero by the client.
const (
	DefaultHoldTTLMs     = 600_000
	DefaultMaxHoldTTLMs  = 900_000
	DefaultMaxExtensions = 1
	DefaultOfferTTLMs    = 120_000
	DefaultWaitTTLMs     = 3_600_000
)

// ReservationState is the lifecycle state of a reservation.
type ReservationState uint8

// Reservation states, as named by the contract.
const (
	StateActive ReservationState = iota
	StateWaiting
	StateConfirmed
	StateReleased
	StateExpired
)

var reservationStateNames = [...]string{"active", "waiting", "confirmed", "released", "expired"}

// String returns the contract's name of the state.
func (s ReservationState) String() string {
	if int(s) < len(reservationStateNames) {
		return reservationStateNames[s]
	}
	return "unknown"
}

// Terminal reports whether no further transition is possible.
func (s ReservationState) Terminal() bool {
	return s == StateConfirmed || s == StateReleased || s == StateExpired
}

// LineState is what happened to one line of a reservation.
type LineState uint8

// Line states, as named by the contract. LineAvailable only appears in the
// details of a refused all-or-nothing request: that line alone would have fit.
const (
	LineHeld LineState = iota
	LineWaiting
	LineSoldOut
	LineBuyerLimit
	LineSold
	LineReturned
	LineNotOpen
	LineAvailable
)

var lineStateNames = [...]string{"held", "waiting", "sold_out", "buyer_limit", "sold", "returned", "not_open", "available"}

// String returns the contract's name of the line state.
func (s LineState) String() string {
	if int(s) < len(lineStateNames) {
		return lineStateNames[s]
	}
	return "unknown"
}

// Pool is one unit of stock: SKU + variant + seller + location.
type Pool struct {
	ID          string
	Config      PoolConfig
	Held        int64 // units in active reservations
	Sold        int64 // units in confirmed reservations
	CreatedAtMs int64
	UpdatedAtMs int64

	// usage is the qty each buyer has in active, waiting and confirmed
	// reservations of this pool, for the per-buyer limit. Kept per pool so
	// the lookup hashes one string.
	usage map[string]int64

	seq    uint64     // pool number, for its draw-close deadline
	table  uint32     // lease table of new holds: 0 shared, else its own (hot)
	demand demand     // request rates and heat
	waitq  waitQueue  // FIFO of waiting reservations
	draw   *drawState // entries of an open draw; nil otherwise
	stats  PoolStats
}

// PoolStats counts what happened to a pool's reservations since the pool
// was created: the series a drop dashboard plots. A reservation with lines
// in several pools counts once in each.
type PoolStats struct {
	Entries   int64 // draw entries accepted
	Winners   int64 // draw entries that won units at the close
	Offers    int64 // waitlist grants, draw winners included
	Expired   int64 // holds and waits that expired
	Confirmed int64 // reservations confirmed
	Released  int64 // reservations released by the client
}

// Available is on_hand - held - sold, never negative by invariant.
func (p *Pool) Available() int64 { return p.Config.OnHand - p.Held - p.Sold }

// line is one line of a reservation. It points at its pool: pools are never
// deleted, so the pointer stays valid and saves a lookup on every transition.
type line struct {
	pool  *Pool
	qty   int64
	state LineState
}

// reservation is the state machine's record of a reservation.
type reservation struct {
	id            uint64
	buyer         string
	state         ReservationState
	lines         []line
	createdAtMs   int64
	expiresAtMs   int64 // hold deadline while active
	capMs         int64 // expires_at may never pass this (max_hold_ttl_ms)
	extensions    int64
	maxExtensions int64
	position      int64   // place in a waitlist or draw; 0 when none
	finishedAtMs  int64   // when it became terminal; forgotten RetainFinishedMs later
	ticket        uint64  // slot in its pool's waitlist or draw entries
	table         uint32  // lease table holding its deadline
	where         uint8   // waitNone, waitInQueue or waitInDraw
	offered       bool    // became active by an offer from the waitlist or draw
	one           [1]line // storage of lines for the common one-line case
}

// setLines points r.lines at storage for n lines: inline for one line, so
// the common reservation is a single allocation.
func (r *reservation) setLines(n int) {
	if n == 1 {
		r.lines = r.one[:1]
	} else {
		r.lines = make([]line, n)
	}
}

// LineView is a copy of one reservation line, safe to read after Apply returns.
type LineView struct {
	Pool  string
	Qty   int64
	State LineState
}

// ReservationView is a copy of a reservation, safe to read after Apply returns.
type ReservationView struct {
	ID          uint64
	Buyer       string
	State       ReservationState
	Lines       []LineView
	CreatedAtMs int64
	ExpiresAtMs int64
	Extensions  int64
	Position    int64 // 0: none

	one [1]LineView // storage of Lines for the common one-line case
}

// PoolView is a copy of a pool with its derived figures.
type PoolView struct {
	ID        string
	Config    PoolConfig
	Held      int64
	Sold      int64
	Available int64
	Claim     Claim
	Heat      Heat
	// Request and denial rates over the last DemandWindowMs of log time.
	RequestsPerSec float64
	DenialsPerSec  float64
	Waiting        int64 // reservations in the waitlist
	WaitingQty     int64 // units they ask for
	DrawEntries    int64 // entries in an open draw
	DrawClosed     bool  // a draw pool whose draw has run
	Stats          PoolStats
	CreatedAtMs    int64
	UpdatedAtMs    int64
}

// Claim is how strongly a cart may present a line drawing from a pool.
type Claim uint8

// Claim strengths, as named by the contract.
const (
	ClaimSoft              Claim = iota // abundant: show as in stock
	ClaimConfirmAtCheckout              // hot or low: "availability confirmed at checkout"
	ClaimSoldOut                        // nothing available
)

var claimNames = [...]string{"soft_claim", "confirm_at_checkout", "sold_out"}

// String returns the contract's name of the claim.
func (c Claim) String() string {
	if int(c) < len(claimNames) {
		return claimNames[c]
	}
	return "unknown"
}

func (r *reservation) view() *ReservationView {
	v := &ReservationView{
		ID:          r.id,
		Buyer:       r.buyer,
		State:       r.state,
		CreatedAtMs: r.createdAtMs,
		ExpiresAtMs: r.expiresAtMs,
		Extensions:  r.extensions,
		Position:    r.position,
	}
	if len(r.lines) == 1 {
		v.Lines = v.one[:1]
	} else {
		v.Lines = make([]LineView, len(r.lines))
	}
	for i, l := range r.lines {
		v.Lines[i] = LineView{Pool: l.pool.ID, Qty: l.qty, State: l.state}
	}
	return v
}
