package cart

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/holdfast/holdfast/allocator"
)

// memStore is an in-memory Store: a map, sorted on Scan.
type memStore struct {
	m map[string][]byte
}

func newStore() *memStore { return &memStore{m: make(map[string][]byte)} }

func (s *memStore) Get(key []byte) ([]byte, bool) {
	v, ok := s.m[string(key)]
	return v, ok
}

func (s *memStore) Set(key, value []byte) { s.m[string(key)] = bytes.Clone(value) }

func (s *memStore) Delete(key []byte) { delete(s.m, string(key)) }

func (s *memStore) Scan(lo, hi []byte, f func(key, value []byte) bool) {
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		if k >= string(lo) && k < string(hi) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !f([]byte(k), s.m[k]) {
			return
		}
	}
}

// dump renders the whole store in key order, for byte-wise comparison.
func (s *memStore) dump() string {
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%x=%x\n", k, s.m[k])
	}
	return b.String()
}

func (s *memStore) count(sub byte) int {
	n := 0
	for k := range s.m {
		if len(k) >= 2 && k[0] == Prefix && k[1] == sub {
			n++
		}
	}
	return n
}

// fakePools is a small allocator: stock per pool, per-buyer limits and
// reservations that expire by the fake's clock.
type fakePools struct {
	now   int64
	ttl   int64 // default hold TTL
	pools map[string]*fakePool
	res   []*fakeRes // index id-1
}

type fakePool struct {
	avail   int64
	limit   int64
	notOpen bool
	usage   map[string]int64
}

type fakeRes struct {
	id        uint64
	buyer     string
	lines     []allocator.LineRequest
	states    []allocator.LineState
	expiresAt int64
	state     allocator.ReservationState
}

func newPools() *fakePools { return &fakePools{ttl: 600_000, pools: map[string]*fakePool{}} }

func (f *fakePools) put(pool string, avail, limit int64) *fakePools {
	f.pools[pool] = &fakePool{avail: avail, limit: limit, usage: map[string]int64{}}
	return f
}

func (f *fakePools) PerBuyerLimit(pool string) (int64, bool) {
	p := f.pools[pool]
	if p == nil {
		return 0, false
	}
	return p.limit, true
}

// expire returns the units of holds past their expiry, in id order.
func (f *fakePools) expire() {
	for _, r := range f.res {
		if r.state == allocator.StateActive && f.now >= r.expiresAt {
			f.end(r, allocator.StateExpired)
		}
	}
}

func (f *fakePools) end(r *fakeRes, s allocator.ReservationState) {
	r.state = s
	for i, l := range r.lines {
		if r.states[i] == allocator.LineHeld {
			p := f.pools[l.Pool]
			p.avail += l.Qty
			p.usage[r.buyer] -= l.Qty
			r.states[i] = allocator.LineReturned
		}
	}
}

func (f *fakePools) Reserve(buyer string, lines []allocator.LineRequest, ttl int64, partial bool) allocator.Result {
	f.expire()
	if ttl == 0 {
		ttl = f.ttl
	}
	states := make([]allocator.LineState, len(lines))
	tally := map[string]int64{}
	held, first := 0, -1
	for i, l := range lines {
		p := f.pools[l.Pool]
		if p == nil {
			return allocator.Result{Err: &allocator.Error{Code: allocator.NotFound, Message: "no pool"}}
		}
		switch {
		case p.notOpen:
			states[i] = allocator.LineNotOpen
		case p.limit > 0 && p.usage[buyer]+tally[l.Pool]+l.Qty > p.limit:
			states[i] = allocator.LineBuyerLimit
		case p.avail-tally[l.Pool] < l.Qty:
			states[i] = allocator.LineSoldOut
		default:
			states[i] = allocator.LineHeld
			tally[l.Pool] += l.Qty
			held++
			continue
		}
		if first < 0 {
			first = i
		}
	}
	if first >= 0 && (!partial || held == 0) {
		code := allocator.SoldOut
		switch states[first] {
		case allocator.LineBuyerLimit:
			code = allocator.BuyerLimit
		case allocator.LineNotOpen:
			code = allocator.NotOpen
		}
		e := &allocator.Error{Code: code, Message: "refused"}
		for i, l := range lines {
			s := states[i]
			if s == allocator.LineHeld {
				s = allocator.LineAvailable
			}
			e.Lines = append(e.Lines, allocator.LineView{Pool: l.Pool, Qty: l.Qty, State: s})
		}
		return allocator.Result{Err: e}
	}
	r := &fakeRes{id: uint64(len(f.res) + 1), buyer: buyer, lines: slices.Clone(lines), states: states, expiresAt: f.now + ttl}
	for i, l := range lines {
		if states[i] == allocator.LineHeld {
			p := f.pools[l.Pool]
			p.avail -= l.Qty
			p.usage[buyer] += l.Qty
		}
	}
	f.res = append(f.res, r)
	return allocator.Result{Reservation: f.view(r)}
}

func (f *fakePools) view(r *fakeRes) *allocator.ReservationView {
	v := &allocator.ReservationView{ID: r.id, Buyer: r.buyer, State: r.state, ExpiresAtMs: r.expiresAt}
	for i, l := range r.lines {
		v.Lines = append(v.Lines, allocator.LineView{Pool: l.Pool, Qty: l.Qty, State: r.states[i]})
	}
	return v
}

