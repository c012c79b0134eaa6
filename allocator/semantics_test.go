package allocator

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// Exact, table-driven behaviours of each command family. machine_test.go
// checks invariants under random load; this file pins down outcomes.

// t0 is the leader time of every rig's first entry.
const t0 = int64(1_700_000_000_000)

// fastClock lets one entry move the clock as far as it likes, so tests can
// jump to a deadline in one entry. Clock bounding has its own test.
var fastClock = Config{MaxClockStepMs: 1 << 40}

// rig drives a Machine entry by entry at a test-controlled leader time.
type rig struct {
	t   *testing.T
	m   *Machine
	now int64 // stamp of the next entry
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	r := &rig{t: t, m: New(cfg), now: t0}
	r.apply(Command{Kind: KindTick})
	if got := r.m.ClockMs(); got != t0 {
		t.Fatalf("clock after first entry = %d, want %d", got, t0)
	}
	return r
}

// apply applies cmds as one entry stamped r.now.
func (r *rig) apply(cmds ...Command) []Result {
	r.t.Helper()
	res := r.m.Apply(r.now, cmds, nil)
	if len(res) != len(cmds) {
		r.t.Fatalf("Apply returned %d results for %d commands", len(res), len(cmds))
	}
	return res
}

func (r *rig) do(c Command) Result {
	r.t.Helper()
	return r.apply(c)[0]
}

// at sets the stamp of the next entry to t0+ms.
func (r *rig) at(ms int64) *rig { r.now = t0 + ms; return r }

// tick applies an empty entry at t0+ms.
func (r *rig) tick(ms int64) { r.t.Helper(); r.at(ms).apply(Command{Kind: KindTick}) }

func (r *rig) ok(c Command) Result {
	r.t.Helper()
	res := r.do(c)
	if res.Err != nil {
		r.t.Fatalf("%v: unexpected error %v", c.Kind, res.Err)
	}
	return res
}

func (r *rig) put(id string, cfg PoolConfig) { r.t.Helper(); r.ok(putCmd(id, cfg)) }

// hold reserves all-or-nothing with the pools' default TTL and returns the id.
func (r *rig) hold(buyer string, lines ...LineRequest) uint64 {
	r.t.Helper()
	return r.ok(reserveCmd(buyer, lines...)).Reservation.ID
}

func (r *rig) pool(id string) *PoolView {
	r.t.Helper()
	p, err := r.m.Pool(id)
	if err != nil {
		r.t.Fatalf("pool %s: %v", id, err)
	}
	return p
}

// wantPool checks a pool's held and sold counts and that available adds up.
func (r *rig) wantPool(id string, held, sold int64) {
	r.t.Helper()
	p := r.pool(id)
	if p.Held != held || p.Sold != sold {
		r.t.Fatalf("pool %s: held %d sold %d, want %d %d", id, p.Held, p.Sold, held, sold)
	}
	if p.Available != p.Config.OnHand-held-sold {
		r.t.Fatalf("pool %s: available %d, on_hand %d held %d sold %d", id, p.Available, p.Config.OnHand, held, sold)
	}
}

func (r *rig) resv(id uint64) *ReservationView {
	r.t.Helper()
	v, err := r.m.Reservation(id)
	if err != nil {
		r.t.Fatalf("reservation %d: %v", id, err)
	}
	return v
}

func codeOf(res Result) Code {
	if res.Err == nil {
		return OK
	}
	return res.Err.Code
}

func wantCode(t *testing.T, res Result, want Code) {
	t.Helper()
	if got := codeOf(res); got != want {
		t.Fatalf("code %v (%v), want %v", got, res.Err, want)
	}
}

func lineStates(ls []LineView) []LineState {
	out := make([]LineState, len(ls))
	for i, l := range ls {
		out[i] = l.State
	}
	return out
}

func putCmd(id string, cfg PoolConfig) Command {
	return Command{Kind: KindPutPool, Pool: id, Config: cfg}
}

func adjustCmd(id string, delta int64) Command {
	return Command{Kind: KindAdjustPool, Pool: id, Delta: delta}
}

func reserveCmd(buyer string, lines ...LineRequest) Command {
	return Command{Kind: KindReserve, Buyer: buyer, Lines: lines}
}

func ln(pool string, qty int64) LineRequest { return LineRequest{Pool: pool, Qty: qty} }

func confirmCmd(id uint64) Command { return Command{Kind: KindConfirm, Reservation: id} }
func releaseCmd(id uint64) Command { return Command{Kind: KindRelease, Reservation: id} }
func extendCmd(id uint64, ttl int64) Command {
	return Command{Kind: KindExtend, Reservation: id, TTLMs: ttl}
}

// poolCfg is a default config with the given stock and hold timings.
func poolCfg(onHand, holdTTL, maxHoldTTL, maxExt int64) PoolConfig {
	c := DefaultPoolConfig(onHand)
	c.HoldTTLMs, c.MaxHoldTTLMs, c.MaxExtensions = holdTTL, maxHoldTTL, maxExt
	return c
}

func limited(c PoolConfig, perBuyer int64) PoolConfig { c.PerBuyerLimit = perBuyer; return c }

// ---- PutPool ----

func TestPutPool(t *testing.T) {
	cases := []struct {
		name        string
		setup       func(r *rig) // pool "a" state before the PutPool under test
		cfg         PoolConfig
		wantCode    Code
		wantCreated bool
		wantOnHand  int64 // on_hand of "a" afterwards
		wantHeld    int64
		wantSold    int64
	}{
		{name: "create", cfg: DefaultPoolConfig(10), wantCreated: true, wantOnHand: 10},
		{name: "create empty", cfg: DefaultPoolConfig(0), wantCreated: true, wantOnHand: 0},
		{
			name:  "reconfigure",
			setup: func(r *rig) { r.put("a", DefaultPoolConfig(10)) },
			cfg:   limited(DefaultPoolConfig(20), 2), wantOnHand: 20,
		},
		{
			name: "reconfigure down to held+sold",
			setup: func(r *rig) {
				r.put("a", DefaultPoolConfig(10))
				r.ok(confirmCmd(r.hold("u1", ln("a", 2))))
				r.hold("u2", ln("a", 3))
			},
			cfg: DefaultPoolConfig(5), wantOnHand: 5, wantHeld: 3, wantSold: 2,
		},
		{
			name: "on_hand below held+sold",
			setup: func(r *rig) {
				r.put("a", DefaultPoolConfig(10))
				r.ok(confirmCmd(r.hold("u1", ln("a", 2))))
				r.hold("u2", ln("a", 3))
			},
			cfg: DefaultPoolConfig(4), wantCode: InvalidState, wantOnHand: 10, wantHeld: 3, wantSold: 2,
		},
		{
			name: "on_hand below held alone",
			setup: func(r *rig) {
				r.put("a", DefaultPoolConfig(10))
				r.hold("u1", ln("a", 1))
			},
			cfg: limited(DefaultPoolConfig(0), 5), wantCode: InvalidState, wantOnHand: 10, wantHeld: 1,
		},
		{
			name:  "invalid config leaves the pool alone",
			setup: func(r *rig) { r.put("a", DefaultPoolConfig(10)) },
			cfg:   poolCfg(20, 0, 1000, 1), wantCode: InvalidArgument, wantOnHand: 10,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, fastClock)
			if tc.setup != nil {
				tc.setup(r)
			}
			r.tick(1000)
			before := r.m.StateHash()
			res := r.do(putCmd("a", tc.cfg))
			wantCode(t, res, tc.wantCode)
			if tc.wantCode != OK {
				if res.Pool != nil {
					t.Fatalf("refused PutPool returned a pool view")
				}
				if r.m.StateHash() != before {
					t.Fatalf("refused PutPool changed the state")
				}
			} else {
				if res.Created != tc.wantCreated {
					t.Fatalf("Created = %v, want %v", res.Created, tc.wantCreated)
				}
				if res.Pool == nil || res.Pool.Config != tc.cfg {
					t.Fatalf("result pool %+v, want config %+v", res.Pool, tc.cfg)
				}
				if tc.wantCreated && res.Pool.CreatedAtMs != t0+1000 {
					t.Fatalf("created_at %d, want %d", res.Pool.CreatedAtMs, t0+1000)
				}
				if !tc.wantCreated && res.Pool.CreatedAtMs != t0 {
					t.Fatalf("reconfigure moved created_at to %d", res.Pool.CreatedAtMs)
				}
				if res.Pool.UpdatedAtMs != t0+1000 {
					t.Fatalf("updated_at %d, want %d", res.Pool.UpdatedAtMs, t0+1000)
				}
			}
			if p, err := r.m.Pool("a"); err != nil {
				t.Fatalf("pool a: %v", err)
			} else if p.Config.OnHand != tc.wantOnHand {
				t.Fatalf("on_hand %d, want %d", p.Config.OnHand, tc.wantOnHand)
			}
			r.wantPool("a", tc.wantHeld, tc.wantSold)
		})
	}
}

func TestPoolConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(c *PoolConfig)
		ok     bool
	}{
		{"defaults", func(c *PoolConfig) {}, true},
		{"on_hand -1", func(c *PoolConfig) { c.OnHand = -1 }, false},
		{"on_hand 0", func(c *PoolConfig) { c.OnHand = 0 }, true},
		{"on_hand 1e12", func(c *PoolConfig) { c.OnHand = MaxStock }, true},
		{"on_hand 1e12+1", func(c *PoolConfig) { c.OnHand = MaxStock + 1 }, false},
		{"per_buyer_limit -1", func(c *PoolConfig) { c.PerBuyerLimit = -1 }, false},
		{"per_buyer_limit 0 (none)", func(c *PoolConfig) { c.PerBuyerLimit = 0 }, true},
		{"per_buyer_limit 1e12", func(c *PoolConfig) { c.PerBuyerLimit = MaxStock }, true},
		{"per_buyer_limit 1e12+1", func(c *PoolConfig) { c.PerBuyerLimit = MaxStock + 1 }, false},
		{"hold_ttl 0", func(c *PoolConfig) { c.HoldTTLMs = 0 }, false},
		{"hold_ttl -1", func(c *PoolConfig) { c.HoldTTLMs = -1 }, false},
		{"hold_ttl 1", func(c *PoolConfig) { c.HoldTTLMs = 1 }, true},
		{"hold_ttl max", func(c *PoolConfig) { c.HoldTTLMs, c.MaxHoldTTLMs = MaxTTLMs, MaxTTLMs }, true},
		{"hold_ttl max+1", func(c *PoolConfig) { c.HoldTTLMs, c.MaxHoldTTLMs = MaxTTLMs+1, MaxTTLMs+1 }, false},
		{"max_hold < hold", func(c *PoolConfig) { c.HoldTTLMs, c.MaxHoldTTLMs = 1000, 999 }, false},
		{"max_hold == hold", func(c *PoolConfig) { c.HoldTTLMs, c.MaxHoldTTLMs = 1000, 1000 }, true},
		{"max_hold 0", func(c *PoolConfig) { c.MaxHoldTTLMs = 0 }, false},
		{"max_hold max", func(c *PoolConfig) { c.MaxHoldTTLMs = MaxTTLMs }, true},
		{"max_hold max+1", func(c *PoolConfig) { c.MaxHoldTTLMs = MaxTTLMs + 1 }, false},
		{"max_extensions -1", func(c *PoolConfig) { c.MaxExtensions = -1 }, false},
		{"max_extensions 0", func(c *PoolConfig) { c.MaxExtensions = 0 }, true},
		{"max_extensions 1000", func(c *PoolConfig) { c.MaxExtensions = MaxExtensions }, true},
		{"max_extensions 1001", func(c *PoolConfig) { c.MaxExtensions = MaxExtensions + 1 }, false},
		{"mode unknown", func(c *PoolConfig) { c.Mode = 2 }, false},
		{"mode draw without a window", func(c *PoolConfig) { c.Mode = ModeDraw }, false},
		{"mode draw closing before it opens", func(c *PoolConfig) { c.Mode = ModeDraw; c.Draw = DrawConfig{OpensAtMs: 10, ClosesAtMs: 10} }, false},
		{"mode draw", func(c *PoolConfig) { c.Mode = ModeDraw; c.Draw = DrawConfig{OpensAtMs: 10, ClosesAtMs: 11, Seed: "s"} }, true},
		{"mode draw without a seed", func(c *PoolConfig) { c.Mode = ModeDraw; c.Draw = DrawConfig{OpensAtMs: 10, ClosesAtMs: 11} }, false},
		{"waitlist enabled", func(c *PoolConfig) { c.Waitlist.Enabled = true }, true},
		{"demand warm_rps 0", func(c *PoolConfig) { c.Demand.WarmRPS = 0 }, false},
		{"demand hot below warm", func(c *PoolConfig) { c.Demand.HotRPS = c.Demand.WarmRPS - 1 }, false},
		{"demand low_stock_percent 101", func(c *PoolConfig) { c.Demand.LowStockPercent = 101 }, false},
		{"offer_ttl 0", func(c *PoolConfig) { c.Waitlist.OfferTTLMs = 0 }, false},
		{"offer_ttl max+1", func(c *PoolConfig) { c.Waitlist.OfferTTLMs = MaxTTLMs + 1 }, false},
		{"wait_ttl 0", func(c *PoolConfig) { c.Waitlist.WaitTTLMs = 0 }, false},
		{"wait_ttl max+1", func(c *PoolConfig) { c.Waitlist.WaitTTLMs = MaxTTLMs + 1 }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultPoolConfig(10)
			tc.mutate(&cfg)
			err := cfg.Validate()
			if tc.ok != (err == nil) {
				t.Fatalf("Validate(%+v) = %v, want ok=%v", cfg, err, tc.ok)
			}
			if err != nil && err.Code != InvalidArgument {
				t.Fatalf("Validate code %v, want invalid_argument", err.Code)
			}
			// The machine applies the same check and creates nothing.
			r := newRig(t, fastClock)
			res := r.do(putCmd("a", cfg))
			if tc.ok {
				wantCode(t, res, OK)
				return
			}
			wantCode(t, res, InvalidArgument)
			if _, err := r.m.Pool("a"); err == nil || err.Code != NotFound {
				t.Fatalf("a refused PutPool created the pool (err %v)", err)
			}
		})
	}
}

func TestPutPoolID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"", false},
		{"a b", false},
		{"a%2Fb", false},
		{strings.Repeat("p", 129), false},
		{strings.Repeat("p", 128), true},
		{"sku:v1:seller@x/loc-1_a.b", true},
	} {
		r := newRig(t, fastClock)
		want := OK
		if !tc.ok {
			want = InvalidArgument
		}
		if got := codeOf(r.do(putCmd(tc.id, DefaultPoolConfig(1)))); got != want {
			t.Errorf("PutPool(%q) = %v, want %v", tc.id, got, want)
		}
	}
}

// ---- AdjustPool ----

func TestAdjustPool(t *testing.T) {
	cases := []struct {
		name       string
		onHand     int64
		pool       string
		delta      int64
		wantCode   Code
		wantOnHand int64
	}{
		// Pool "a" starts with 2 held and 3 sold (floor 5).
		{name: "restock", onHand: 10, delta: 5, wantOnHand: 15},
		{name: "shrink", onHand: 10, delta: -4, wantOnHand: 6},
		{name: "shrink to the floor", onHand: 10, delta: -5, wantOnHand: 5},
		{name: "shrink below the floor", onHand: 10, delta: -6, wantCode: InvalidState, wantOnHand: 10},
		{name: "shrink below zero", onHand: 10, delta: -11, wantCode: InvalidState, wantOnHand: 10},
		{name: "zero delta", onHand: 10, delta: 0, wantOnHand: 10},
		{name: "unknown pool", onHand: 10, pool: "nope", delta: 1, wantCode: NotFound, wantOnHand: 10},
		{name: "up to exactly 1e12", onHand: 10, delta: MaxStock - 10, wantOnHand: MaxStock},
		{name: "above 1e12", onHand: 10, delta: MaxStock - 9, wantCode: InvalidArgument, wantOnHand: 10},
		{name: "at 1e12 plus one", onHand: MaxStock, delta: 1, wantCode: InvalidArgument, wantOnHand: MaxStock},
		{name: "delta above 1e12", onHand: 10, delta: MaxStock + 1, wantCode: InvalidArgument, wantOnHand: 10},
		{name: "delta below -1e12", onHand: MaxStock, delta: -MaxStock - 1, wantCode: InvalidArgument, wantOnHand: MaxStock},
		{name: "delta -1e12 to the floor", onHand: MaxStock, delta: -MaxStock + 5, wantOnHand: 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, fastClock)
			r.put("a", DefaultPoolConfig(tc.onHand))
			r.ok(confirmCmd(r.hold("u1", ln("a", 3))))
			r.hold("u2", ln("a", 2))
			pool := tc.pool
			if pool == "" {
				pool = "a"
			}
			before := r.m.StateHash()
			res := r.do(adjustCmd(pool, tc.delta))
			wantCode(t, res, tc.wantCode)
			if tc.wantCode != OK {
				if r.m.StateHash() != before {
					t.Fatalf("refused AdjustPool changed the state")
				}
			} else if res.Pool == nil || res.Pool.Config.OnHand != tc.wantOnHand || res.Pool.Available != tc.wantOnHand-5 {
				t.Fatalf("result pool %+v, want on_hand %d", res.Pool, tc.wantOnHand)
			}
			if got := r.pool("a").Config.OnHand; got != tc.wantOnHand {
				t.Fatalf("on_hand %d, want %d", got, tc.wantOnHand)
			}
			r.wantPool("a", 2, 3)
		})
	}
}

