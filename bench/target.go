// Package bench is holdfast's load harness: realistic drop and retail
// workloads run against a target (a holdfast cluster, Redis with Lua
// scripts, PostgreSQL, or a no-op HTTP ceiling), with latency histograms
// and a correctness ledger checked against the target's final state.
//
// Main is `holdfast bench SCENARIO [flags]`. The scenarios (drop, retail,
// merge) are sessions of operations with think times, driven by a runner
// in open loop (sessions scheduled at a rate, latency measured from the
// scheduled time: no coordinated omission) or closed loop (a fixed number
// of requests in flight); see runner.go. Each operation's latency goes to
// an HDR histogram, and every second's to a time series.
//
// After the load, the target's final state (Target.Ledger) is checked
// against what the harness saw (checkLedger): no oversell, no buyer over
// its limit, every acknowledged confirm sold, no units stuck in holds
// that expired. Expiry lag is measured with probe holds on pools of their
// own (expiryProbes); fairness as Jain's index of units per distinct
// buyer, queue jumps (fresh grants sent after a request was told to wait)
// and, for draws, the win rate by entry-time decile; late disappointment
// as the share of checkout starts (reserve attempts in a drop) refused for
// stock on a pool a cart read had shown in stock within 30 s.
//
// A target implements Target; optional interfaces add what some can do:
// HoldReader (queued buyers poll their place), PoolReader (cheap pool
// reads for the probes), CartTarget (a native cart API; otherwise the
// retail flow is emulated with Reserve, InStock and Confirm) and
// MergeTarget (the merge scenario). Targets are opened from URLs through a
// Registry.
package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Target is a system under test. Implementations must be safe for
// concurrent use by many workers.
type Target interface {
	// Name labels the target in reports, e.g. "holdfast", "redis-always".
	Name() string
	// Setup creates (or resets) the pools a scenario uses.
	Setup(ctx context.Context, pools []PoolSpec) error
	// Reserve asks for units for a buyer; refusals are outcomes, not errors.
	Reserve(ctx context.Context, r ReserveRequest) (Hold, error)
	// Confirm turns a hold into a sale.
	Confirm(ctx context.Context, h Hold) (Outcome, error)
	// Release gives a hold back.
	Release(ctx context.Context, h Hold) (Outcome, error)
	// InStock is what a cart page shows for a pool: for holdfast, a
	// soft_claim; for a peer, a positive stock count. It feeds the
	// late-disappointment measure.
	InStock(ctx context.Context, pool string) (bool, error)
	// Ledger reads the final state for the correctness checks. holds are
	// the ids of every hold the harness was given (a target without a
	// listing endpoint looks them up one by one).
	Ledger(ctx context.Context, pools []string, holds []string) (Ledger, error)
	Close() error
}

// PoolSpec describes one pool of a scenario.
type PoolSpec struct {
	ID            string
	OnHand        int64
	PerBuyerLimit int64 // 0: none
	HoldTTLMs     int64
	// Draw, when set, makes a draw pool (holdfast only; peers run fcfs).
	Draw *DrawSpec
	// Waitlist enables a FIFO waitlist (holdfast only).
	Waitlist bool
}

// DrawSpec is a draw window.
type DrawSpec struct {
	OpensAt, ClosesAt time.Time
	Seed              string
}

// ReserveRequest is one hold request.
type ReserveRequest struct {
	Buyer   string
	Pool    string
	Qty     int64
	TTLMs   int64
	Wait    bool   // queue when sold out (targets with waitlists)
	IdemKey string // retried requests reuse it
}

// Outcome is how a target answered.
type Outcome uint8

// Outcomes.
const (
	OK Outcome = iota
	SoldOut
	BuyerLimit
	NotOpen
	Expired
	InvalidState
	Waiting // queued or entered in a draw
	Failed  // any other error (transport, 5xx)
	// Conflict is a stale version or a reused idempotency key with another
	// body (cart targets).
	Conflict
	// NotFound is an unknown pool, hold, cart or checkout.
	NotFound
)

