package peers

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/holdfast/holdfast/bench"
)

// Redis layout, all under the prefix "hfb:" (Setup deletes every hfb:* key):
//
//	hfb:{P}:pool    hash   on_hand, held, sold, limit, ttl, seq
//	hfb:{P}:buyers  hash   buyer -> units held or sold
//	hfb:{P}:holds   hash   n -> "S:qty:expires_ms:buyer", S one of
//	                       H(eld) C(onfirmed) R(eleased) E(xpired)
//	hfb:exp         zset   "P/n" scored by expiry (live holds only)
//	hfb:idem:K      string the hold id "P/n", PX 24h
//
// A hold id is "P/n". Every change is one Lua script run with EVALSHA
// (go-redis falls back to EVAL and loads on NOSCRIPT), so each operation is
// one round trip and atomic. Time is the server's (TIME in the script).
// The sweep reaches other pools' keys from hfb:exp and idempotency keys
// are global, so the layout is for a single Redis, not a cluster.

const redisLuaPrelude = `
local EXP = 'hfb:exp'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function parse(rec)
  local st, q, e, b = string.match(rec, '^(%u):(%d+):(%d+):(.*)$')
  return st, tonumber(q), tonumber(e), b
end
local function pack(st, q, e, b)
  return st .. ':' .. string.format('%d', q) .. ':' .. string.format('%d', e) .. ':' .. b
end
local function pkey(pool, what) return 'hfb:{' .. pool .. '}:' .. what end
-- finish ends a live hold n of pool: its units go back (and the buyer's count
-- down); st is the state it ends in (E or R).
local function finish(pool, n, st, q, e, b)
  redis.call('HSET', pkey(pool, 'holds'), n, pack(st, q, e, b))
  redis.call('HINCRBY', pkey(pool, 'pool'), 'held', -q)
  if redis.call('HINCRBY', pkey(pool, 'buyers'), b, -q) <= 0 then
    redis.call('HDEL', pkey(pool, 'buyers'), b)
  end
end
-- sweep ends up to batch due holds; it returns how many it looked at.
local function sweep(now, batch)
  local due = redis.call('ZRANGEBYSCORE', EXP, '-inf', now, 'LIMIT', 0, batch)
  local units = 0
  for _, m in ipairs(due) do
    local pool, n = string.match(m, '^(.*)/(%d+)$')
    if pool then
      local rec = redis.call('HGET', pkey(pool, 'holds'), n)
      if rec then
        local st, q, e, b = parse(rec)
        if st == 'H' then
          finish(pool, n, 'E', q, e, b)
          units = units + q
        end
      end
    end
  end
  if #due > 0 then redis.call('ZREM', EXP, unpack(due)) end
  return #due, units
end
`

// KEYS: pool, buyers, holds, exp, idem. ARGV: pool id, buyer, qty, ttl ms
// (0: the pool's), idem ttl ms (0: no key), sweep batch, max sweeps.
// Returns {'ok', n, expires_ms, replayed} or {refusal}.
var redisReserve = redis.NewScript(redisLuaPrelude + `
local pool, buyer, qty = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ttl, idemttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local batch, maxsweeps = tonumber(ARGV[6]), tonumber(ARGV[7])
if idemttl > 0 then
  local prev = redis.call('GET', KEYS[5])
  if prev then
    local ppool, pn = string.match(prev, '^(.*)/(%d+)$')
    if ppool ~= pool then return {'mismatch'} end
    local rec = redis.call('HGET', KEYS[3], pn)
    if not rec then return {'mismatch'} end
    local st, q, e, b = parse(rec)
    if b ~= buyer or q ~= qty then return {'mismatch'} end
    return {'ok', pn, e, 1}
  end
end
local p = redis.call('HMGET', KEYS[1], 'on_hand', 'held', 'sold', 'limit', 'ttl')
if not p[1] then return {'no_pool'} end
local onhand, held, sold, limit = tonumber(p[1]), tonumber(p[2]), tonumber(p[3]), tonumber(p[4])
if ttl <= 0 then ttl = tonumber(p[5]) end
local now = now_ms()
local sweeps = 0
while true do
  local refusal = nil
  if limit > 0 and tonumber(redis.call('HGET', KEYS[2], buyer) or '0') + qty > limit then
    refusal = 'buyer_limit'
  elseif onhand - held - sold < qty then
    refusal = 'sold_out'
  end
  if not refusal then break end
  if sweeps >= maxsweeps then return {refusal} end
  sweeps = sweeps + 1
  local n = sweep(now, batch)
  if n == 0 then return {refusal} end
  held = tonumber(redis.call('HGET', KEYS[1], 'held'))
end
local n = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local exp = now + ttl
redis.call('HINCRBY', KEYS[1], 'held', qty)
redis.call('HINCRBY', KEYS[2], buyer, qty)
redis.call('HSET', KEYS[3], n, pack('H', qty, exp, buyer))
redis.call('ZADD', KEYS[4], exp, pool .. '/' .. n)
if idemttl > 0 then redis.call('SET', KEYS[5], pool .. '/' .. n, 'NX', 'PX', idemttl) end
return {'ok', string.format('%d', n), exp, 0}
`)

