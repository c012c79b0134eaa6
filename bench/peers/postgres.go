package peers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/holdfast/holdfast/bench"
)

// PostgreSQL: tables in schema hfbench (the connections' search_path),
// dropped and created again by Setup. Statements go through pgx's default
// mode: prepared once per connection and cached (extended protocol).
// synchronous_commit is on for every connection.
//
// Lock order, the same in every transaction so none can deadlock: a
// reservation row, then buyer_units rows (sorted), then pools rows
// (sorted). The hot pool row is the last thing a reserve touches, so its
// lock is held only for that statement and the commit. A transaction that
// still hits a deadlock or serialization failure is retried.
//
// buyer_units is kept for pools with a per-buyer limit only (a competent
// user does not maintain a counter nothing reads); a reserve on a pool
// without a limit is a single statement. Ledger.BuyerUnits is summed from
// the reservations (held or confirmed), for every pool.
const pgSchema = `
DROP SCHEMA IF EXISTS hfbench CASCADE;
CREATE SCHEMA hfbench;
CREATE TABLE hfbench.pools (
	id              text PRIMARY KEY,
	on_hand         bigint NOT NULL CHECK (on_hand >= 0),
	held            bigint NOT NULL DEFAULT 0,
	sold            bigint NOT NULL DEFAULT 0,
	per_buyer_limit bigint NOT NULL DEFAULT 0,
	hold_ttl_ms     bigint NOT NULL,
	CHECK (held >= 0 AND sold >= 0 AND held + sold <= on_hand)
) WITH (fillfactor = 10);
CREATE TABLE hfbench.buyer_units (
	pool_id text   NOT NULL,
	buyer   text   NOT NULL,
	units   bigint NOT NULL CHECK (units >= 0),
	PRIMARY KEY (pool_id, buyer)
);
CREATE TABLE hfbench.reservations (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	pool_id    text        NOT NULL,
	buyer      text        NOT NULL,
	qty        bigint      NOT NULL CHECK (qty > 0),
	state      text        NOT NULL DEFAULT 'held'
	           CHECK (state IN ('held', 'confirmed', 'released', 'expired')),
	expires_at timestamptz NOT NULL,
	idem_key   text UNIQUE
);
CREATE INDEX reservations_due ON hfbench.reservations (expires_at) WHERE state = 'held';
`

const (
	pgIdemLookup = `SELECT id, pool_id, buyer, qty, expires_at FROM reservations WHERE idem_key = $1`

	// The per-buyer limit: a conditional upsert, nothing written when the
	// buyer would pass the limit.
	pgBuyerTake = `INSERT INTO buyer_units AS b (pool_id, buyer, units)
SELECT $1, $2, $3::bigint WHERE $3::bigint <= $4::bigint
ON CONFLICT (pool_id, buyer) DO UPDATE SET units = b.units + EXCLUDED.units
WHERE b.units + EXCLUDED.units <= $4::bigint
RETURNING units`

	// The stock check and the hold in one statement: no row when sold out.
	pgReserve = `WITH p AS (
	UPDATE pools SET held = held + $3 WHERE id = $1 AND on_hand - held - sold >= $3 RETURNING id
)
INSERT INTO reservations (pool_id, buyer, qty, expires_at, idem_key)
SELECT p.id, $2, $3, now() + $4::bigint * interval '1 millisecond', $5 FROM p
RETURNING id, expires_at`

	pgConfirm = `WITH r AS (
	UPDATE reservations SET state = 'confirmed'
	WHERE id = $1 AND state = 'held' AND expires_at > now()
	RETURNING pool_id, qty
)
UPDATE pools SET held = pools.held - r.qty, sold = pools.sold + r.qty FROM r WHERE pools.id = r.pool_id`

	pgLookup = `SELECT state, expires_at <= now() FROM reservations WHERE id = $1`

	pgReleaseHold = `UPDATE reservations SET state = 'released'
WHERE id = $1 AND state = 'held' AND expires_at > now()
RETURNING pool_id, buyer, qty`

	pgExpireHold = `UPDATE reservations SET state = 'expired'
WHERE id = $1 AND state = 'held' AND expires_at <= now()
RETURNING pool_id, buyer, qty`

	pgSweep = `UPDATE reservations SET state = 'expired'
WHERE state = 'held' AND id IN (
	SELECT id FROM reservations WHERE state = 'held' AND expires_at <= now()
	ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING pool_id, buyer, qty`

	pgSweepPool = `UPDATE reservations SET state = 'expired'
WHERE state = 'held' AND id IN (
	SELECT id FROM reservations WHERE state = 'held' AND expires_at <= now() AND pool_id = $2
	ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING pool_id, buyer, qty`

	pgDueExists = `SELECT EXISTS (SELECT 1 FROM reservations WHERE state = 'held' AND expires_at <= now() AND pool_id = $1)`

	pgBuyerGive = `UPDATE buyer_units SET units = units - $3 WHERE pool_id = $1 AND buyer = $2`
	pgPoolGive  = `UPDATE pools SET held = held - $2 WHERE id = $1`

	pgPoolConfig = `SELECT per_buyer_limit, hold_ttl_ms FROM pools WHERE id = $1`
	pgReadPool   = `SELECT on_hand, held, sold FROM pools WHERE id = $1`
	pgReadHold   = `SELECT state, expires_at, expires_at <= now() FROM reservations WHERE id = $1`
)

