// Package bench is holdfast's load harness: realistic drop and retail
// workloads run against a target (a holdfast cluster, Redis with Lua
// scripts, PostgreSQL, or a no-op HTTP ceiling), with latency histograms
// and a correctness ledger checked against the target's final state.
package bench

import (
	"context"
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
)

var outcomeNames = [...]string{"ok", "sold_out", "buyer_limit", "not_open", "expired", "invalid_state", "waiting", "failed"}

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
