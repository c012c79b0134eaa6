package bench

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// retailScenario is everyday shopping over a large catalogue: --pools
// pools with deep stock (--stock-min..--stock-max units), popularity
// Zipf-distributed (--skew) so the hot items do sell out. Each shopper:
//
//	creates a cart; adds 1..--max-lines lines (1-2 units of distinct
//	pools), reading the cart between writes so that there are
//	--reads-per-write cart reads per write over the session; starts a
//	checkout (one all-or-nothing hold of --hold-ttl); then abandons it
//	with probability --abandon (the hold expires) or confirms it after a
//	think time.
//
// --ops bounds the operations (each cart create, add, read, checkout and
// confirm is one). A target implementing CartTarget runs it through its
// cart API; any other gets it emulated with Reserve, InStock and Confirm
// (see emuCarts).
type retailScenario struct{ o *options }

func (s *retailScenario) writesPerSession() float64 {
	return 2 + float64(1+s.o.maxLines)/2 + (1 - s.o.abandon)
}

func (s *retailScenario) opsPerSession() float64 {
	return s.writesPerSession() * (1 + s.o.readsPerWrite)
}

func (s *retailScenario) sessions() int {
	return max(1, int(math.Ceil(float64(s.o.ops)/s.opsPerSession())))
}

func (s *retailScenario) defaultDrain() time.Duration {
	// A session lasts its reads' think times; give the last ones time to
	// end, and their holds time to expire.
	reads := s.writesPerSession() * s.o.readsPerWrite
	return time.Duration(reads)*s.o.readThink + s.o.thinkMax*time.Duration(s.o.maxLines+1) + s.o.holdTTL + 2*time.Second
}

type shopper struct {
	owner    string
	cart     CartView
	pools    []int
	qty      []int64
	gaps     []int // cart reads after each add
	confirm  bool
	shown    map[string]time.Time // pool -> last cart read showing it in stock
	checkout CheckoutResult
	seq      int
}

type retailRun struct {
	o      *options
	t      Target
	carts  CartTarget
	native bool
	specs  []PoolSpec
	zipf   *zipfTable
	shop   []shopper

	mu      sync.Mutex
	holds   []string
	acked   map[string]int64
	pending pendingHolds // holds whose confirm was not acknowledged
	c       *counters
	late    struct{ attempts, soldOut, disappointed atomic.Int64 }
}

// Counter indexes of a retail run.
const (
	rCheckouts = iota
	rCheckoutOK
	rCheckoutSoldOut
	rCheckoutOther
	rConfirmed
	rConfirmExpired
	rAbandoned
	rFailedSessions
)

func (s *retailScenario) newRun(env *runEnv) (scenarioRun, string) {
	o := s.o
	r := &retailRun{o: o, t: env.t, acked: map[string]int64{},
		c: newCounters("checkouts", "checkout_ok", "checkout_sold_out", "checkout_other", "confirmed", "confirm_expired", "abandoned", "sessions_failed")}
	note := ""
	if ct, ok := env.t.(CartTarget); ok {
		r.carts, r.native = ct, true
	} else {
		r.carts = newEmuCarts(env.t)
		note = "no cart API: retail emulated (cart kept by the harness; cart_add = one InStock; cart_read = one InStock per line; checkout = one Reserve per line, released on failure; confirm = one Confirm per hold)"
	}
	rng := newRand(o.seed, 11)
	r.specs = make([]PoolSpec, o.pools)
	for i := range r.specs {
		stock := o.stockMin
		if o.stockMax > o.stockMin {
			stock += rng.IntN(o.stockMax - o.stockMin + 1)
		}
		r.specs[i] = PoolSpec{ID: env.prefix + "-p" + strconv.Itoa(i), OnHand: int64(stock), HoldTTLMs: o.holdTTL.Milliseconds()}
	}
	r.zipf = newZipfTable(o.pools, o.skew, o.seed)
	r.shop = make([]shopper, s.sessions())
	for i := range r.shop {
		r.shop[i].owner = "user:" + env.prefix + "-s" + strconv.Itoa(i)
	}
	return r, note
}

func (r *retailRun) pools() []PoolSpec { return r.specs }

func (r *retailRun) key(s *shopper, what string) string {
	s.seq++
	return s.owner[5:] + "-" + what + strconv.Itoa(s.seq)
}