type pgPool struct{ limit, ttl int64 }

type pgTarget struct {
	db   *pgxpool.Pool
	name string
	o    peerOptions
	ops  ops

	mu    sync.RWMutex
	pools map[string]pgPool
	// ready: the schema exists (Setup ran, or a pool was read); until
	// then the sweeper waits rather than fail every tick.
	ready atomic.Bool

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// OpenPostgres connects a pgxpool to url (postgres://user@host:port/db)
// and starts the target's sweeper. The pool has at most opts.Conns
// connections, default max(32, 8*GOMAXPROCS) (pool_max_conns in the URL
// wins), and never more than the server's max_connections minus 10: a
// competent user sizes the pool to the server, not to the client's
// concurrency.
func OpenPostgres(rawURL string, opts bench.TargetOptions) (bench.Target, error) {
	rest, o, err := splitURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(rest)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(rest, "pool_max_conns=") {
		cfg.MaxConns = int32(max(32, 8*runtime.GOMAXPROCS(0)))
		if opts.Conns > 0 {
			cfg.MaxConns = min(cfg.MaxConns, int32(opts.Conns))
		}
	}
	rp := cfg.ConnConfig.RuntimeParams
	rp["synchronous_commit"] = "on"
	rp["search_path"] = "hfbench"
	if rp["application_name"] == "" {
		rp["application_name"] = "holdfast-bench"
	}
	t := &pgTarget{name: o.name, o: o, pools: map[string]pgPool{},
		stop: make(chan struct{}), done: make(chan struct{})}
	t.ops = newOps(opts, func(err error) bool {
		var pe *pgconn.PgError
		return errors.As(err, &pe) || errors.Is(err, pgx.ErrNoRows)
	})
	ctx, cancel := context.WithTimeout(context.Background(), t.ops.timeout)
	defer cancel()
	// Ask the server how many connections it takes before sizing the pool.
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("peers: postgres %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	var maxConns int32
	err = conn.QueryRow(ctx, `SELECT current_setting('max_connections')::int`).Scan(&maxConns)
	conn.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("peers: postgres: %w", err)
	}
	cfg.MaxConns = max(1, min(cfg.MaxConns, maxConns-10))
	if t.db, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, err
	}
	if t.name == "" {
		t.name = "postgres"
	}
	go t.sweeper()
	return t, nil
}

func (t *pgTarget) Name() string { return t.name }

