package cart

import "github.com/holdfast/holdfast/allocator"

// Limits of carts, checked by Command.Validate and again by Apply.
const (
	MaxLines       = 200                   // lines in one cart
	MaxAttrs       = 16                    // attribute pairs on one line
	MaxAttrLen     = 128                   // bytes of an attribute key or value
	MaxAmountMinor = 1_000_000_000_000_000 // price amount in minor units
)

// Config tunes a Machine. Zero fields take the documented defaults. Every
// replica of one log must use the same Config: it shapes outcomes.
type Config struct {
	// IdleTTLMs: a cart untouched (no successful mutation) for this long is
	// deleted by Tick. Default 30 days.
	IdleTTLMs int64
	// PriceAgeMs: a cart touched more than this long after one of its
	// line prices was set (or last acknowledged) becomes needs_review.
	// Default 7 days.
	PriceAgeMs int64
	// IdempotencyTTLMs is how long an idempotency key is remembered.
	// Default 24 h.
	IdempotencyTTLMs int64
	// CheckoutRetentionMs: a checkout snapshot stays readable this long
	// after its hold's expires_at, then Tick deletes it. Default 30 days.
	CheckoutRetentionMs int64
	// SweepPerTick bounds how many due entries of each time index (idle
	// carts, idempotency keys, checkouts) one Tick removes. Default 64.
	SweepPerTick int
}

// Defaults of Config.
const (
	DefaultIdleTTLMs           = 30 * 24 * 3600 * 1000
	DefaultPriceAgeMs          = 7 * 24 * 3600 * 1000
	DefaultIdempotencyTTLMs    = 24 * 3600 * 1000
	DefaultCheckoutRetentionMs = 30 * 24 * 3600 * 1000
	DefaultSweepPerTick        = 64
)

func (c Config) withDefaults() Config {
	if c.IdleTTLMs <= 0 {
		c.IdleTTLMs = DefaultIdleTTLMs
	}
	if c.PriceAgeMs <= 0 {
		c.PriceAgeMs = DefaultPriceAgeMs
	}
	if c.IdempotencyTTLMs <= 0 {
		c.IdempotencyTTLMs = DefaultIdempotencyTTLMs
	}
	if c.CheckoutRetentionMs <= 0 {
		c.CheckoutRetentionMs = DefaultCheckoutRetentionMs
	}
	if c.SweepPerTick <= 0 {
		c.SweepPerTick = DefaultSweepPerTick
	}
	return c
}

// State is the lifecycle state of a cart.
type State uint8

// Cart states, as named by the contract. Values are stored: never renumber.
const (
	StateOpen        State = iota
	StateNeedsReview       // a merge conflict or stale prices must be looked at before checkout
	StateCheckedOut        // a checkout was started from this cart
	StateMerged            // retired: merged into another cart (MergedInto)
)

var stateNames = [...]string{"open", "needs_review", "checked_out", "merged"}

// String returns the contract's name of the state.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// CheckoutState is the small mutable part of a checkout: what became of
// its hold.
type CheckoutState uint8

// Checkout states. Values are stored: never renumber.
const (
	CheckoutHeld      CheckoutState = iota // the reservation was made; not confirmed yet
	CheckoutConfirmed                      // the order was placed: the reservation is confirmed
	CheckoutExpired                        // confirm came after the hold expired
	CheckoutFailed                         // the reservation was released or lost otherwise
)

var checkoutStateNames = [...]string{"held", "confirmed", "expired", "failed"}

// String returns the API name of the checkout state.
func (s CheckoutState) String() string {
	if int(s) < len(checkoutStateNames) {
		return checkoutStateNames[s]
	}
	return "unknown"
}

// Policy is how a merge resolves a line present in both carts.
type Policy uint8

// Merge policies. The zero value is review, the contract's default. Values
// are part of the log format: never renumber.
const (
	PolicyReview     Policy = iota // keep the later line, report a conflict, cart needs review
	PolicySum                      // add quantities
	PolicyMax                      // the larger quantity wins
	PolicyLatest                   // the line changed last wins
	PolicyTargetWins               // the target's line wins
	PolicySourceWins               // the source's line wins
)

const numPolicies = PolicySourceWins + 1

var policyNames = [numPolicies]string{"review", "sum", "max", "latest", "target_wins", "source_wins"}

// String returns the contract's name of the policy.
func (p Policy) String() string {
	if p < numPolicies {
		return policyNames[p]
	}
	return "unknown"
}

// ParsePolicy parses a contract policy name; "" is the default, review.
func ParsePolicy(s string) (Policy, bool) {
	if s == "" {
		return PolicyReview, true
	}
	for i, n := range policyNames {
		if n == s {
			return Policy(i), true
		}
	}
	return 0, false
}

// Outcome is what a merge did with one source line.
type Outcome uint8