// KEYS: pool, buyers, holds, exp. ARGV: pool id, n.
var redisConfirm = redis.NewScript(redisLuaPrelude + `
local pool, n = ARGV[1], ARGV[2]
local rec = redis.call('HGET', KEYS[3], n)
if not rec then return 'not_found' end
local st, q, e, b = parse(rec)
if st == 'C' then return 'ok' end
if st == 'E' then return 'expired' end
if st ~= 'H' then return 'invalid_state' end
redis.call('ZREM', KEYS[4], pool .. '/' .. n)
if now_ms() >= e then
  finish(pool, n, 'E', q, e, b)
  return 'expired'
end
redis.call('HSET', KEYS[3], n, pack('C', q, e, b))
redis.call('HINCRBY', KEYS[1], 'held', -q)
redis.call('HINCRBY', KEYS[1], 'sold', q)
return 'ok'
`)

// KEYS: pool, buyers, holds, exp. ARGV: pool id, n.
var redisRelease = redis.NewScript(redisLuaPrelude + `
local pool, n = ARGV[1], ARGV[2]
local rec = redis.call('HGET', KEYS[3], n)
if not rec then return 'not_found' end
local st, q, e, b = parse(rec)
if st == 'R' then return 'ok' end
if st == 'E' then return 'expired' end
if st ~= 'H' then return 'invalid_state' end
redis.call('ZREM', KEYS[4], pool .. '/' .. n)
if now_ms() >= e then
  finish(pool, n, 'E', q, e, b)
  return 'expired'
end
finish(pool, n, 'R', q, e, b)
return 'ok'
`)

// KEYS: exp. ARGV: batch. Returns {holds looked at, units returned}.
var redisSweep = redis.NewScript(redisLuaPrelude + `
local n, units = sweep(now_ms(), tonumber(ARGV[1]))
return {n, units}
`)

// KEYS: holds. ARGV: n. Returns {record (empty: none), server time ms}.
var redisReadHold = redis.NewScript(redisLuaPrelude + `
return {redis.call('HGET', KEYS[1], ARGV[1]) or '', now_ms()}
`)

var redisScripts = []*redis.Script{redisReserve, redisConfirm, redisRelease, redisSweep, redisReadHold}

const redisExpKey = "hfb:exp"

func redisKey(pool, what string) string { return "hfb:{" + pool + "}:" + what }