// Setup drops and creates the schema and inserts the pools.
func (t *pgTarget) Setup(ctx context.Context, pools []bench.PoolSpec) error {
	if _, err := t.db.Exec(ctx, pgSchema); err != nil {
		return fmt.Errorf("peers: postgres schema: %w", err)
	}
	// Connections cached statements against the old tables.
	t.db.Reset()
	rows := make([][]any, len(pools))
	cache := make(map[string]pgPool, len(pools))
	for i, p := range pools {
		ttl := ttlFor(0, p.HoldTTLMs)
		rows[i] = []any{p.ID, p.OnHand, p.PerBuyerLimit, ttl}
		cache[p.ID] = pgPool{limit: p.PerBuyerLimit, ttl: ttl}
	}
	if _, err := t.db.CopyFrom(ctx, pgx.Identifier{"pools"},
		[]string{"id", "on_hand", "per_buyer_limit", "hold_ttl_ms"}, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("peers: postgres pools: %w", err)
	}
	t.mu.Lock()
	t.pools = cache
	t.mu.Unlock()
	t.ready.Store(true)
	return nil
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// poolConfig reads a pool's limit and TTL, cached; q is the caller's
// transaction when it has one (it must not wait for a second connection).
func (t *pgTarget) poolConfig(ctx context.Context, q querier, pool string) (pgPool, error) {
	t.mu.RLock()
	p, ok := t.pools[pool]
	t.mu.RUnlock()
	if ok {
		return p, nil
	}
	if err := q.QueryRow(ctx, pgPoolConfig, pool).Scan(&p.limit, &p.ttl); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return p, fmt.Errorf("peers: postgres: pool %q: %w", pool, errNotFound)
		}
		return p, err
	}
	t.mu.Lock()
	t.pools[pool] = p
	t.mu.Unlock()
	t.ready.Store(true)
	return p, nil
}

// retryable: deadlock_detected, serialization_failure.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

func uniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// inTx runs f in a transaction, again on a deadlock or serialization
// failure.
func (t *pgTarget) inTx(ctx context.Context, f func(pgx.Tx) error) error {
	var err error
	for range 5 {
		err = pgx.BeginFunc(ctx, t.db, f)
		if !retryable(err) {
			return err
		}
	}
	return err
}

// errRefused rolls a reserve's transaction back with an outcome.
type errRefused struct{ o bench.Outcome }

func (e errRefused) Error() string { return e.o.String() }

func (t *pgTarget) Reserve(ctx context.Context, r bench.ReserveRequest) (bench.Hold, error) {
	if r.Qty <= 0 {
		return bench.Hold{Outcome: bench.Failed}, fmt.Errorf("peers: qty %d", r.Qty)
	}
	var h bench.Hold
	err := t.ops.do(ctx, r.IdemKey != "", func(ctx context.Context) (err error) {
		h, err = t.reserve(ctx, r)
		return err
	})
	switch {
	case errors.Is(err, errNotFound):
		return bench.Hold{Outcome: bench.NotFound}, nil
	case err != nil:
		return bench.Hold{Outcome: bench.Failed}, err
	}
	return h, nil
}

func (t *pgTarget) reserve(ctx context.Context, r bench.ReserveRequest) (bench.Hold, error) {
	if r.IdemKey != "" {
		if h, ok, err := t.replay(ctx, r); ok || err != nil {
			return h, err
		}
	}
	p, err := t.poolConfig(ctx, t.db, r.Pool)
	if err != nil {
		return bench.Hold{Outcome: bench.Failed}, err
	}
	ttl := ttlFor(r.TTLMs, p.ttl)
	for sweeps := 0; ; sweeps++ {
		h, err := t.tryReserve(ctx, r, p, ttl)
		if err != nil {
			if r.IdemKey != "" && uniqueViolation(err) {
				// A concurrent retry with the same key won.
				if h, ok, err := t.replay(ctx, r); ok || err != nil {
					return h, err
				}
			}
			return bench.Hold{Outcome: bench.Failed}, err
		}
		if h.Outcome == bench.OK || sweeps >= maxRefusalSweeps {
			return h, nil
		}
		// Refused: return the pool's due holds, if any, and try again.
		var due bool
		if err := t.db.QueryRow(ctx, pgDueExists, r.Pool).Scan(&due); err != nil || !due {
			return h, err
		}
		if _, err := t.sweep(ctx, r.Pool); err != nil {
			return h, err
		}
	}
}

func (t *pgTarget) replay(ctx context.Context, r bench.ReserveRequest) (bench.Hold, bool, error) {
	var (
		id          int64
		pool, buyer string
		qty         int64
		exp         time.Time
	)
	err := t.db.QueryRow(ctx, pgIdemLookup, r.IdemKey).Scan(&id, &pool, &buyer, &qty, &exp)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return bench.Hold{}, false, nil
	case err != nil:
		return bench.Hold{Outcome: bench.Failed}, false, err
	case pool != r.Pool || buyer != r.Buyer || qty != r.Qty:
		return bench.Hold{Outcome: bench.Conflict}, true, nil
	}
	return bench.Hold{ID: strconv.FormatInt(id, 10), Outcome: bench.OK, ExpiresAt: exp}, true, nil
}