// NumOutcomes is the number of Outcome values.
const NumOutcomes = int(NotFound) + 1

var outcomeNames = [...]string{"ok", "sold_out", "buyer_limit", "not_open", "expired", "invalid_state", "waiting", "failed", "conflict", "not_found"}

// String names the outcome in reports.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// Hold is a target's answer to Reserve.
type Hold struct {
	ID        string // target's reservation id; empty unless OK or Waiting
	Outcome   Outcome
	ExpiresAt time.Time
}

// Ledger is a target's final state.
type Ledger struct {
	Pools map[string]PoolLedger
	// Units held or sold per buyer and pool, for the per-buyer limit check.
	BuyerUnits map[BuyerPool]int64
	// Confirmed is the set of reservation ids the target has as sold.
	Confirmed map[string]bool
}

// PoolLedger is one pool's final counts.
type PoolLedger struct {
	OnHand, Held, Sold int64
}

// BuyerPool keys BuyerUnits.
type BuyerPool struct{ Buyer, Pool string }

// ErrNoLedger is what Ledger returns for a target that keeps no state (the
// no-op ceiling): the correctness checks are then reported as n/a.
var ErrNoLedger = errors.New("bench: the target keeps no state")

// TargetOptions are the harness settings a target is opened with.
type TargetOptions struct {
	// Conns bounds the connections per server (per node for a cluster).
	Conns int
	// Timeout bounds one request, retries included.
	Timeout time.Duration
	// Retries is how many times a request answered "unavailable" (503) or
	// lost in transport is sent again, with the same idempotency key.
	Retries int
	// LeaderAware (holdfast only) sends writes and linearizable reads
	// straight to the leader, learned from the X-Holdfast-Node header of
	// their answers, instead of round-robin (followers forward them).
	LeaderAware bool
	// Token, when set, is sent as "Authorization: Bearer TOKEN" to
	// holdfast targets (a server with --auth-file).
	Token string
	// TLS configures https:// holdfast targets; nil: the system's roots.
	TLS *tls.Config
}

// Opener opens a target from its URL.
type Opener func(url string, opts TargetOptions) (Target, error)

// Registry maps a URL scheme to the function that opens targets of that
// scheme. cmd/holdfast builds one explicitly (peers' schemes) and hands it
// to Main; "http" (holdfast) and "noop" are built in.
type Registry map[string]Opener

// RegisterTarget adds (or replaces) the opener of a scheme.
func (r Registry) RegisterTarget(scheme string, open func(url string, opts TargetOptions) (Target, error)) {
	r[scheme] = open
}

// Builtin returns a registry with the harness's own targets: "http" and
// "https" (a holdfast cluster) and "noop" (the ceiling).
func Builtin() Registry {
	return Registry{"http": OpenHoldfast, "https": OpenHoldfast, "noop": OpenNoop}
}

// Open opens the target a URL names, by its scheme.
func (r Registry) Open(rawURL string, opts TargetOptions) (Target, error) {
	scheme, _, ok := strings.Cut(rawURL, "://")
	if !ok {
		if u, err := url.Parse(rawURL); err == nil && u.Scheme != "" {
			scheme = u.Scheme
		} else {
			return nil, fmt.Errorf("target %q: want scheme://...", rawURL)
		}
	}
	open := r[strings.ToLower(scheme)]
	if open == nil {
		var known []string
		for k := range r {
			known = append(known, k)
		}
		sort.Strings(known)
		return nil, fmt.Errorf("target %q: unknown scheme %q (known: %s)", rawURL, scheme, strings.Join(known, ", "))
	}
	return open(rawURL, opts)
}

// HoldState is a hold's state as HoldReader reports it.
type HoldState uint8

// Hold states (the contract's reservation states).
const (
	HoldUnknown HoldState = iota
	HoldWaiting
	HoldActive
	HoldConfirmed
	HoldReleased
	HoldExpired
)