func (f *fakePools) Confirm(id uint64) allocator.Result {
	if id == 0 || id > uint64(len(f.res)) {
		return allocator.Result{Err: &allocator.Error{Code: allocator.NotFound, Message: "no reservation"}}
	}
	r := f.res[id-1]
	if r.state == allocator.StateActive && f.now >= r.expiresAt {
		f.end(r, allocator.StateExpired)
	}
	switch r.state {
	case allocator.StateConfirmed:
		return allocator.Result{Reservation: f.view(r)}
	case allocator.StateExpired:
		return allocator.Result{Err: &allocator.Error{Code: allocator.Expired, Message: "expired"}, Reservation: f.view(r)}
	case allocator.StateActive:
	default:
		return allocator.Result{Err: &allocator.Error{Code: allocator.InvalidState, Message: "not active"}, Reservation: f.view(r)}
	}
	r.state = allocator.StateConfirmed
	for i := range r.states {
		if r.states[i] == allocator.LineHeld {
			r.states[i] = allocator.LineSold
		}
	}
	return allocator.Result{Reservation: f.view(r)}
}

func (f *fakePools) release(id uint64) { f.end(f.res[id-1], allocator.StateReleased) }

func (f *fakePools) ReservationState(id uint64) (allocator.ReservationState, bool) {
	if id < 1 || id > uint64(len(f.res)) {
		return 0, false
	}
	return f.res[id-1].state, true
}

// allocPools adapts a real *allocator.Machine, as the engine does.
type allocPools struct {
	m   *allocator.Machine
	now int64
}

func (a *allocPools) PerBuyerLimit(pool string) (int64, bool) {
	v, err := a.m.Pool(pool)
	if err != nil {
		return 0, false
	}
	return v.Config.PerBuyerLimit, true
}

func (a *allocPools) one(c allocator.Command) allocator.Result {
	return a.m.Apply(a.now, []allocator.Command{c}, nil)[0]
}

func (a *allocPools) Reserve(buyer string, lines []allocator.LineRequest, ttl int64, partial bool) allocator.Result {
	return a.one(allocator.Command{Kind: allocator.KindReserve, Buyer: buyer, Lines: lines, TTLMs: ttl, Partial: partial})
}

func (a *allocPools) ReservationState(id uint64) (allocator.ReservationState, bool) {
	v, err := a.m.Reservation(id)
	if err != nil {
		return 0, false
	}
	return v.State, true
}

func (a *allocPools) Confirm(id uint64) allocator.Result {
	return a.one(allocator.Command{Kind: allocator.KindConfirm, Reservation: id})
}

// ---- a test harness ----

const (
	t0   = int64(1_790_000_000_000) // log time of the first command
	day  = int64(24 * 3600 * 1000)
	hour = int64(3600 * 1000)
)

type harness struct {
	t     testing.TB
	m     *Machine
	st    *memStore
	pools *fakePools
	now   int64
}

func newHarness(t testing.TB, cfg Config) *harness {
	return &harness{t: t, m: New(cfg), st: newStore(), pools: newPools(), now: t0}
}

func (h *harness) at(now int64) *harness {
	h.now = now
	h.pools.now = now
	return h
}

func (h *harness) apply(c Command) Result {
	h.t.Helper()
	h.pools.now = h.now
	return h.m.Apply(h.st, h.pools, h.now, &c)
}

// ok applies c and fails the test on an error.
func (h *harness) ok(c Command) Result {
	h.t.Helper()
	r := h.apply(c)
	if r.Err != nil {
		h.t.Fatalf("%v: %v", c.Kind, r.Err)
	}
	return r
}

// fail applies c and wants error code.
func (h *harness) fail(c Command, code allocator.Code) Result {
	h.t.Helper()
	r := h.apply(c)
	if r.Err == nil || r.Err.Code != code {
		h.t.Fatalf("%v: got %v, want %v", c.Kind, r.Err, code)
	}
	return r
}

func (h *harness) create(owner string) string {
	h.t.Helper()
	return h.ok(Command{Kind: KindCreate, Owner: owner}).Cart.ID
}

func (h *harness) cart(id string) *Cart {
	h.t.Helper()
	c, e := Get(h.st, id)
	if e != nil {
		h.t.Fatalf("get %s: %v", id, e)
	}
	return c
}

func item(sku, variant string) LineInput {
	return LineInput{SKU: sku, Variant: variant, Seller: "s1", Fulfillment: "eu", Price: Price{AmountMinor: 12900, Currency: "EUR", OfferID: "o-" + sku}}
}

func pool(sku, variant string) string { return DefaultPool(sku, variant, "s1", "eu") }

func addCmd(cart string, in LineInput, qty int64) Command {
	return Command{Kind: KindAddLine, Cart: cart, Line: in, Qty: qty}
}

func (h *harness) add(cart string, in LineInput, qty int64) *Cart {
	h.t.Helper()
	return h.ok(addCmd(cart, in, qty)).Cart
}

func lineBySKU(c *Cart, sku, variant string) *Line {
	for i := range c.Lines {
		if c.Lines[i].SKU == sku && c.Lines[i].Variant == variant {
			return &c.Lines[i]
		}
	}
	return nil
}

// summary renders a cart's lines as "A:x1 B:x2" in line order.
func summary(c *Cart) string {
	var b bytes.Buffer
	for i, l := range c.Lines {
		if i > 0 {
			b.WriteByte(' ')
		}
		sku := l.SKU
		if l.Variant != "" {
			sku += "/" + l.Variant
		}
		fmt.Fprintf(&b, "%s:x%d", sku, l.Qty)
	}
	return b.String()
}

func reportSummary(r []MergeOutcome) string {
	var b bytes.Buffer
	for i, o := range r {
		if i > 0 {
			b.WriteByte(' ')
		}
		sku := o.Line.SKU
		if o.Line.Variant != "" {
			sku += "/" + o.Line.Variant
		}
		fmt.Fprintf(&b, "%s:%s:x%d", sku, o.Outcome, o.Line.Qty)
	}
	return b.String()
}