func (t *pgTarget) tryReserve(ctx context.Context, r bench.ReserveRequest, p pgPool, ttl int64) (bench.Hold, error) {
	var idem any
	if r.IdemKey != "" {
		idem = r.IdemKey
	}
	var (
		id  int64
		exp time.Time
	)
	if p.limit == 0 {
		// No limit: one statement, its own transaction.
		var err error
		for range 5 {
			err = t.db.QueryRow(ctx, pgReserve, r.Pool, r.Buyer, r.Qty, ttl, idem).Scan(&id, &exp)
			if !retryable(err) {
				break
			}
		}
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return bench.Hold{Outcome: bench.SoldOut}, nil
		case err != nil:
			return bench.Hold{Outcome: bench.Failed}, err
		}
		return bench.Hold{ID: strconv.FormatInt(id, 10), Outcome: bench.OK, ExpiresAt: exp}, nil
	}
	err := t.inTx(ctx, func(tx pgx.Tx) error {
		var units int64
		err := tx.QueryRow(ctx, pgBuyerTake, r.Pool, r.Buyer, r.Qty, p.limit).Scan(&units)
		if errors.Is(err, pgx.ErrNoRows) {
			return errRefused{bench.BuyerLimit}
		} else if err != nil {
			return err
		}
		err = tx.QueryRow(ctx, pgReserve, r.Pool, r.Buyer, r.Qty, ttl, idem).Scan(&id, &exp)
		if errors.Is(err, pgx.ErrNoRows) {
			return errRefused{bench.SoldOut}
		}
		return err
	})
	var ref errRefused
	switch {
	case errors.As(err, &ref):
		return bench.Hold{Outcome: ref.o}, nil
	case err != nil:
		return bench.Hold{Outcome: bench.Failed}, err
	}
	return bench.Hold{ID: strconv.FormatInt(id, 10), Outcome: bench.OK, ExpiresAt: exp}, nil
}

// ended is a hold that ended with its units going back.
type ended struct {
	pool, buyer string
	qty         int64
}

// giveBack returns ended holds' units in lock order: buyer_units rows
// sorted, then pools rows sorted, in one round trip.
func (t *pgTarget) giveBack(ctx context.Context, tx pgx.Tx, es []ended) error {
	buyers := map[[2]string]int64{}
	pools := map[string]int64{}
	for _, e := range es {
		p, err := t.poolConfig(ctx, tx, e.pool)
		if err != nil {
			return err
		}
		if p.limit > 0 {
			buyers[[2]string{e.pool, e.buyer}] += e.qty
		}
		pools[e.pool] += e.qty
	}
	b := &pgx.Batch{}
	bk := make([][2]string, 0, len(buyers))
	for k := range buyers {
		bk = append(bk, k)
	}
	slices.SortFunc(bk, func(x, y [2]string) int {
		return cmp.Or(strings.Compare(x[0], y[0]), strings.Compare(x[1], y[1]))
	})
	for _, k := range bk {
		b.Queue(pgBuyerGive, k[0], k[1], buyers[k])
	}
	pk := make([]string, 0, len(pools))
	for k := range pools {
		pk = append(pk, k)
	}
	slices.Sort(pk)
	for _, k := range pk {
		b.Queue(pgPoolGive, k, pools[k])
	}
	br := tx.SendBatch(ctx, b)
	for range b.Len() {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return err
		}
	}
	return br.Close()
}

func scanEnded(rows pgx.Rows) ([]ended, error) {
	var es []ended
	for rows.Next() {
		var e ended
		if err := rows.Scan(&e.pool, &e.buyer, &e.qty); err != nil {
			rows.Close()
			return nil, err
		}
		es = append(es, e)
	}
	return es, rows.Err()
}

// endHold runs a single-hold release or expiry (sql returns the ended
// hold) and gives its units back; false when no row matched.
func (t *pgTarget) endHold(ctx context.Context, sql string, id int64) (bool, error) {
	var found bool
	err := t.inTx(ctx, func(tx pgx.Tx) error {
		found = false
		rows, err := tx.Query(ctx, sql, id)
		if err != nil {
			return err
		}
		es, err := scanEnded(rows)
		if err != nil || len(es) == 0 {
			return err
		}
		found = true
		return t.giveBack(ctx, tx, es)
	})
	return found, err
}