type redisTarget struct {
	c    *redis.Client
	name string
	o    peerOptions
	ops  ops

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// OpenRedis connects to a Redis at url (redis://host:port/db) and starts
// the target's sweeper. The name is the URL's name parameter, else
// "redis-" plus the server's appendfsync ("redis-always",
// "redis-everysec", "redis-no"), "redis-noaof" without an AOF, or "redis"
// if CONFIG is not allowed.
func OpenRedis(rawURL string, opts bench.TargetOptions) (bench.Target, error) {
	rest, o, err := splitURL(rawURL)
	if err != nil {
		return nil, err
	}
	ro, err := redis.ParseURL(rest)
	if err != nil {
		return nil, err
	}
	switch {
	case opts.Conns > 0:
		ro.PoolSize = opts.Conns
	case !strings.Contains(rest, "pool_size="):
		// Every harness worker gets its own connection rather than
		// queueing for one: a round trip per operation, no client-side
		// pipelining.
		ro.PoolSize = max(256, 10*runtime.GOMAXPROCS(0))
	}
	// The driver would send a script again after a transport error, which
	// is not safe for a reserve without an idempotency key: ops retries.
	ro.MaxRetries = -1
	t := &redisTarget{c: redis.NewClient(ro), name: o.name, o: o,
		stop: make(chan struct{}), done: make(chan struct{})}
	t.ops = newOps(opts, func(err error) bool {
		var re redis.Error
		return errors.As(err, &re)
	})
	ctx, cancel := context.WithTimeout(context.Background(), t.ops.timeout)
	defer cancel()
	if err := t.c.Ping(ctx).Err(); err != nil {
		t.c.Close()
		return nil, fmt.Errorf("peers: redis %s: %w", ro.Addr, err)
	}
	if t.name == "" {
		t.name = redisName(ctx, t.c)
	}
	if err := t.loadScripts(ctx); err != nil {
		t.c.Close()
		return nil, err
	}
	go t.sweeper()
	return t, nil
}

func redisName(ctx context.Context, c *redis.Client) string {
	aof, err := c.ConfigGet(ctx, "appendonly").Result()
	if err != nil {
		return "redis"
	}
	if aof["appendonly"] != "yes" {
		return "redis-noaof"
	}
	fs, err := c.ConfigGet(ctx, "appendfsync").Result()
	if err != nil || fs["appendfsync"] == "" {
		return "redis"
	}
	return "redis-" + fs["appendfsync"]
}

func (t *redisTarget) loadScripts(ctx context.Context) error {
	for _, s := range redisScripts {
		if err := s.Load(ctx, t.c).Err(); err != nil {
			return fmt.Errorf("peers: redis SCRIPT LOAD: %w", err)
		}
	}
	return nil
}

func (t *redisTarget) Name() string { return t.name }

// Setup deletes every hfb:* key and writes the pools.
func (t *redisTarget) Setup(ctx context.Context, pools []bench.PoolSpec) error {
	for _, p := range pools {
		if p.ID == "" || strings.ContainsAny(p.ID, "{}") {
			return fmt.Errorf("peers: redis pool id %q: empty, or braces that would break the keys' hash tag", p.ID)
		}
	}
	var cursor uint64
	for {
		keys, next, err := t.c.Scan(ctx, cursor, "hfb:*", 1000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := t.c.Unlink(ctx, keys...).Err(); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	pipe := t.c.TxPipeline()
	for _, p := range pools {
		pipe.HSet(ctx, redisKey(p.ID, "pool"), map[string]any{
			"on_hand": p.OnHand, "held": 0, "sold": 0,
			"limit": p.PerBuyerLimit, "ttl": ttlFor(0, p.HoldTTLMs), "seq": 0,
		})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	return t.loadScripts(ctx)
}

func (t *redisTarget) Reserve(ctx context.Context, r bench.ReserveRequest) (bench.Hold, error) {
	if r.Qty <= 0 {
		return bench.Hold{Outcome: bench.Failed}, fmt.Errorf("peers: qty %d", r.Qty)
	}
	idemKey, idemMs := redisKey(r.Pool, "pool"), int64(0) // a key is always passed
	if r.IdemKey != "" {
		idemKey, idemMs = "hfb:idem:"+r.IdemKey, idemTTL.Milliseconds()
	}
	keys := []string{redisKey(r.Pool, "pool"), redisKey(r.Pool, "buyers"), redisKey(r.Pool, "holds"), redisExpKey, idemKey}
	var res []any
	err := t.ops.do(ctx, r.IdemKey != "", func(ctx context.Context) (err error) {
		res, err = redisReserve.Run(ctx, t.c, keys, r.Pool, r.Buyer, r.Qty, max(r.TTLMs, 0), idemMs, t.o.sweepBatch, maxRefusalSweeps).Slice()
		return err
	})
	if err != nil {
		return bench.Hold{Outcome: bench.Failed}, err
	}
	status, _ := res[0].(string)
	switch status {
	case "ok":
		n, _ := res[1].(string)
		exp, _ := res[2].(int64)
		return bench.Hold{ID: r.Pool + "/" + n, Outcome: bench.OK, ExpiresAt: time.UnixMilli(exp)}, nil
	case "sold_out":
		return bench.Hold{Outcome: bench.SoldOut}, nil
	case "buyer_limit":
		return bench.Hold{Outcome: bench.BuyerLimit}, nil
	case "mismatch":
		return bench.Hold{Outcome: bench.Conflict}, nil
	case "no_pool":
		return bench.Hold{Outcome: bench.NotFound}, nil
	}
	return bench.Hold{Outcome: bench.Failed}, fmt.Errorf("peers: redis reserve answered %v", res)
}

// splitHoldID splits "P/n".
func splitHoldID(id string) (pool, n string, ok bool) {
	i := strings.LastIndexByte(id, '/')
	if i <= 0 || i == len(id)-1 {
		return "", "", false
	}
	if _, err := strconv.ParseUint(id[i+1:], 10, 63); err != nil {
		return "", "", false
	}
	return id[:i], id[i+1:], true
}

func (t *redisTarget) end(ctx context.Context, s *redis.Script, h bench.Hold) (bench.Outcome, error) {
	pool, n, ok := splitHoldID(h.ID)
	if !ok {
		return bench.NotFound, nil
	}
	keys := []string{redisKey(pool, "pool"), redisKey(pool, "buyers"), redisKey(pool, "holds"), redisExpKey}
	var status string
	err := t.ops.do(ctx, true, func(ctx context.Context) (err error) {
		status, err = s.Run(ctx, t.c, keys, pool, n).Text()
		return err
	})
	if err != nil {
		return bench.Failed, err
	}
	switch status {
	case "ok":
		return bench.OK, nil
	case "expired":
		return bench.Expired, nil
	case "invalid_state":
		return bench.InvalidState, nil
	case "not_found":
		return bench.NotFound, nil
	}
	return bench.Failed, fmt.Errorf("peers: redis answered %q", status)
}

func (t *redisTarget) Confirm(ctx context.Context, h bench.Hold) (bench.Outcome, error) {
	return t.end(ctx, redisConfirm, h)
}

func (t *redisTarget) Release(ctx context.Context, h bench.Hold) (bench.Outcome, error) {
	return t.end(ctx, redisRelease, h)
}

// readPool reads a pool's raw counts (no sweep).
func (t *redisTarget) readPool(ctx context.Context, pool string) (bench.PoolLedger, error) {
	var v []any
	err := t.ops.do(ctx, true, func(ctx context.Context) (err error) {
		v, err = t.c.HMGet(ctx, redisKey(pool, "pool"), "on_hand", "held", "sold").Result()
		return err
	})
	if err != nil {
		return bench.PoolLedger{}, err
	}
	if v[0] == nil {
		return bench.PoolLedger{}, fmt.Errorf("peers: redis: no pool %q", pool)
	}
	n, err := redisInts(v)
	if err != nil {
		return bench.PoolLedger{}, fmt.Errorf("peers: redis pool %q: %w", pool, err)
	}
	return bench.PoolLedger{OnHand: n[0], Held: n[1], Sold: n[2]}, nil
}

// InStock: on_hand-held-sold > 0, as a product page would read it.
func (t *redisTarget) InStock(ctx context.Context, pool string) (bool, error) {
	p, err := t.readPool(ctx, pool)
	return p.OnHand-p.Held-p.Sold > 0, err
}

// ReadPool implements bench.PoolReader: the raw counts, without a sweep.
func (t *redisTarget) ReadPool(ctx context.Context, pool string) (bench.PoolLedger, error) {
	return t.readPool(ctx, pool)
}

// ReadHold implements bench.HoldReader. A held hold past its expiry reads
// as expired (by the server's clock) even before the sweeper ends it.
func (t *redisTarget) ReadHold(ctx context.Context, id string) (bench.HoldStatus, error) {
	pool, n, ok := splitHoldID(id)
	if !ok {
		return bench.HoldStatus{}, fmt.Errorf("peers: redis: bad hold id %q", id)
	}
	var res []any
	err := t.ops.do(ctx, true, func(ctx context.Context) (err error) {
		res, err = redisReadHold.Run(ctx, t.c, []string{redisKey(pool, "holds")}, n).Slice()
		return err
	})
	if err != nil {
		return bench.HoldStatus{}, err
	}
	rec, _ := res[0].(string)
	now, _ := res[1].(int64)
	if rec == "" {
		return bench.HoldStatus{}, fmt.Errorf("peers: redis: no hold %q", id)
	}
	st, rest, _ := strings.Cut(rec, ":")
	_, rest, _ = strings.Cut(rest, ":")
	expS, _, _ := strings.Cut(rest, ":")
	exp, _ := strconv.ParseInt(expS, 10, 64)
	hs := bench.HoldStatus{ExpiresAt: time.UnixMilli(exp)}
	switch st {
	case "H":
		hs.State = bench.HoldActive
		if now >= exp {
			hs.State = bench.HoldExpired
		}
	case "C":
		hs.State = bench.HoldConfirmed
	case "R":
		hs.State = bench.HoldReleased
	case "E":
		hs.State = bench.HoldExpired
	}
	return hs, nil
}

func redisInts(v []any) ([]int64, error) {
	out := make([]int64, len(v))
	for i, x := range v {
		s, ok := x.(string)
		if !ok {
			return nil, errors.New("missing field")
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

// sweepOnce runs the sweep script once: holds looked at, units returned.
func (t *redisTarget) sweepOnce(ctx context.Context) (int64, int64, error) {
	v, err := redisSweep.Run(ctx, t.c, []string{redisExpKey}, t.o.sweepBatch).Int64Slice()
	if err != nil {
		return 0, 0, err
	}
	return v[0], v[1], nil
}

func (t *redisTarget) sweeper() {
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
		for range maxSweepBatchesPerTick {
			n, _, err := t.sweepOnce(ctx)
			if err != nil || n < int64(t.o.sweepBatch) {
				break
			}
		}
	}
}

// Ledger returns every due hold first, then reads the pools, the buyers'
// counts and the confirmed holds from the holds hashes.
func (t *redisTarget) Ledger(ctx context.Context, pools []string, _ []string) (bench.Ledger, error) {
	for {
		n, _, err := t.sweepOnce(ctx)
		if err != nil {
			return bench.Ledger{}, err
		}
		if n == 0 {
			break
		}
	}
	l := bench.Ledger{
		Pools:      make(map[string]bench.PoolLedger, len(pools)),
		BuyerUnits: make(map[bench.BuyerPool]int64),
		Confirmed:  make(map[string]bool),
	}
	for _, p := range pools {
		pl, err := t.readPool(ctx, p)
		if err != nil {
			return l, err
		}
		l.Pools[p] = pl
		if err := t.scanHash(ctx, redisKey(p, "buyers"), func(k, v string) error {
			u, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return err
			}
			if u != 0 {
				l.BuyerUnits[bench.BuyerPool{Buyer: k, Pool: p}] = u
			}
			return nil
		}); err != nil {
			return l, err
		}
		if err := t.scanHash(ctx, redisKey(p, "holds"), func(k, v string) error {
			if strings.HasPrefix(v, "C:") {
				l.Confirmed[p+"/"+k] = true
			}
			return nil
		}); err != nil {
			return l, err
		}
	}
	return l, nil
}

func (t *redisTarget) scanHash(ctx context.Context, key string, f func(k, v string) error) error {
	var cursor uint64
	for {
		kv, next, err := t.c.HScan(ctx, key, cursor, "", 1000).Result()
		if err != nil {
			return err
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if err := f(kv[i], kv[i+1]); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

func (t *redisTarget) Close() error {
	t.once.Do(func() { close(t.stop) })
	<-t.done
	return t.c.Close()
}