// ---- Reserve ----

func TestReserve(t *testing.T) {
	type pools map[string]PoolConfig
	cases := []struct {
		name      string
		pools     pools
		pre       []Command // applied (and required to succeed) first
		req       Command
		wantCode  Code
		wantLines []LineState      // reservation lines, or Err.Lines on refusal (nil: not checked)
		wantHeld  map[string]int64 // after the request
		wantTTL   int64            // expires_at - created_at, when granted and non-zero
	}{
		{
			name:  "single line",
			pools: pools{"a": DefaultPoolConfig(10)},
			req:   reserveCmd("u", ln("a", 3)), wantLines: []LineState{LineHeld},
			wantHeld: map[string]int64{"a": 3}, wantTTL: DefaultHoldTTLMs,
		},
		{
			name:  "takes the last units",
			pools: pools{"a": DefaultPoolConfig(3)},
			pre:   []Command{reserveCmd("v", ln("a", 1))},
			req:   reserveCmd("u", ln("a", 2)), wantLines: []LineState{LineHeld},
			wantHeld: map[string]int64{"a": 3},
		},
		{
			name:  "sold out",
			pools: pools{"a": DefaultPoolConfig(3)},
			pre:   []Command{reserveCmd("v", ln("a", 1))},
			req:   reserveCmd("u", ln("a", 3)), wantCode: SoldOut, wantLines: []LineState{LineSoldOut},
			wantHeld: map[string]int64{"a": 1},
		},
		{
			name:  "all_or_nothing: second line sold out",
			pools: pools{"a": DefaultPoolConfig(10), "b": DefaultPoolConfig(1)},
			req:   reserveCmd("u", ln("a", 2), ln("b", 2)), wantCode: SoldOut,
			wantLines: []LineState{LineAvailable, LineSoldOut},
			wantHeld:  map[string]int64{"a": 0, "b": 0},
		},
		{
			name:  "all_or_nothing: first line over the buyer limit",
			pools: pools{"a": limited(DefaultPoolConfig(10), 1), "b": DefaultPoolConfig(10)},
			req:   reserveCmd("u", ln("a", 2), ln("b", 1)), wantCode: BuyerLimit,
			wantLines: []LineState{LineBuyerLimit, LineAvailable},
			wantHeld:  map[string]int64{"a": 0, "b": 0},
		},
		{
			name:  "all_or_nothing: code of the first failing line",
			pools: pools{"a": DefaultPoolConfig(1), "b": limited(DefaultPoolConfig(10), 1), "c": DefaultPoolConfig(5)},
			req:   reserveCmd("u", ln("c", 1), ln("a", 2), ln("b", 2)), wantCode: SoldOut,
			wantLines: []LineState{LineAvailable, LineSoldOut, LineBuyerLimit},
			wantHeld:  map[string]int64{"a": 0, "b": 0, "c": 0},
		},
		{
			name:  "buyer limit wins over sold out on one line",
			pools: pools{"a": limited(DefaultPoolConfig(1), 1)},
			req:   reserveCmd("u", ln("a", 2)), wantCode: BuyerLimit,
			wantLines: []LineState{LineBuyerLimit},
			wantHeld:  map[string]int64{"a": 0},
		},
		{
			name:      "partial holds what fits",
			pools:     pools{"a": DefaultPoolConfig(10), "b": DefaultPoolConfig(1)},
			req:       partial(reserveCmd("u", ln("a", 2), ln("b", 2))),
			wantLines: []LineState{LineHeld, LineSoldOut},
			wantHeld:  map[string]int64{"a": 2, "b": 0},
		},
		{
			name:      "partial with a buyer-limited line",
			pools:     pools{"a": limited(DefaultPoolConfig(10), 1), "b": DefaultPoolConfig(10)},
			req:       partial(reserveCmd("u", ln("a", 2), ln("b", 1))),
			wantLines: []LineState{LineBuyerLimit, LineHeld},
			wantHeld:  map[string]int64{"a": 0, "b": 1},
		},
		{
			name:  "partial refuses when nothing fits",
			pools: pools{"a": DefaultPoolConfig(1), "b": DefaultPoolConfig(1)},
			req:   partial(reserveCmd("u", ln("a", 2), ln("b", 2))), wantCode: SoldOut,
			wantLines: []LineState{LineSoldOut, LineSoldOut},
			wantHeld:  map[string]int64{"a": 0, "b": 0},
		},
		{
			name:  "partial refuses with buyer_limit when that fails first",
			pools: pools{"a": limited(DefaultPoolConfig(10), 1), "b": DefaultPoolConfig(1)},
			req:   partial(reserveCmd("u", ln("a", 2), ln("b", 2))), wantCode: BuyerLimit,
			wantLines: []LineState{LineBuyerLimit, LineSoldOut},
			wantHeld:  map[string]int64{"a": 0, "b": 0},
		},
		{
			name:  "bundle on one pool counted together (all_or_nothing)",
			pools: pools{"a": DefaultPoolConfig(3)},
			req:   reserveCmd("u", ln("a", 2), ln("a", 2)), wantCode: SoldOut,
			wantLines: []LineState{LineAvailable, LineSoldOut},
			wantHeld:  map[string]int64{"a": 0},
		},
		{
			name:      "bundle on one pool counted together (partial)",
			pools:     pools{"a": DefaultPoolConfig(3)},
			req:       partial(reserveCmd("u", ln("a", 2), ln("a", 2))),
			wantLines: []LineState{LineHeld, LineSoldOut},
			wantHeld:  map[string]int64{"a": 2},
		},
		{
			name:      "bundle on one pool that fits exactly",
			pools:     pools{"a": DefaultPoolConfig(4)},
			req:       reserveCmd("u", ln("a", 2), ln("a", 2)),
			wantLines: []LineState{LineHeld, LineHeld},
			wantHeld:  map[string]int64{"a": 4},
		},
		{
			name:  "bundle on one pool counted together against the buyer limit",
			pools: pools{"a": limited(DefaultPoolConfig(10), 3)},
			req:   reserveCmd("u", ln("a", 2), ln("a", 2)), wantCode: BuyerLimit,
			wantLines: []LineState{LineAvailable, LineBuyerLimit},
			wantHeld:  map[string]int64{"a": 0},
		},
		{
			name:  "buyer limit counts earlier holds",
			pools: pools{"a": limited(DefaultPoolConfig(10), 3)},
			pre:   []Command{reserveCmd("u", ln("a", 2))},
			req:   reserveCmd("u", ln("a", 2)), wantCode: BuyerLimit,
			wantLines: []LineState{LineBuyerLimit},
			wantHeld:  map[string]int64{"a": 2},
		},
		{
			name:  "buyer limit up to exactly the limit",
			pools: pools{"a": limited(DefaultPoolConfig(10), 3)},
			pre:   []Command{reserveCmd("u", ln("a", 2))},
			req:   reserveCmd("u", ln("a", 1)), wantLines: []LineState{LineHeld},
			wantHeld: map[string]int64{"a": 3},
		},
		{
			name:  "buyer limit is per buyer",
			pools: pools{"a": limited(DefaultPoolConfig(10), 2)},
			pre:   []Command{reserveCmd("u", ln("a", 2))},
			req:   reserveCmd("v", ln("a", 2)), wantLines: []LineState{LineHeld},
			wantHeld: map[string]int64{"a": 4},
		},
		{
			name:  "buyer limit is per pool",
			pools: pools{"a": limited(DefaultPoolConfig(10), 2), "b": limited(DefaultPoolConfig(10), 2)},
			pre:   []Command{reserveCmd("u", ln("a", 2))},
			req:   reserveCmd("u", ln("b", 2)), wantLines: []LineState{LineHeld},
			wantHeld: map[string]int64{"a": 2, "b": 2},
		},
		{
			name:  "buyer limit counts confirmed units",
			pools: pools{"a": limited(DefaultPoolConfig(10), 2)},
			pre:   []Command{reserveCmd("u", ln("a", 2)), confirmCmd(1)},
			req:   reserveCmd("u", ln("a", 1)), wantCode: BuyerLimit,
			wantLines: []LineState{LineBuyerLimit},
			wantHeld:  map[string]int64{"a": 0},
		},
		{
			name:  "unknown pool",
			pools: pools{"a": DefaultPoolConfig(10)},
			req:   reserveCmd("u", ln("a", 1), ln("nope", 1)), wantCode: NotFound,
			wantHeld: map[string]int64{"a": 0},
		},
		{
			name:  "ttl defaults to the smallest hold_ttl_ms",
			pools: pools{"a": poolCfg(10, 5000, 9000, 1), "b": poolCfg(10, 3000, 20000, 1)},
			req:   reserveCmd("u", ln("a", 1), ln("b", 1)), wantLines: []LineState{LineHeld, LineHeld},
			wantHeld: map[string]int64{"a": 1, "b": 1}, wantTTL: 3000,
		},
		{
			name:  "explicit ttl up to the smallest max_hold_ttl_ms",
			pools: pools{"a": poolCfg(10, 5000, 9000, 1), "b": poolCfg(10, 3000, 20000, 1)},
			req:   withTTL(reserveCmd("u", ln("a", 1), ln("b", 1)), 9000), wantLines: []LineState{LineHeld, LineHeld},
			wantHeld: map[string]int64{"a": 1, "b": 1}, wantTTL: 9000,
		},
		{
			name:  "explicit ttl of 1 ms",
			pools: pools{"a": DefaultPoolConfig(10)},
			req:   withTTL(reserveCmd("u", ln("a", 1)), 1), wantLines: []LineState{LineHeld},
			wantHeld: map[string]int64{"a": 1}, wantTTL: 1,
		},
		{
			name:  "ttl above the pools' max_hold_ttl_ms",
			pools: pools{"a": poolCfg(10, 5000, 9000, 1), "b": poolCfg(10, 3000, 20000, 1)},
			req:   withTTL(reserveCmd("u", ln("a", 1), ln("b", 1)), 9001), wantCode: InvalidArgument,
			wantHeld: map[string]int64{"a": 0, "b": 0},
		},
		{
			name:  "negative ttl",
			pools: pools{"a": DefaultPoolConfig(10)},
			req:   withTTL(reserveCmd("u", ln("a", 1)), -1), wantCode: InvalidArgument,
			wantHeld: map[string]int64{"a": 0},
		},
		{
			name:  "qty 0",
			pools: pools{"a": DefaultPoolConfig(10)},
			req:   reserveCmd("u", ln("a", 0)), wantCode: InvalidArgument,
			wantHeld: map[string]int64{"a": 0},
		},
		{
			name:  "qty -1",
			pools: pools{"a": DefaultPoolConfig(10)},
			req:   reserveCmd("u", ln("a", 1), ln("a", -1)), wantCode: InvalidArgument,
			wantHeld: map[string]int64{"a": 0},
		},
		{
			name:  "qty 1e6",
			pools: pools{"a": DefaultPoolConfig(MaxQty)},
			req:   reserveCmd("u", ln("a", MaxQty)), wantLines: []LineState{LineHeld},
			wantHeld: map[string]int64{"a": MaxQty},
		},
		{
			name:  "qty 1e6+1",
			pools: pools{"a": DefaultPoolConfig(MaxStock)},
			req:   reserveCmd("u", ln("a", MaxQty+1)), wantCode: InvalidArgument,
			wantHeld: map[string]int64{"a": 0},
		},
		{
			name:  "no lines",
			pools: pools{"a": DefaultPoolConfig(10)},
			req:   reserveCmd("u"), wantCode: InvalidArgument,
			wantHeld: map[string]int64{"a": 0},
		},
		{
			name:  "101 lines",
			pools: pools{"a": DefaultPoolConfig(1000)},
			req:   reserveCmd("u", repeatLine(ln("a", 1), MaxLines+1)...), wantCode: InvalidArgument,
			wantHeld: map[string]int64{"a": 0},
		},
		{
			name:     "100 lines",
			pools:    pools{"a": DefaultPoolConfig(1000)},
			req:      reserveCmd("u", repeatLine(ln("a", 1), MaxLines)...),
			wantHeld: map[string]int64{"a": MaxLines},
		},
		{
			name:  "wait on a pool without a waitlist",
			pools: pools{"a": DefaultPoolConfig(10)},
			req:   Command{Kind: KindReserve, Buyer: "u", Lines: []LineRequest{ln("a", 1)}, Wait: true}, wantCode: InvalidArgument,
			wantHeld: map[string]int64{"a": 0},
		},
		{name: "empty buyer", pools: pools{"a": DefaultPoolConfig(10)}, req: reserveCmd("", ln("a", 1)), wantCode: InvalidArgument, wantHeld: map[string]int64{"a": 0}},
		{name: "buyer with a space", pools: pools{"a": DefaultPoolConfig(10)}, req: reserveCmd("u 1", ln("a", 1)), wantCode: InvalidArgument, wantHeld: map[string]int64{"a": 0}},
		{name: "buyer of 129 bytes", pools: pools{"a": DefaultPoolConfig(10)}, req: reserveCmd(strings.Repeat("u", 129), ln("a", 1)), wantCode: InvalidArgument, wantHeld: map[string]int64{"a": 0}},
		{name: "buyer of 128 bytes", pools: pools{"a": DefaultPoolConfig(10)}, req: reserveCmd(strings.Repeat("u", 128), ln("a", 1)), wantHeld: map[string]int64{"a": 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, fastClock)
			for id, cfg := range tc.pools {
				r.put(id, cfg)
			}
			for _, c := range tc.pre {
				r.ok(c)
			}
			r.tick(500)
			before := stateHashNoDemand(r.m)
			res := r.do(tc.req)
			wantCode(t, res, tc.wantCode)
			if tc.wantCode == OK {
				v := res.Reservation
				if v == nil {
					t.Fatalf("granted without a reservation view")
				}
				if v.State != StateActive || v.Buyer != tc.req.Buyer || v.CreatedAtMs != t0+500 || v.Extensions != 0 {
					t.Fatalf("reservation %+v", v)
				}
				if tc.wantTTL != 0 && v.ExpiresAtMs-v.CreatedAtMs != tc.wantTTL {
					t.Fatalf("ttl %d, want %d", v.ExpiresAtMs-v.CreatedAtMs, tc.wantTTL)
				}
				if len(v.Lines) != len(tc.req.Lines) {
					t.Fatalf("%d lines, want %d", len(v.Lines), len(tc.req.Lines))
				}
				for i, l := range v.Lines {
					if l.Pool != tc.req.Lines[i].Pool || l.Qty != tc.req.Lines[i].Qty {
						t.Fatalf("line %d = %+v, want %+v", i, l, tc.req.Lines[i])
					}
				}
				if tc.wantLines != nil && !reflect.DeepEqual(lineStates(v.Lines), tc.wantLines) {
					t.Fatalf("line states %v, want %v", lineStates(v.Lines), tc.wantLines)
				}
				if got := r.resv(v.ID); !reflect.DeepEqual(got, v) {
					t.Fatalf("read %+v, result %+v", got, v)
				}
			} else {
				if res.Reservation != nil {
					t.Fatalf("refusal returned a reservation")
				}
				if stateHashNoDemand(r.m) != before {
					t.Fatalf("refused Reserve changed the state")
				}
				if tc.wantLines != nil {
					if got := lineStates(res.Err.Lines); !reflect.DeepEqual(got, tc.wantLines) {
						t.Fatalf("Err.Lines states %v, want %v", got, tc.wantLines)
					}
					for i, l := range res.Err.Lines {
						if l.Pool != tc.req.Lines[i].Pool || l.Qty != tc.req.Lines[i].Qty {
							t.Fatalf("Err.Lines[%d] = %+v, want %+v", i, l, tc.req.Lines[i])
						}
					}
				} else if res.Err.Lines != nil {
					t.Fatalf("%v error with line details %v", res.Err.Code, res.Err.Lines)
				}
			}
			for id, held := range tc.wantHeld {
				if got := r.pool(id).Held; got != held {
					t.Fatalf("pool %s held %d, want %d", id, got, held)
				}
			}
		})
	}
}