// sweep expires one batch of due holds (of pool, or of every pool when
// pool is empty) and returns how many.
func (t *pgTarget) sweep(ctx context.Context, pool string) (int, error) {
	var n int
	err := t.inTx(ctx, func(tx pgx.Tx) error {
		var (
			rows pgx.Rows
			err  error
		)
		if pool == "" {
			rows, err = tx.Query(ctx, pgSweep, t.o.sweepBatch)
		} else {
			rows, err = tx.Query(ctx, pgSweepPool, t.o.sweepBatch, pool)
		}
		if err != nil {
			return err
		}
		es, err := scanEnded(rows)
		if err != nil {
			return err
		}
		n = len(es)
		if n == 0 {
			return nil
		}
		return t.giveBack(ctx, tx, es)
	})
	return n, err
}

func (t *pgTarget) sweeper() {
	defer close(t.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-t.stop; cancel() }()
	tick := time.NewTicker(t.o.sweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		if !t.ready.Load() {
			continue
		}
		for range maxSweepBatchesPerTick {
			n, err := t.sweep(ctx, "")
			if err != nil || n < t.o.sweepBatch {
				break
			}
		}
	}
}

// classify answers a confirm or release that matched no live hold.
func (t *pgTarget) classify(ctx context.Context, id int64, confirm bool) (bench.Outcome, bool, error) {
	var (
		state string
		due   bool
	)
	if err := t.db.QueryRow(ctx, pgLookup, id).Scan(&state, &due); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return bench.NotFound, true, nil
		}
		return bench.Failed, true, err
	}
	switch state {
	case "confirmed":
		if confirm {
			return bench.OK, true, nil
		}
		return bench.InvalidState, true, nil
	case "released":
		if confirm {
			return bench.InvalidState, true, nil
		}
		return bench.OK, true, nil
	case "expired":
		return bench.Expired, true, nil
	}
	if due {
		// Held past its expiry and not swept yet: end it now.
		if _, err := t.endHold(ctx, pgExpireHold, id); err != nil {
			return bench.Failed, true, err
		}
		return bench.Expired, true, nil
	}
	return bench.Failed, false, nil // it changed under us: try again
}

func (t *pgTarget) Confirm(ctx context.Context, h bench.Hold) (bench.Outcome, error) {
	id, err := strconv.ParseInt(h.ID, 10, 64)
	if err != nil || id <= 0 {
		return bench.NotFound, nil
	}
	var o bench.Outcome
	err = t.ops.do(ctx, true, func(ctx context.Context) (err error) {
		o, err = t.confirm(ctx, id)
		return err
	})
	if err != nil {
		return bench.Failed, err
	}
	return o, nil
}

func (t *pgTarget) confirm(ctx context.Context, id int64) (bench.Outcome, error) {
	for range 5 {
		tag, err := t.db.Exec(ctx, pgConfirm, id)
		if retryable(err) {
			continue
		}
		if err != nil {
			return bench.Failed, err
		}
		if tag.RowsAffected() == 1 {
			return bench.OK, nil
		}
		if o, done, err := t.classify(ctx, id, true); done {
			return o, err
		}
	}
	return bench.Failed, fmt.Errorf("peers: postgres: confirm %d did not settle", id)
}

func (t *pgTarget) Release(ctx context.Context, h bench.Hold) (bench.Outcome, error) {
	id, err := strconv.ParseInt(h.ID, 10, 64)
	if err != nil || id <= 0 {
		return bench.NotFound, nil
	}
	var o bench.Outcome
	err = t.ops.do(ctx, true, func(ctx context.Context) (err error) {
		o, err = t.release(ctx, id)
		return err
	})
	if err != nil {
		return bench.Failed, err
	}
	return o, nil
}

func (t *pgTarget) release(ctx context.Context, id int64) (bench.Outcome, error) {
	for range 5 {
		found, err := t.endHold(ctx, pgReleaseHold, id)
		if err != nil {
			return bench.Failed, err
		}
		if found {
			return bench.OK, nil
		}
		if o, done, err := t.classify(ctx, id, false); done {
			return o, err
		}
	}
	return bench.Failed, fmt.Errorf("peers: postgres: release %d did not settle", id)
}