// Merge outcomes, as named by the contract. Values are stored: never
// renumber.
const (
	OutcomeAdded      Outcome = iota // only in the source: added to the target
	OutcomeCollapsed                 // the same line (identity and qty) on both sides: one kept
	OutcomeSummed                    // quantities added
	OutcomeKeptTarget                // the target's line won
	OutcomeKeptSource                // the source's line won
	OutcomeConflict                  // review: quantities differ; the later line kept, cart needs review
	OutcomeCapped                    // the resulting qty was cut to the pool's per-buyer limit
)

const numOutcomes = OutcomeCapped + 1

var outcomeNames = [numOutcomes]string{"added", "collapsed", "summed", "kept_target", "kept_source", "conflict", "capped"}

// String returns the contract's name of the outcome.
func (o Outcome) String() string {
	if o < numOutcomes {
		return outcomeNames[o]
	}
	return "unknown"
}

// Attr is one attribute of a line's identity (engraving text, size, ...).
type Attr struct {
	Key   string
	Value string
}

// Price is the price reference a line was added with, kept as given: the
// cart never computes with it.
type Price struct {
	AmountMinor int64
	Currency    string // ISO 4217, three uppercase letters; "" when no price was given
	OfferID     string
}

// LineInput is a line as a client adds it.
type LineInput struct {
	SKU         string
	Variant     string
	Seller      string
	Fulfillment string
	Attrs       []Attr // any order; stored sorted by key
	Pool        string // "" draws from SKU:Variant:Seller:Fulfillment
	Price       Price
}

// Line is one line of a cart.
type Line struct {
	ID          string // "l_<hex>", unique within its cart, never reused
	SKU         string
	Variant     string
	Seller      string
	Fulfillment string
	Attrs       []Attr // sorted by key
	Pool        string // the pool the line draws from (explicit or derived)
	Qty         int64
	Price       Price
	// LineVersion is the cart version at which this line last changed:
	// edits and deletes must carry it.
	LineVersion int64
	UpdatedAtMs int64 // log time of the line's last change
	// PricedAtMs is when the price was set or last acknowledged (by a
	// review); the price-age rule measures from it.
	PricedAtMs int64
}

// Cart is a cart as stored and returned.
type Cart struct {
	ID           string
	Owner        string // "anon:..." or "user:..."
	Version      int64  // moves on every change of the cart
	State        State
	ReviewReason string // why the cart is needs_review; "" otherwise
	Lines        []Line // in the order they were first added
	CreatedAtMs  int64
	UpdatedAtMs  int64
	// CheckoutID is the latest checkout started from this cart, if any.
	CheckoutID string
	// MergedInto is the target cart of a merged (retired) cart.
	MergedInto string

	nextLine    uint64         // last line number handed out
	review      uint8          // reviewMerge | reviewPrices
	idleDueMs   int64          // key of the cart's entry in the idle index
	mergeReport []MergeOutcome // a retired source: the report of its merge
}

// Review reasons (bits of Cart.review).
const (
	reviewMerge  = 1 << 0
	reviewPrices = 1 << 1
)

// MergeOutcome is one entry of a merge report: what happened to one source
// line.
type MergeOutcome struct {
	Line         Line // the resulting line in the target
	SourceLineID string
	Outcome      Outcome
	TargetQty    int64 // the target's qty before the merge; 0 when it had no such line
	SourceQty    int64
}

// CheckoutLine is one line of a checkout snapshot.
type CheckoutLine struct {
	LineID string
	Pool   string
	Qty    int64
	Price  Price
	// State is what the reservation did with the line: held, or why not
	// (sold_out, buyer_limit, not_open, waiting).
	State allocator.LineState
}

// Correction is a cart line that could not be held as it stands.
type Correction struct {
	LineID  string
	Pool    string
	Qty     int64
	State   allocator.LineState
	Message string
}

// Checkout is a checkout snapshot: immutable contents plus the small
// mutable State of its hold.
type Checkout struct {
	ID            string // "co_<hex>"
	CartID        string
	Owner         string // the buyer the reservation was made for
	CartVersion   int64  // the cart version that was validated
	ValidatedAtMs int64
	ExpiresAtMs   int64 // the hold's expiry
	ReservationID uint64
	State         CheckoutState
	ConfirmedAtMs int64 // 0 unless confirmed
	Lines         []CheckoutLine
	Corrections   []Correction

	purgeAtMs int64 // key of the checkout's entry in the retention index
}

// Result is the outcome of one command. Everything in it is a copy, safe
// to keep.
type Result struct {
	Err      *allocator.Error
	Cart     *Cart // the cart after the command (Merge: the target)
	Report   []MergeOutcome
	Checkout *Checkout
	Created  bool // Create made a cart; Checkout made a snapshot
	Replayed bool // answered from an idempotency record
	// ConflictLine is the current line when a line edit was refused with
	// version_conflict.
	ConflictLine *Line
	// ConflictCart is the current cart when checkout start was refused
	// with version_conflict.
	ConflictCart *Cart
	// Corrections lists the lines that could not be held when checkout
	// start was refused (sold_out, buyer_limit, not_open).
	Corrections []Correction
}