func partial(c Command) Command            { c.Partial = true; return c }
func withTTL(c Command, ttl int64) Command { c.TTLMs = ttl; return c }

func repeatLine(l LineRequest, n int) []LineRequest {
	out := make([]LineRequest, n)
	for i := range out {
		out[i] = l
	}
	return out
}

// TestBuyerLimitLifecycle: the per-buyer limit counts active and confirmed
// units across reservations; release and expiry give the allowance back,
// confirm does not.
func TestBuyerLimitLifecycle(t *testing.T) {
	cases := []struct {
		name     string
		end      func(r *rig, id uint64) // how the first reservation ends
		wantCode Code                    // of a second reservation of 1 unit afterwards
	}{
		{"still active", func(r *rig, id uint64) {}, BuyerLimit},
		{"released", func(r *rig, id uint64) { r.ok(releaseCmd(id)) }, OK},
		{"confirmed", func(r *rig, id uint64) { r.ok(confirmCmd(id)) }, BuyerLimit},
		{"expired", func(r *rig, id uint64) { r.tick(1000) }, OK},
		{"expired while the buyer asks", func(r *rig, id uint64) { r.at(1000) }, OK},
		{"extended then released", func(r *rig, id uint64) {
			r.ok(extendCmd(id, 2000))
			r.ok(releaseCmd(id))
		}, OK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, fastClock)
			r.put("a", limited(poolCfg(10, 1000, 5000, 1), 2))
			id := r.hold("u", ln("a", 2))
			wantCode(t, r.do(reserveCmd("u", ln("a", 1))), BuyerLimit)
			r.ok(reserveCmd("v", ln("a", 1))) // another buyer is not affected
			tc.end(r, id)
			wantCode(t, r.do(reserveCmd("u", ln("a", 1))), tc.wantCode)
			// Never more than the limit, whatever happened.
			wantCode(t, r.do(reserveCmd("u", ln("a", 2))), BuyerLimit)
		})
	}
}

