// Package peers holds the harness's peer targets: the same drop semantics
// built the way a competent user of Redis or PostgreSQL would build them,
// so holdfast's numbers have something honest to stand next to.
//
// Both peers implement bench.Target with holdfast's reservation rules:
//
//   - A reserve is refused with buyer_limit when the buyer's units in the
//     pool (held plus sold) plus the request would pass the pool's
//     per-buyer limit, else with sold_out when on_hand-held-sold is below
//     the request (the buyer first, as holdfast does).
//   - A hold whose expiry has passed (now >= expires_at) is over: confirm
//     and release answer expired and its units go back at once if the
//     sweeper has not returned them yet. Confirming a confirmed hold and
//     releasing a released one are ok (idempotent); releasing a confirmed
//     hold and confirming a released one are invalid_state.
//   - A reserve that would be refused first returns the units of holds
//     that are already due (bounded batches), so a peer never refuses
//     units that have expired but were not swept yet.
//   - A background sweeper returns due holds every sweep_ms (default 50)
//     in batches of sweep_batch (default 256).
//   - An IdemKey makes a retried reserve answer the first successful hold
//     again (same id and expiry, even if the hold has ended since). Only
//     successes are remembered (Redis: 24h; PostgreSQL: until the next
//     Setup), so a retried refusal is tried again.
//     Keys are global: one reused for another pool, buyer or quantity
//     answers conflict.
//   - Draw pools run first-come-first-served and waitlists are ignored:
//     Wait and PoolSpec.Draw/Waitlist have no effect on a peer.
//   - TTLMs 0 means the pool's HoldTTLMs (or one minute if that is 0 too).
//   - Ledger first returns every due hold, so Held counts live holds only;
//     it lists confirmed holds itself and does not need the holds argument.
//     ReadPool (bench.PoolReader) reads the raw counts without sweeping, so
//     the expiry-lag probes see the sweeper's real lag.
//   - An unknown pool or hold is the outcome not_found.
//   - TargetOptions: Conns sizes the connection pool (Redis: Conns, default
//     256; PostgreSQL: at most Conns, default max(32, 8*GOMAXPROCS), and
//     never more than the server's max_connections minus 10); Timeout
//     bounds one operation, retries included (default 10s); Retries is how
//     many times an operation that failed in transport is sent again, for
//     retry-safe operations only: confirm, release, reads, and reserves
//     that carry an IdemKey. The drivers' own retries are off.
//
// Both accept extra URL query parameters, removed before the driver sees
// the URL: name (the report label), sweep_ms, sweep_batch.
package peers

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/holdfast/holdfast/bench"
)

const (
	defaultSweepInterval = 50 * time.Millisecond
	defaultSweepBatch    = 256
	defaultHoldTTLMs     = 60_000
	idemTTL              = 24 * time.Hour
	defaultTimeout       = 10 * time.Second
	// maxSweepBatchesPerTick bounds one sweeper tick; the next tick goes on.
	maxSweepBatchesPerTick = 64
	// maxRefusalSweeps bounds the due holds one refused reserve returns
	// before it gives up and refuses (the sweeper gets the rest).
	maxRefusalSweeps = 4
)

// peerOptions are the query parameters the peers take out of a URL.
type peerOptions struct {
	name          string
	sweepInterval time.Duration
	sweepBatch    int
}

// splitURL removes the peers' own query parameters from raw and returns
// the rest of the URL for the driver.
func splitURL(raw string) (string, peerOptions, error) {
	o := peerOptions{sweepInterval: defaultSweepInterval, sweepBatch: defaultSweepBatch}
	u, err := url.Parse(raw)
	if err != nil {
		return "", o, fmt.Errorf("peers: bad URL: %w", err)
	}
	q := u.Query()
	o.name = q.Get("name")
	if v := q.Get("sweep_ms"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			return "", o, fmt.Errorf("peers: sweep_ms must be a positive integer, got %q", v)
		}
		o.sweepInterval = time.Duration(ms) * time.Millisecond
	}
	if v := q.Get("sweep_batch"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 4096 {
			return "", o, fmt.Errorf("peers: sweep_batch must be in 1..4096, got %q", v)
		}
		o.sweepBatch = n
	}
	q.Del("name")
	q.Del("sweep_ms")
	q.Del("sweep_batch")
	u.RawQuery = q.Encode()
	return u.String(), o, nil
}

func ttlFor(reqTTL, poolTTL int64) int64 {
	switch {
	case reqTTL > 0:
		return reqTTL
	case poolTTL > 0:
		return poolTTL
	}
	return defaultHoldTTLMs
}

// ops applies TargetOptions' timeout and retries to one operation.
type ops struct {
	timeout time.Duration
	retries int
	// logical reports errors the server answered (a script error, a
	// constraint): those are never retried.
	logical func(error) bool
}

func newOps(o bench.TargetOptions, logical func(error) bool) ops {
	p := ops{timeout: o.Timeout, retries: max(o.Retries, 0), logical: logical}
	if p.timeout <= 0 {
		p.timeout = defaultTimeout
	}
	return p
}

// do runs f under the timeout; when safe, it runs f again after a
// transport failure, up to retries more times.
func (p ops) do(ctx context.Context, safe bool, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		err := f(ctx)
		if err == nil || !safe || attempt >= p.retries || ctx.Err() != nil ||
			p.logical(err) || errors.Is(err, errNotFound) {
			return err
		}
	}
}

// errNotFound marks an unknown pool or hold inside an operation; the
// operation answers bench.NotFound.
var errNotFound = errors.New("not found")