func (r *retailRun) start(x *exec, i int) {
	s := &r.shop[i]
	k := 1 + x.rng.IntN(max(r.o.maxLines, 1))
	seen := map[int]bool{}
	for len(s.pools) < k && len(seen) < len(r.specs) {
		p := r.zipf.draw(x.rng.Float64())
		if !seen[p] {
			seen[p] = true
			s.pools = append(s.pools, p)
			s.qty = append(s.qty, 1+int64(x.rng.IntN(2)))
		}
	}
	k = len(s.pools)
	s.confirm = !x.chance(r.o.abandon)
	writes := 2 + k
	if s.confirm {
		writes++
	}
	reads := int(math.Round(r.o.readsPerWrite * float64(writes)))
	s.gaps = make([]int, k)
	for j := range s.gaps {
		s.gaps[j] = reads / k
		if j < reads%k {
			s.gaps[j]++
		}
	}
	s.shown = map[string]time.Time{}
	var o Outcome
	if r.native {
		o = x.do("cart_create", func(ctx context.Context) (Outcome, error) {
			var err error
			var oc Outcome
			s.cart, oc, err = r.carts.CreateCart(ctx, s.owner, r.key(s, "c"))
			return oc, err
		})
	} else {
		s.cart, o, _ = r.carts.CreateCart(x.ctx, s.owner, "")
	}
	if o != OK {
		r.c.add(rFailedSessions, 1)
		return
	}
	r.add(x, s, 0)
}

func (r *retailRun) think(x *exec) time.Duration { return x.uniform(r.o.thinkMin/2, r.o.thinkMax/2) }

func (r *retailRun) add(x *exec, s *shopper, j int) {
	pool := r.specs[s.pools[j]].ID
	o := x.do("cart_add", func(ctx context.Context) (Outcome, error) {
		v, oc, err := r.carts.AddLine(ctx, s.cart.ID, CartLine{Pool: pool, Qty: s.qty[j]}, r.key(s, "a"))
		if oc == OK {
			s.cart = v
		}
		return oc, err
	})
	if o != OK {
		r.c.add(rFailedSessions, 1)
		return
	}
	r.read(x, s, j, s.gaps[j])
}

func (r *retailRun) read(x *exec, s *shopper, j, left int) {
	if left == 0 {
		if j+1 < len(s.pools) {
			x.after(r.think(x), func(x *exec) { r.add(x, s, j+1) })
		} else {
			x.after(r.think(x), func(x *exec) { r.checkout(x, s) })
		}
		return
	}
	var v CartView
	o := x.do("cart_read", func(ctx context.Context) (Outcome, error) {
		var err error
		v, err = r.carts.ReadCart(ctx, s.cart.ID)
		return OK, err
	})
	if o == OK {
		now := time.Now()
		for _, l := range v.Lines {
			if l.InStock {
				s.shown[l.Pool] = now
			}
		}
		if v.Version > s.cart.Version {
			s.cart.Version = v.Version
		}
	}
	x.after(x.uniform(0, 2*r.o.readThink), func(x *exec) { r.read(x, s, j, left-1) })
}

func (r *retailRun) checkout(x *exec, s *shopper) {
	r.c.add(rCheckouts, 1)
	r.late.attempts.Add(1)
	sent := time.Now()
	o := x.do("checkout", func(ctx context.Context) (Outcome, error) {
		var err error
		s.checkout, err = r.carts.Checkout(ctx, s.cart.ID, s.cart.Version, r.o.holdTTL.Milliseconds(), r.key(s, "co"))
		return s.checkout.Outcome, err
	})
	r.mu.Lock()
	for _, h := range s.checkout.Holds {
		r.holds = append(r.holds, h.ID)
		r.pending.add(h.ID, h.ExpiresAt)
	}
	r.mu.Unlock()
	switch o {
	case OK:
		r.c.add(rCheckoutOK, 1)
	case SoldOut, BuyerLimit:
		r.c.add(rCheckoutSoldOut, 1)
		r.late.soldOut.Add(1)
		for _, p := range s.checkout.Failed {
			if t, ok := s.shown[p]; ok && sent.Sub(t) <= disappointWindow {
				r.late.disappointed.Add(1)
				break
			}
		}
		return
	default:
		r.c.add(rCheckoutOther, 1)
		return
	}
	if !s.confirm {
		r.c.add(rAbandoned, 1)
		return
	}
	x.after(x.uniform(r.o.thinkMin, r.o.thinkMax), func(x *exec) {
		o := x.do("confirm", func(ctx context.Context) (Outcome, error) {
			return r.carts.ConfirmCheckout(ctx, s.checkout.ID, r.key(s, "cf"))
		})
		switch o {
		case OK:
			r.c.add(rConfirmed, 1)
			r.mu.Lock()
			var units int64
			for _, q := range s.qty {
				units += q
			}
			if len(s.checkout.Holds) == 1 {
				r.acked[s.checkout.Holds[0].ID] = units
			} else {
				for j, h := range s.checkout.Holds { // emulated: one hold per line
					r.acked[h.ID] = s.qty[j]
				}
			}
			r.mu.Unlock()
			for _, h := range s.checkout.Holds {
				r.pending.confirmed(h.ID)
			}
			return
		case Expired:
			r.c.add(rConfirmExpired, 1)
		}
	})
}