// ---- Confirm, Release, Extend ----

// lifecycleCase runs against pool "a" (on_hand 10, hold_ttl 1000,
// max_hold_ttl 5000, max_extensions 2) holding 3 units for buyer "u" in
// reservation id, created at t0 (expires t0+1000, cap t0+5000). A decoy
// reservation on pool "b" with the same deadline is created just before, so
// with ReclaimPerEntry 1 the wheel reclaims the decoy and leaves id to the
// touch rule.
type lifecycleCase struct {
	name      string
	cfg       Config
	prep      func(r *rig, id uint64) // brings id into the state under test
	at        int64                   // ms after t0 the command's entry is stamped
	cmd       func(id uint64) Command
	wantCode  Code
	wantState ReservationState // of the returned view (and a later read)
	wantView  bool             // a view is returned with the result
	wantHeld  int64            // pool "a" afterwards
	wantSold  int64
	wantLines []LineState
	wantExp   int64 // expires_at - t0 afterwards, if non-zero
	wantExt   int64 // extensions afterwards
}

func runLifecycle(t *testing.T, cases []lifecycleCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.MaxClockStepMs = fastClock.MaxClockStepMs
			r := newRig(t, cfg)
			r.put("a", poolCfg(10, 1000, 5000, 2))
			r.put("b", poolCfg(10, 1000, 5000, 2))
			r.hold("decoy", ln("b", 1))
			id := r.hold("u", ln("a", 3))
			if tc.prep != nil {
				tc.prep(r, id)
			}
			r.at(tc.at)
			res := r.do(tc.cmd(id))
			wantCode(t, res, tc.wantCode)
			if tc.wantView != (res.Reservation != nil) {
				t.Fatalf("view returned: %v, want %v", res.Reservation != nil, tc.wantView)
			}
			if v := res.Reservation; v != nil {
				if v.State != tc.wantState {
					t.Fatalf("state %v, want %v", v.State, tc.wantState)
				}
				if tc.wantLines != nil && !reflect.DeepEqual(lineStates(v.Lines), tc.wantLines) {
					t.Fatalf("lines %v, want %v", lineStates(v.Lines), tc.wantLines)
				}
				if tc.wantExp != 0 && v.ExpiresAtMs != t0+tc.wantExp {
					t.Fatalf("expires_at t0%+d, want t0%+d", v.ExpiresAtMs-t0, tc.wantExp)
				}
				if v.Extensions != tc.wantExt {
					t.Fatalf("extensions %d, want %d", v.Extensions, tc.wantExt)
				}
				if got := r.resv(id); !reflect.DeepEqual(got, v) {
					t.Fatalf("read after the command %+v, result %+v", got, v)
				}
			}
			r.wantPool("a", tc.wantHeld, tc.wantSold)
		})
	}
}

func TestConfirm(t *testing.T) {
	confirm := func(id uint64) Command { return confirmCmd(id) }
	sold := []LineState{LineSold}
	returned := []LineState{LineReturned}
	runLifecycle(t, []lifecycleCase{
		{name: "active", at: 10, cmd: confirm, wantState: StateConfirmed, wantView: true, wantSold: 3, wantLines: sold, wantExp: 1000},
		{name: "one ms before expires_at", at: 999, cmd: confirm, wantState: StateConfirmed, wantView: true, wantSold: 3, wantLines: sold},
		{name: "twice", prep: func(r *rig, id uint64) { r.ok(confirmCmd(id)) }, at: 10, cmd: confirm,
			wantState: StateConfirmed, wantView: true, wantSold: 3, wantLines: sold},
		{name: "twice, after expires_at", prep: func(r *rig, id uint64) { r.at(999).ok(confirmCmd(id)) }, at: 2000, cmd: confirm,
			wantState: StateConfirmed, wantView: true, wantSold: 3, wantLines: sold},
		{name: "at expires_at", at: 1000, cmd: confirm, wantCode: Expired, wantState: StateExpired, wantView: true, wantLines: returned},
		{name: "long after expires_at", at: 4000, cmd: confirm, wantCode: Expired, wantState: StateExpired, wantView: true, wantLines: returned},
		{name: "at expires_at, touch rule (not reclaimed yet)", cfg: Config{ReclaimPerEntry: 1}, at: 1000, cmd: confirm,
			wantCode: Expired, wantState: StateExpired, wantView: true, wantLines: returned},
		{name: "released", prep: func(r *rig, id uint64) { r.ok(releaseCmd(id)) }, at: 10, cmd: confirm,
			wantCode: InvalidState, wantState: StateReleased, wantView: true, wantLines: returned},
		{name: "extended past the first deadline", prep: func(r *rig, id uint64) { r.at(500).ok(extendCmd(id, 2000)) }, at: 2000, cmd: confirm,
			wantState: StateConfirmed, wantView: true, wantSold: 3, wantLines: sold, wantExp: 2500, wantExt: 1},
		{name: "unknown", at: 10, cmd: func(id uint64) Command { return confirmCmd(id + 100) }, wantCode: NotFound, wantHeld: 3},
		{name: "id 0", at: 10, cmd: func(uint64) Command { return confirmCmd(0) }, wantCode: NotFound, wantHeld: 3},
	})
}

