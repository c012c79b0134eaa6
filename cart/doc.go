// Package cart is holdfast's cart layer: a thin, deterministic state
// machine that stores intent (carts and their lines) and delegates claim
// strength to the allocator. Its state lives in a Store (the node's
// keyspace on disk); it reads no clock, starts no goroutine, uses no
// randomness and never lets map iteration decide an outcome or an order.
// Time is the log entry's leader-stamped clock, passed in as nowMs.
//
// # Lines
//
// A line's identity is {sku, variant, seller, fulfillment, attrs}, attrs
// sorted by key. Adding a line with an existing identity adds to its qty
// (the total may not pass 1,000,000) and replaces its price reference and
// pool with the ones just given (latest add wins); any difference in
// identity makes a new line, so one SKU in two variants or from two
// sellers is always two lines. A line draws from pool
// "sku:variant:seller:fulfillment" unless it names one. A line without a
// price has an empty currency (amount 0). Adds are not capped by the
// pool's per-buyer limit: the cart stores intent and checkout reports
// buyer_limit; only merges cap. A cart holds at most 200 lines.
//
// # Versions
//
// A cart's version starts at 1 and moves by exactly 1 on every successful
// change (line edits, merges as target or source, review, checkout start,
// the stale-price flag). A line's line_version is the cart version at
// which that line last changed (as etcd's mod_revision), so it is unique
// within the cart and an edit of line A never moves line B. SetQty and
// DeleteLine must carry the line_version; a stale one is version_conflict
// with the current line (Result.ConflictLine) and changes nothing. SetQty
// takes 1..1,000,000; qty 0 is invalid_argument (delete the line instead).
//
// # States
//
//   - open: editable.
//   - needs_review: a review-policy merge found conflicts, or the cart was
//     touched with prices older than Config.PriceAgeMs. Checkout start
//     refuses it (invalid_state). The next line edit (add, set, delete) or
//     Review clears it; the command that raised it never clears it, so the
//     client always sees the flag once. Clearing a price review, and any
//     Review, acknowledges the prices: their age restarts at that time.
//   - checked_out: a checkout was started. Edits stay allowed: a line edit
//     or a merge into the cart reopens it (state open, version moves); the
//     snapshot never changes. Review leaves it checked_out. A new checkout
//     start is refused (invalid_state) while the latest checkout is held
//     and unexpired, or once it was confirmed (edit the cart to reopen it
//     and order again); after the hold lapsed it is allowed.
//   - merged: retired into MergedInto. Every command on it is
//     invalid_state, except merging it again into the same target, which
//     returns the first report and changes nothing.
//
// Price age: every mutating command on a cart is a touch. A touch finding
// a line whose price was set (or acknowledged) more than PriceAgeMs ago
// flags the cart needs_review ("prices older than 7d"). Checkout start is
// a touch too: it flags the cart and is refused, and the flag stays.
//
// # Merge
//
// Merge(target, source, policy) matches source lines to target lines by
// identity. Lines only in the source are added (new line ids in the
// target); lines only in the target are untouched and not reported. For a
// line on both sides, "later" means the larger updated_at, ties going to
// the target:
//
//   - sum: qty = target + source (summed); price and pool from the later line.
//   - max: the larger qty wins the whole line (kept_source/kept_target);
//     equal quantities collapse (target kept).
//   - latest: the later line wins (kept_source/kept_target).
//   - target_wins / source_wins: that side's line wins.
//   - review (default): the later line is kept; equal quantities collapse,
//     different ones are conflicts and the target becomes needs_review.
//
// Every resulting qty of a reported line is capped at its pool's
// per-buyer limit (and at 1,000,000); a capped line reports capped,
// except that a conflict stays a conflict (its qty is still capped).
// Each report entry carries the resulting line, the source line id and
// both quantities before the merge. A line changed by the merge gets the
// new cart version and updated_at = merge time; an unchanged one keeps
// both. The source becomes merged (its lines stay readable) and remembers
// its report, so merging it into the same target again is a no-op with
// the same report; into any other target it is invalid_state. Merging a
// cart into itself is invalid_argument; a result over 200 lines is
// invalid_argument and changes nothing. A merge into a checked_out target
// reopens it. Ownership is not checked here: that is the API's job.
//
// # Checkout
//
// Checkout start needs expected_version (required; version_conflict with
// the current cart in Result.ConflictCart if it moved), refuses
// needs_review, empty carts and carts over allocator.MaxLines (100) lines
// (invalid_state), and reserves every line, in cart order, in one
// reservation for the cart's owner (all_or_nothing unless Partial). A
// line whose pool does not exist counts as sold_out ("no such pool") and
// is not sent to the allocator. The snapshot {id, cart_id, cart_version,
// validated_at, expires_at, reservation_id, lines, corrections} is
// immutable; lines not held carry their state and are listed in
// corrections; the cart's lines are not changed. A refusal stores nothing
// and returns the allocator's error with Result.Corrections (the lines
// that failed, in cart order). The checkout's small mutable State is held
// until confirm: confirmed on success (again: success), expired when the
// allocator says the hold expired (or has forgotten a reservation whose
// expires_at passed), failed when the reservation was released. State is
// only updated by confirm; a held checkout whose expires_at passed has
// lapsed. Confirm never touches the cart. Snapshots are deleted by Tick
// Config.CheckoutRetentionMs (default 30 days) after their expires_at.
//
// # Idempotency
//
// A command with IdemKey is remembered, result included (refusals too),
// for Config.IdempotencyTTLMs of log time. A retry with the same key,
// kind, target (cart, or checkout for confirm) and ReqHash returns the
// first Result again with Replayed set, even if the cart changed since;
// any difference is idempotency_mismatch. Cart keys are a namespace of
// their own, apart from the allocator's.
//
// # Ids and keys
//
// Carts are "c_<hex>", lines "l_<hex>" (per cart, never reused),
// checkouts "co_<hex>", all from counters in the Store, in lowercase hex
// without leading zeros; any other spelling is invalid_argument. Owners
// are "anon:<id>" or "user:<id>". Every key starts with Prefix (0x10) and
// a sub-kind byte; see the key layout beside Prefix. Values start with a
// format byte. Idle carts (untouched for Config.IdleTTLMs), expired
// idempotency keys and old checkouts are found through time-ordered
// indexes (prefix, big-endian due, id) and deleted by Tick, a bounded
// number per call, in (due, id) order.
//
// A stored value that does not decode is reported as invalid_state
// ("stored record is corrupt") rather than a panic.
package cart