func (r *retailRun) finish(ctx context.Context, tr *TargetReport) {
	r.mu.Lock()
	in := ledgerInput{pools: r.specs, holds: r.holds, acked: r.acked, lastExpiry: r.pending.latest(), noWait: r.o.quickLedger}
	r.mu.Unlock()
	checkLedger(ctx, r.t, in, tr)
	tr.LateDisappointment = (&Disappointing{Attempts: r.late.attempts.Load(), FailedForStock: r.late.soldOut.Load(), Disappointed: r.late.disappointed.Load()}).finish()
	tr.Counters = r.c.export()
}

// emuCarts emulates the cart API on a target that only has holds: the
// cart lives in the harness, a cart add is the product page's stock check
// (one InStock), a cart read is one InStock per line, a checkout is one
// Reserve per line (all-or-nothing: the lines already held are released
// when one fails) and a checkout confirm is one Confirm per hold.
type emuCarts struct {
	t         Target
	mu        sync.Mutex
	carts     map[string]*CartView
	checkouts map[string][]Hold
	owners    map[string]string
	seq       atomic.Int64
}

func newEmuCarts(t Target) *emuCarts {
	return &emuCarts{t: t, carts: map[string]*CartView{}, checkouts: map[string][]Hold{}, owners: map[string]string{}}
}

var errNoCart = errors.New("emulated cart: no such cart")

func (e *emuCarts) CreateCart(_ context.Context, owner, _ string) (CartView, Outcome, error) {
	id := "ec" + strconv.FormatInt(e.seq.Add(1), 10)
	v := &CartView{ID: id, Version: 1, State: "open"}
	e.mu.Lock()
	e.carts[id] = v
	e.owners[id] = owner
	e.mu.Unlock()
	return *v, OK, nil
}

func (e *emuCarts) get(id string) (*CartView, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.carts[id], e.owners[id]
}

func (e *emuCarts) AddLine(ctx context.Context, cartID string, l CartLine, _ string) (CartView, Outcome, error) {
	c, _ := e.get(cartID)
	if c == nil {
		return CartView{}, NotFound, errNoCart
	}
	in, err := e.t.InStock(ctx, l.Pool)
	if err != nil {
		return CartView{}, Failed, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	found := false
	for i := range c.Lines {
		if c.Lines[i].Pool == l.Pool {
			c.Lines[i].Qty += l.Qty
			found = true
		}
	}
	if !found {
		c.Lines = append(c.Lines, CartLineView{ID: strconv.Itoa(len(c.Lines) + 1), Pool: l.Pool, Qty: l.Qty, InStock: in, UpdatedAt: time.Now()})
	}
	c.Version++
	out := *c
	out.Lines = append([]CartLineView(nil), c.Lines...)
	return out, OK, nil
}

func (e *emuCarts) ReadCart(ctx context.Context, cartID string) (CartView, error) {
	c, _ := e.get(cartID)
	if c == nil {
		return CartView{}, errNoCart
	}
	e.mu.Lock()
	out := *c
	out.Lines = append([]CartLineView(nil), c.Lines...)
	e.mu.Unlock()
	for i := range out.Lines {
		in, err := e.t.InStock(ctx, out.Lines[i].Pool)
		if err != nil {
			return out, err
		}
		out.Lines[i].InStock = in
	}
	return out, nil
}

func (e *emuCarts) Checkout(ctx context.Context, cartID string, _, ttlMs int64, idemKey string) (CheckoutResult, error) {
	c, owner := e.get(cartID)
	if c == nil {
		return CheckoutResult{Outcome: NotFound}, errNoCart
	}
	e.mu.Lock()
	lines := append([]CartLineView(nil), c.Lines...)
	e.mu.Unlock()
	var res CheckoutResult
	for i, l := range lines {
		h, err := e.t.Reserve(ctx, ReserveRequest{Buyer: owner[5:], Pool: l.Pool, Qty: l.Qty, TTLMs: ttlMs, IdemKey: idemKey + "-" + strconv.Itoa(i)})
		if h.ID != "" {
			res.Holds = append(res.Holds, h)
		}
		if err != nil || h.Outcome != OK {
			res.Outcome = h.Outcome
			if err != nil && res.Outcome == OK {
				res.Outcome = Failed
			}
			res.Failed = append(res.Failed, l.Pool)
			for _, held := range res.Holds {
				if held.Outcome == OK {
					_, _ = e.t.Release(ctx, held)
				}
			}
			return res, err
		}
	}
	res.ID = "eco" + strconv.FormatInt(e.seq.Add(1), 10)
	res.Outcome = OK
	e.mu.Lock()
	e.checkouts[res.ID] = res.Holds
	e.mu.Unlock()
	return res, nil
}

func (e *emuCarts) ConfirmCheckout(ctx context.Context, checkoutID, _ string) (Outcome, error) {
	e.mu.Lock()
	holds := e.checkouts[checkoutID]
	e.mu.Unlock()
	if holds == nil {
		return NotFound, errNoCart
	}
	for _, h := range holds {
		if o, err := e.t.Confirm(ctx, h); err != nil || o != OK {
			return o, err
		}
	}
	return OK, nil
}