var holdStateNames = [...]string{"unknown", "waiting", "active", "confirmed", "released", "expired"}

// String names the state.
func (s HoldState) String() string {
	if int(s) < len(holdStateNames) {
		return holdStateNames[s]
	}
	return "unknown"
}

// HoldStatus is a hold's current state.
type HoldStatus struct {
	State     HoldState
	ExpiresAt time.Time
	// Position is the place in a waitlist (1 = next), 0 when not queued or
	// not known (a draw entry before the close).
	Position int64
}

// HoldReader is implemented by targets that can report a hold's current
// state. Buyers in a waitlist or a draw poll it to learn that they were
// offered units; without it they cannot.
type HoldReader interface {
	ReadHold(ctx context.Context, id string) (HoldStatus, error)
}

// PoolReader is implemented by targets that can read one pool's counts
// cheaply. The expiry-lag probes poll it; without it they use Ledger with
// that one pool and no holds.
type PoolReader interface {
	ReadPool(ctx context.Context, pool string) (PoolLedger, error)
}

// CartLine is a line a shopper adds to a cart: qty units of a pool.
type CartLine struct {
	Pool string
	Qty  int64
}

// CartView is a cart as a cart read (or a cart write) returns it.
type CartView struct {
	ID      string
	Version int64
	// State is "open", "needs_review", "checked_out" or "merged".
	State string
	Lines []CartLineView
}

// CartLineView is one line of a cart read.
type CartLineView struct {
	ID   string
	Pool string
	Qty  int64
	// InStock is what the cart page shows for the line (holdfast: the
	// pool's claim is soft_claim).
	InStock   bool
	UpdatedAt time.Time
}

// CheckoutResult is a checkout start's answer.
type CheckoutResult struct {
	ID      string
	Outcome Outcome
	// Holds are the reservations the checkout handed out: one taking
	// every line for holdfast; for an emulated checkout one per line,
	// released again when a line failed.
	Holds []Hold
	// Failed lists the pools of the lines that could not be held.
	Failed []string
}

// CartTarget is implemented by targets with a native cart API (holdfast).
// A target without it gets the retail flow emulated with Reserve, InStock
// and Confirm. Refusals are outcomes; errors are failures (Outcome Failed).
type CartTarget interface {
	CreateCart(ctx context.Context, owner, idemKey string) (CartView, Outcome, error)
	AddLine(ctx context.Context, cartID string, line CartLine, idemKey string) (CartView, Outcome, error)
	// ReadCart returns the cart with each line's in-stock flag.
	ReadCart(ctx context.Context, cartID string) (CartView, error)
	// Checkout reserves every line of the cart at expectedVersion in one
	// all-or-nothing hold of ttlMs.
	Checkout(ctx context.Context, cartID string, expectedVersion, ttlMs int64, idemKey string) (CheckoutResult, error)
	// ConfirmCheckout places the order: the checkout's holds become sales.
	ConfirmCheckout(ctx context.Context, checkoutID, idemKey string) (Outcome, error)
}

// MergeLine is one source line's fate in a merge.
type MergeLine struct {
	Pool string
	// Outcome is the contract's merge outcome: added, collapsed, summed,
	// kept_target, kept_source, conflict, capped.
	Outcome              string
	Qty                  int64 // the merged line's quantity
	TargetQty, SourceQty int64
}

// MergeResult is a merge's answer.
type MergeResult struct {
	Outcome Outcome
	Cart    CartView
	Report  []MergeLine
}

// MergeTarget is implemented by targets that merge carts (holdfast only):
// the merge scenario needs it.
type MergeTarget interface {
	CartTarget
	// MergeCarts merges source into target under policy ("review", ...).
	MergeCarts(ctx context.Context, target, source, policy, idemKey string) (MergeResult, error)
	// ReviewCart clears a cart's needs_review state.
	ReviewCart(ctx context.Context, cartID, idemKey string) (CartView, Outcome, error)
}