func TestRelease(t *testing.T) {
	release := func(id uint64) Command { return releaseCmd(id) }
	returned := []LineState{LineReturned}
	runLifecycle(t, []lifecycleCase{
		{name: "active", at: 10, cmd: release, wantState: StateReleased, wantView: true, wantLines: returned},
		{name: "twice", prep: func(r *rig, id uint64) { r.ok(releaseCmd(id)) }, at: 10, cmd: release,
			wantState: StateReleased, wantView: true, wantLines: returned},
		{name: "twice in one entry", prep: func(r *rig, id uint64) {
			res := r.at(10).apply(releaseCmd(id), releaseCmd(id))
			wantCode(t, res[0], OK)
			wantCode(t, res[1], OK)
		}, at: 10, cmd: release, wantState: StateReleased, wantView: true, wantLines: returned},
		{name: "confirmed", prep: func(r *rig, id uint64) { r.ok(confirmCmd(id)) }, at: 10, cmd: release,
			wantCode: InvalidState, wantState: StateConfirmed, wantView: true, wantSold: 3, wantLines: []LineState{LineSold}},
		{name: "expired", at: 1000, cmd: release, wantCode: Expired, wantState: StateExpired, wantView: true, wantLines: returned},
		{name: "expired, touch rule", cfg: Config{ReclaimPerEntry: 1}, at: 1000, cmd: release,
			wantCode: Expired, wantState: StateExpired, wantView: true, wantLines: returned},
		{name: "expired, reclaimed earlier", prep: func(r *rig, id uint64) { r.tick(1000) }, at: 1001, cmd: release,
			wantCode: Expired, wantState: StateExpired, wantView: true, wantLines: returned},
		{name: "unknown", at: 10, cmd: func(id uint64) Command { return releaseCmd(id + 1) }, wantCode: NotFound, wantHeld: 3},
	})
}

func TestExtend(t *testing.T) {
	ext := func(ttl int64) func(uint64) Command {
		return func(id uint64) Command { return extendCmd(id, ttl) }
	}
	held := []LineState{LineHeld}
	returned := []LineState{LineReturned}
	runLifecycle(t, []lifecycleCase{
		// new expires_at = max(old, min(now+ttl, created+max_hold_ttl))
		{name: "pushes out", at: 500, cmd: ext(2000), wantState: StateActive, wantView: true, wantHeld: 3, wantLines: held, wantExp: 2500, wantExt: 1},
		{name: "never moves earlier", at: 500, cmd: ext(100), wantState: StateActive, wantView: true, wantHeld: 3, wantLines: held, wantExp: 1000, wantExt: 1},
		{name: "capped at created+max_hold_ttl", at: 500, cmd: ext(10_000), wantState: StateActive, wantView: true, wantHeld: 3, wantLines: held, wantExp: 5000, wantExt: 1},
		{name: "up to exactly the cap", at: 999, cmd: ext(4001), wantState: StateActive, wantView: true, wantHeld: 3, wantLines: held, wantExp: 5000, wantExt: 1},
		{name: "second extension", prep: func(r *rig, id uint64) { r.at(500).ok(extendCmd(id, 1000)) }, at: 1400, cmd: ext(1000),
			wantState: StateActive, wantView: true, wantHeld: 3, wantLines: held, wantExp: 2400, wantExt: 2},
		{name: "max_extensions reached", prep: func(r *rig, id uint64) {
			r.at(100).ok(extendCmd(id, 1000))
			r.at(200).ok(extendCmd(id, 1000))
		}, at: 300, cmd: ext(1000), wantCode: InvalidState, wantState: StateActive, wantView: true, wantHeld: 3, wantLines: held, wantExp: 1200, wantExt: 2},
		{name: "at the cap", prep: func(r *rig, id uint64) { r.at(100).ok(extendCmd(id, 100_000)) }, at: 200, cmd: ext(1000),
			wantCode: InvalidState, wantState: StateActive, wantView: true, wantHeld: 3, wantLines: held, wantExp: 5000, wantExt: 1},
		{name: "at expires_at", at: 1000, cmd: ext(1000), wantCode: Expired, wantState: StateExpired, wantView: true, wantLines: returned},
		{name: "after expiry, touch rule", cfg: Config{ReclaimPerEntry: 1}, at: 1000, cmd: ext(1000),
			wantCode: Expired, wantState: StateExpired, wantView: true, wantLines: returned},
		{name: "after an extension ran out", prep: func(r *rig, id uint64) { r.at(500).ok(extendCmd(id, 1000)) }, at: 1500, cmd: ext(1000),
			wantCode: Expired, wantState: StateExpired, wantView: true, wantLines: returned, wantExt: 1},
		{name: "confirmed", prep: func(r *rig, id uint64) { r.ok(confirmCmd(id)) }, at: 10, cmd: ext(1000),
			wantCode: InvalidState, wantState: StateConfirmed, wantView: true, wantSold: 3, wantLines: []LineState{LineSold}},
		{name: "released", prep: func(r *rig, id uint64) { r.ok(releaseCmd(id)) }, at: 10, cmd: ext(1000),
			wantCode: InvalidState, wantState: StateReleased, wantView: true, wantLines: returned},
		// The API requires ttl_ms for extend, so 0 is out of range here.
		{name: "ttl 0", at: 10, cmd: ext(0), wantCode: InvalidArgument, wantHeld: 3},
		{name: "ttl -1", at: 10, cmd: ext(-1), wantCode: InvalidArgument, wantHeld: 3},
		{name: "ttl above 30 days", at: 10, cmd: ext(MaxTTLMs + 1), wantCode: InvalidArgument, wantHeld: 3},
		{name: "unknown", at: 10, cmd: func(id uint64) Command { return extendCmd(id+1, 1000) }, wantCode: NotFound, wantHeld: 3},
	})
}

// TestExtendUsesTightestPool: a reservation across pools takes the smallest
// max_hold_ttl_ms and max_extensions of its pools, fixed at creation.
func TestExtendUsesTightestPool(t *testing.T) {
	r := newRig(t, fastClock)
	r.put("a", poolCfg(10, 1000, 5000, 3))
	r.put("b", poolCfg(10, 2000, 3000, 1))
	id := r.hold("u", ln("a", 1), ln("b", 1))
	if v := r.resv(id); v.ExpiresAtMs != t0+1000 {
		t.Fatalf("expires_at t0%+d, want t0+1000", v.ExpiresAtMs-t0)
	}
	// Reconfiguring a pool later does not change the hold's limits.
	r.put("b", poolCfg(10, 2000, 9000, 5))
	v := r.at(100).ok(extendCmd(id, 60_000)).Reservation
	if v.ExpiresAtMs != t0+3000 || v.Extensions != 1 {
		t.Fatalf("after extend: expires_at t0%+d extensions %d, want t0+3000 1", v.ExpiresAtMs-t0, v.Extensions)
	}
	wantCode(t, r.at(200).do(extendCmd(id, 1)), InvalidState)
}

// ---- Expiry ----