// InStock: on_hand-held-sold > 0, as a product page would read it.
func (t *pgTarget) InStock(ctx context.Context, pool string) (bool, error) {
	p, err := t.ReadPool(ctx, pool)
	return p.OnHand-p.Held-p.Sold > 0, err
}

// ReadPool implements bench.PoolReader: the raw counts, without a sweep.
func (t *pgTarget) ReadPool(ctx context.Context, pool string) (bench.PoolLedger, error) {
	var p bench.PoolLedger
	err := t.ops.do(ctx, true, func(ctx context.Context) error {
		return t.db.QueryRow(ctx, pgReadPool, pool).Scan(&p.OnHand, &p.Held, &p.Sold)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return p, fmt.Errorf("peers: postgres: no pool %q", pool)
	}
	return p, err
}

// ReadHold implements bench.HoldReader. A held hold past its expiry reads
// as expired even before the sweeper ends it.
func (t *pgTarget) ReadHold(ctx context.Context, id string) (bench.HoldStatus, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return bench.HoldStatus{}, fmt.Errorf("peers: postgres: bad hold id %q", id)
	}
	var (
		state string
		due   bool
		hs    bench.HoldStatus
	)
	err = t.ops.do(ctx, true, func(ctx context.Context) error {
		return t.db.QueryRow(ctx, pgReadHold, n).Scan(&state, &hs.ExpiresAt, &due)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return hs, fmt.Errorf("peers: postgres: no hold %q", id)
	} else if err != nil {
		return hs, err
	}
	switch {
	case state == "confirmed":
		hs.State = bench.HoldConfirmed
	case state == "released":
		hs.State = bench.HoldReleased
	case state == "expired" || due:
		hs.State = bench.HoldExpired
	default:
		hs.State = bench.HoldActive
	}
	return hs, nil
}

// Ledger returns every due hold first, then reads the pools, the units
// each buyer holds or bought (summed from the reservations) and the
// confirmed reservations.
func (t *pgTarget) Ledger(ctx context.Context, pools []string, _ []string) (bench.Ledger, error) {
	l := bench.Ledger{
		Pools:      make(map[string]bench.PoolLedger, len(pools)),
		BuyerUnits: make(map[bench.BuyerPool]int64),
		Confirmed:  make(map[string]bool),
	}
	for {
		n, err := t.sweep(ctx, "")
		if err != nil {
			return l, err
		}
		if n < t.o.sweepBatch {
			break
		}
	}
	rows, err := t.db.Query(ctx, `SELECT id, on_hand, held, sold FROM pools WHERE id = ANY($1)`, pools)
	if err != nil {
		return l, err
	}
	for rows.Next() {
		var (
			id string
			p  bench.PoolLedger
		)
		if err := rows.Scan(&id, &p.OnHand, &p.Held, &p.Sold); err != nil {
			rows.Close()
			return l, err
		}
		l.Pools[id] = p
	}
	if err := rows.Err(); err != nil {
		return l, err
	}
	for _, p := range pools {
		if _, ok := l.Pools[p]; !ok {
			return l, fmt.Errorf("peers: postgres: no pool %q", p)
		}
	}
	rows, err = t.db.Query(ctx, `SELECT pool_id, buyer, sum(qty)::bigint FROM reservations
WHERE pool_id = ANY($1) AND state IN ('held', 'confirmed') GROUP BY pool_id, buyer`, pools)
	if err != nil {
		return l, err
	}
	for rows.Next() {
		var (
			k bench.BuyerPool
			n int64
		)
		if err := rows.Scan(&k.Pool, &k.Buyer, &n); err != nil {
			rows.Close()
			return l, err
		}
		l.BuyerUnits[k] = n
	}
	if err := rows.Err(); err != nil {
		return l, err
	}
	rows, err = t.db.Query(ctx, `SELECT id FROM reservations WHERE pool_id = ANY($1) AND state = 'confirmed'`, pools)
	if err != nil {
		return l, err
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return l, err
		}
		l.Confirmed[strconv.FormatInt(id, 10)] = true
	}
	return l, rows.Err()
}

func (t *pgTarget) Close() error {
	t.once.Do(func() { close(t.stop) })
	<-t.done
	t.db.Close()
	return nil
}