func TestExpiryExactlyAtDeadline(t *testing.T) {
	for _, ttl := range []int64{1, 999, 1000, 60_000} {
		t.Run(fmt.Sprint(ttl), func(t *testing.T) {
			r := newRig(t, fastClock)
			r.put("a", DefaultPoolConfig(5))
			id := r.ok(withTTL(reserveCmd("u", ln("a", 5)), ttl)).Reservation.ID
			if ttl > 1 {
				r.tick(ttl - 1)
				if v := r.resv(id); v.State != StateActive {
					t.Fatalf("state %v one ms before expires_at", v.State)
				}
				r.wantPool("a", 5, 0)
				wantCode(t, r.do(reserveCmd("v", ln("a", 1))), SoldOut)
			}
			// An entry at exactly expires_at, doing something else, reclaims it.
			res := r.at(ttl).do(reserveCmd("v", ln("a", 5)))
			wantCode(t, res, OK)
			v := r.resv(id)
			if v.State != StateExpired || !reflect.DeepEqual(lineStates(v.Lines), []LineState{LineReturned}) {
				t.Fatalf("at expires_at: %+v", v)
			}
			r.wantPool("a", 5, 0)
			if s := r.m.Stats(); s.Expired != 1 || s.ActiveHolds != 1 || s.Reserved != 2 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// TestExpiryBacklog: with a bounded reclaim, holds due at once are reclaimed
// over several entries, but reads and writes treat them as expired at once.
func TestExpiryBacklog(t *testing.T) {
	const n = 6
	r := newRig(t, Config{ReclaimPerEntry: 1, MaxClockStepMs: 1 << 40})
	r.put("a", poolCfg(n, 1000, 5000, 1))
	var ids []uint64
	for i := range n {
		ids = append(ids, r.hold(fmt.Sprintf("u%d", i), ln("a", 1)))
	}
	r.tick(999)
	r.wantPool("a", n, 0)
	r.tick(1000)
	r.wantPool("a", n-1, 0) // one reclaimed by this entry
	for i, id := range ids {
		v := r.resv(id)
		if v.State != StateExpired || !reflect.DeepEqual(lineStates(v.Lines), []LineState{LineReturned}) {
			t.Fatalf("hold %d read as %v %v, want expired, returned", i, v.State, lineStates(v.Lines))
		}
	}
	// Touching the last one (via confirm) expires it and returns its unit now.
	wantCode(t, r.at(1000).do(confirmCmd(ids[n-1])), Expired)
	r.wantPool("a", n-3, 0) // this entry reclaimed one more, the touch another
	// The rest come back one per entry.
	for want := int64(n - 4); want >= 0; want-- {
		r.tick(1000)
		r.wantPool("a", want, 0)
	}
	for _, id := range ids {
		if v := r.resv(id); v.State != StateExpired {
			t.Fatalf("state %v", v.State)
		}
	}
	if s := r.m.Stats(); s.Expired != n || s.ActiveHolds != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// ---- Clock ----

func TestClock(t *testing.T) {
	cases := []struct {
		name    string
		cfg     Config
		entries []int64 // leader stamps
		want    []int64 // clock after each
	}{
		{"first entry adopts the leader time", Config{}, []int64{t0}, []int64{t0}},
		{"first entry adopts even a far-off time", Config{}, []int64{5, t0}, []int64{5, 1005}},
		{"small steps follow the leader", Config{}, []int64{t0, t0 + 10, t0 + 1010}, []int64{t0, t0 + 10, t0 + 1010}},
		{"steps are bounded by MaxClockStepMs", Config{}, []int64{t0, t0 + 5000, t0 + 5000, t0 + 5000}, []int64{t0, t0 + 1000, t0 + 2000, t0 + 3000}},
		{"catching up never overshoots", Config{}, []int64{t0, t0 + 1500, t0 + 1500, t0 + 1500}, []int64{t0, t0 + 1000, t0 + 1500, t0 + 1500}},
		{"custom step", Config{MaxClockStepMs: 50}, []int64{t0, t0 + 5000, t0 + 60}, []int64{t0, t0 + 50, t0 + 60}},
		{"never moves back", Config{}, []int64{t0, t0 - 100, t0 + 10, t0 - 1, t0 + 5}, []int64{t0, t0, t0 + 10, t0 + 10, t0 + 10}},
		{"a lagging clock resumes from where it is", Config{}, []int64{t0, t0 + 3000, t0 - 5000, t0 + 3000}, []int64{t0, t0 + 1000, t0 + 1000, t0 + 2000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := New(tc.cfg)
			for i, now := range tc.entries {
				m.Apply(now, []Command{{Kind: KindTick}}, nil)
				if got := m.ClockMs(); got != tc.want[i] {
					t.Fatalf("entry %d at %d: clock %d, want %d", i, now, got, tc.want[i])
				}
			}
		})
	}
}

// TestClockStampsAndDeadlines: holds are stamped with the bounded log clock,
// so a leader clock jump cannot expire them early.
func TestClockStampsAndDeadlines(t *testing.T) {
	r := newRig(t, Config{}) // MaxClockStepMs 1000
	r.put("a", poolCfg(10, 1500, 5000, 1))
	id := r.hold("u", ln("a", 1))
	// The leader's clock jumps an hour ahead: the log clock moves 1 s.
	v := r.at(3_600_000).ok(reserveCmd("v", ln("a", 1))).Reservation
	if v.CreatedAtMs != t0+1000 || v.ExpiresAtMs != t0+2500 {
		t.Fatalf("second hold stamped t0%+d expiring t0%+d, want t0+1000 and t0+2500", v.CreatedAtMs-t0, v.ExpiresAtMs-t0)
	}
	if got := r.resv(id).State; got != StateActive {
		t.Fatalf("first hold %v after one bounded step, want active", got)
	}
	r.apply(Command{Kind: KindTick}) // clock t0+2000
	if got := r.resv(id).State; got != StateExpired {
		t.Fatalf("first hold %v at t0+2000, want expired", got)
	}
	r.wantPool("a", 1, 0)
}

// ---- Idempotency ----

func idem(c Command, key string, hash byte) Command {
	c.IdemKey = key
	c.ReqHash = [HashLen]byte{hash, 0xaa, 15: hash}
	return c
}

func TestIdempotencyReplay(t *testing.T) {
	cases := []struct {
		name string
		cmd  func(r *rig) Command // the idempotent command (setup may run)
	}{
		{"reserve", func(r *rig) Command { return idem(reserveCmd("u", ln("a", 2)), "k", 1) }},
		{"refused reserve", func(r *rig) Command { return idem(reserveCmd("u", ln("a", 20)), "k", 1) }},
		{"partial reserve", func(r *rig) Command { return idem(partial(reserveCmd("u", ln("a", 2), ln("a", 20))), "k", 1) }},
		{"put pool (create)", func(r *rig) Command { return idem(putCmd("b", DefaultPoolConfig(3)), "k", 1) }},
		{"put pool (invalid)", func(r *rig) Command { return idem(putCmd("b", DefaultPoolConfig(-3)), "k", 1) }},
		{"adjust", func(r *rig) Command { return idem(adjustCmd("a", 5), "k", 1) }},
		{"confirm", func(r *rig) Command { return idem(confirmCmd(r.hold("u", ln("a", 1))), "k", 1) }},
		{"release", func(r *rig) Command { return idem(releaseCmd(r.hold("u", ln("a", 1))), "k", 1) }},
		{"extend", func(r *rig) Command { return idem(extendCmd(r.hold("u", ln("a", 1)), 5000), "k", 1) }},
		{"confirm of unknown", func(r *rig) Command { return idem(confirmCmd(999), "k", 1) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, fastClock)
			r.put("a", DefaultPoolConfig(10))
			c := tc.cmd(r)
			r.at(100)
			first := r.do(c)
			if first.Replayed {
				t.Fatalf("first answer marked replayed")
			}
			for _, at := range []int64{100, 5000} { // same entry time, and later
				r.at(at)
				r.apply(Command{Kind: KindTick})
				before := r.m.StateHash()
				again := r.apply(c, c) // twice in one entry too
				if r.m.StateHash() != before {
					t.Fatalf("replay changed the state")
				}
				for _, res := range again {
					if !res.Replayed {
						t.Fatalf("replay not marked replayed: %+v", res)
					}
					res.Replayed = false
					if !reflect.DeepEqual(res, first) {
						t.Fatalf("replay differs:\nfirst %+v\nagain %+v", first, res)
					}
				}
			}
			// The same key with a different request is refused, changes nothing.
			other := c
			other.ReqHash[3] ^= 1
			before := r.m.StateHash()
			res := r.do(other)
			wantCode(t, res, IdempotencyMismatch)
			if res.Replayed || res.Reservation != nil || res.Pool != nil {
				t.Fatalf("mismatch result %+v", res)
			}
			if r.m.StateHash() != before {
				t.Fatalf("mismatch changed the state")
			}
			// A different key with the same request is a new request.
			fresh := c
			fresh.IdemKey = "k2"
			if res := r.do(fresh); res.Replayed {
				t.Fatalf("a new key was answered as a replay")
			}
		})
	}
}

// TestIdempotencyReplayInSameEntry: the second use of a key inside the
// entry that first used it is a replay.
func TestIdempotencyReplayInSameEntry(t *testing.T) {
	r := newRig(t, fastClock)
	r.put("a", DefaultPoolConfig(10))
	c := idem(reserveCmd("u", ln("a", 2)), "k", 7)
	res := r.apply(c, c, idem(reserveCmd("u", ln("a", 3)), "k", 8))
	wantCode(t, res[0], OK)
	if !res[1].Replayed || res[1].Reservation.ID != res[0].Reservation.ID {
		t.Fatalf("second use in the same entry: %+v", res[1])
	}
	wantCode(t, res[2], IdempotencyMismatch)
	r.wantPool("a", 2, 0)
}

func TestIdempotencyTTL(t *testing.T) {
	const ttl = 10_000
	r := newRig(t, Config{IdempotencyTTLMs: ttl, MaxClockStepMs: 1 << 40})
	r.put("a", DefaultPoolConfig(10))
	c := idem(reserveCmd("u", ln("a", 1)), "k", 1)
	first := r.at(100).do(c)
	if res := r.at(100 + ttl - 1).do(c); !res.Replayed || res.Reservation.ID != first.Reservation.ID {
		t.Fatalf("key forgotten one ms early: %+v", res)
	}
	if got := r.m.Stats().IdempotencyKeys; got != 1 {
		t.Fatalf("%d keys remembered, want 1", got)
	}
	r.tick(100 + ttl)
	if got := r.m.Stats().IdempotencyKeys; got != 0 {
		t.Fatalf("%d keys remembered after the TTL, want 0", got)
	}
	res := r.do(c)
	if res.Replayed || res.Reservation == nil || res.Reservation.ID == first.Reservation.ID {
		t.Fatalf("after the TTL the key should run again: %+v", res)
	}
	// Once forgotten, a different request may use the key.
	r.tick(100 + 3*ttl)
	wantCode(t, r.do(idem(releaseCmd(first.Reservation.ID), "k", 2)), OK)
}

func TestIdempotencyMaxKeys(t *testing.T) {
	r := newRig(t, Config{MaxIdempotencyKeys: 3, MaxClockStepMs: 1 << 40})
	r.put("a", DefaultPoolConfig(100))
	ids := map[string]uint64{}
	for i, k := range []string{"k1", "k2", "k3", "k4", "k5"} {
		res := r.at(int64(i)).do(idem(reserveCmd("u", ln("a", 1)), k, byte(i)))
		ids[k] = res.Reservation.ID
		if got := r.m.Stats().IdempotencyKeys; got != int64(min(i+1, 3)) {
			t.Fatalf("after %s: %d keys, want %d", k, got, min(i+1, 3))
		}
	}
	// The newest three replay (replays add no records)...
	for i, k := range []string{"k3", "k4", "k5"} {
		res := r.do(idem(reserveCmd("u", ln("a", 1)), k, byte(i+2)))
		if !res.Replayed || res.Reservation.ID != ids[k] {
			t.Fatalf("%s: %+v, want a replay of %d", k, res, ids[k])
		}
	}
	// ...the two oldest were forgotten.
	for i, k := range []string{"k1", "k2"} {
		res := r.do(idem(reserveCmd("u", ln("a", 1)), k, byte(i)))
		if res.Replayed || res.Reservation.ID == ids[k] {
			t.Fatalf("%s should have been forgotten: %+v", k, res)
		}
	}
	if got := r.m.Stats().IdempotencyKeys; got != 3 {
		t.Fatalf("%d keys, want 3", got)
	}
	// Forgetting by TTL and by count together leave no dangling deadline.
	r.tick(2 * 24 * 3600 * 1000)
	if got := r.m.Stats().IdempotencyKeys; got != 0 {
		t.Fatalf("%d keys after the TTL, want 0", got)
	}
}

// ---- Retention ----

func TestRetention(t *testing.T) {
	const retain = 10_000
	cases := []struct {
		name       string
		end        func(r *rig, id uint64) // ends the hold; returns nothing
		finishedAt int64                   // ms after t0
		wantState  ReservationState
		wantSold   int64
	}{
		{"confirmed", func(r *rig, id uint64) { r.at(300).ok(confirmCmd(id)) }, 300, StateConfirmed, 2},
		{"released", func(r *rig, id uint64) { r.at(300).ok(releaseCmd(id)) }, 300, StateReleased, 0},
		{"expired", func(r *rig, id uint64) { r.tick(1000) }, 1000, StateExpired, 0},
		{"expired when touched late", func(r *rig, id uint64) { wantCode(r.t, r.at(1700).do(confirmCmd(id)), Expired) }, 1700, StateExpired, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Config{RetainFinishedMs: retain, ReclaimPerEntry: 1, IdempotencyTTLMs: 999, MaxClockStepMs: 1 << 40})
			r.put("a", limited(poolCfg(10, 1000, 5000, 1), 2))
			if tc.name == "expired when touched late" {
				// An idempotency key due before the hold takes the entry's
				// one reclaim, so the confirm's touch expires the hold.
				r.ok(idem(adjustCmd("a", 0), "k", 1))
			}
			id := r.hold("u", ln("a", 2))
			tc.end(r, id)
			r.tick(tc.finishedAt + retain - 1)
			if v := r.resv(id); v.State != tc.wantState {
				t.Fatalf("state %v, want %v", v.State, tc.wantState)
			}
			r.tick(tc.finishedAt + retain)
			if _, err := r.m.Reservation(id); err == nil || err.Code != NotFound {
				t.Fatalf("read after retention: %v, want not_found", err)
			}
			for _, c := range []Command{confirmCmd(id), releaseCmd(id), extendCmd(id, 100)} {
				wantCode(t, r.do(c), NotFound)
			}
			r.wantPool("a", 0, tc.wantSold)
			// A forgotten sale still counts against the buyer's limit.
			want := OK
			if tc.wantSold > 0 {
				want = BuyerLimit
			}
			wantCode(t, r.do(reserveCmd("u", ln("a", 1))), want)
			if s := r.m.Stats(); s.Reservations != int64(r.m.res.len()) || r.m.res.get(id) != nil {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// ---- ids ----

func TestReservationIDRoundTrip(t *testing.T) {
	for _, id := range []uint64{1, 9, 10, 15, 16, 255, 256, 0xdeadbeef, 1 << 63, ^uint64(0)} {
		s := FormatReservationID(id)
		got, ok := ParseReservationID(s)
		if !ok || got != id {
			t.Errorf("ParseReservationID(%q) = %d, %v; want %d", s, got, ok, id)
		}
	}
	if s := FormatReservationID(0xab); s != "r_ab" {
		t.Errorf("FormatReservationID(0xab) = %q", s)
	}
}

func TestParseReservationIDRejects(t *testing.T) {
	for _, s := range []string{
		"", "r", "r_", "r_0", "r_00", "r_01", "R_1", "r-1", "_1", "1", "r__1",
		"r_1g", "r_g", "r_A", "r_1F", "r_-1", "r_+1", "r_0x1", "r_1_0", " r_1", "r_1 ", "r_1\x00",
		"r_10000000000000000", // 17 digits: past uint64
		"r_" + strings.Repeat("f", 17),
		"r_" + strings.Repeat("0", 15) + "1", // 16 chars but a leading zero
	} {
		if id, ok := ParseReservationID(s); ok {
			t.Errorf("ParseReservationID(%q) = %d, true; want rejected", s, id)
		}
	}
}

func TestValidID(t *testing.T) {
	cases := []struct {
		s  string
		ok bool
	}{
		{"", false},
		{"a", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"AZaz09", true},
		{".", true}, {"_", true}, {":", true}, {"@", true}, {"/", true}, {"-", true},
		{"a.b_c:d@e/f-g", true},
		{" ", false}, {"a b", false}, {"a\tb", false}, {"a\n", false}, {"\x00", false},
		{"%", false}, {"a%2F", false},
		{"é", false}, {"日本", false}, {"a\u00a0b", false},
		{"+", false}, {"*", false}, {"#", false}, {"?", false}, {"=", false}, {",", false},
		{"\\", false}, {"\"", false}, {"'", false}, {"~", false}, {"!", false},
	}
	for _, tc := range cases {
		if got := ValidID(tc.s); got != tc.ok {
			t.Errorf("ValidID(%q) = %v, want %v", tc.s, got, tc.ok)
		}
	}
	// Exhaustive over single bytes.
	for b := 0; b < 256; b++ {
		c := byte(b)
		want := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:@/-", c) >= 0
		if got := ValidID(string([]byte{c})); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", c, got, want)
		}
	}
}

// stateHashNoDemand hashes the state without the pools' demand windows: a
// refused request is still demand, and is counted.
func stateHashNoDemand(m *Machine) [32]byte {
	saved := map[*Pool]demand{}
	for _, p := range m.pools {
		saved[p] = p.demand
		p.demand = demand{}
	}
	h := m.StateHash()
	for p, d := range saved {
		p.demand = d
	}
	return h
}
