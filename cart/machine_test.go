package cart

import (
	"reflect"
	"strings"
	"testing"

	"github.com/holdfast/holdfast/allocator"
)

func TestStaleLineVersion(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.create("user:1")
	h.add(c, item("A", ""), 1)
	cart := h.add(c, item("B", ""), 1)
	phone := cart // both devices read the cart now
	a, b := phone.Lines[0], phone.Lines[1]

	// Desktop raises A to 2.
	desk := h.ok(Command{Kind: KindSetQty, Cart: c, LineID: a.ID, Qty: 2, LineVersion: a.LineVersion}).Cart
	// Phone deletes A with the version it saw.
	dump := h.st.dump()
	r := h.fail(Command{Kind: KindDeleteLine, Cart: c, LineID: a.ID, LineVersion: a.LineVersion}, allocator.VersionConflict)
	if r.ConflictLine == nil || r.ConflictLine.Qty != 2 || r.ConflictLine.LineVersion != desk.Lines[0].LineVersion {
		t.Fatalf("conflict details %+v", r.ConflictLine)
	}
	h.fail(Command{Kind: KindSetQty, Cart: c, LineID: a.ID, Qty: 7, LineVersion: a.LineVersion}, allocator.VersionConflict)
	if h.st.dump() != dump {
		t.Fatal("a conflict changed the store")
	}
	// Desktop's edit survives; B is untouched by it.
	got := h.cart(c)
	if got.Lines[0].Qty != 2 || !reflect.DeepEqual(got.Lines[1], b) {
		t.Fatalf("cart %+v", got.Lines)
	}
	// Phone's edit of the unrelated line B still applies with B's version.
	after := h.ok(Command{Kind: KindSetQty, Cart: c, LineID: b.ID, Qty: 4, LineVersion: b.LineVersion}).Cart
	if summary(after) != "A:x2 B:x4" || after.Version != desk.Version+1 {
		t.Fatalf("cart %q v%d", summary(after), after.Version)
	}
	// Now the phone deletes A with the current version.
	after = h.ok(Command{Kind: KindDeleteLine, Cart: c, LineID: a.ID, LineVersion: after.Lines[0].LineVersion}).Cart
	if summary(after) != "B:x4" {
		t.Fatalf("cart %q", summary(after))
	}
	h.fail(Command{Kind: KindDeleteLine, Cart: c, LineID: a.ID, LineVersion: 1}, allocator.NotFound)
	// Re-adding A makes a new line with a new id.
	after = h.add(c, item("A", ""), 1)
	if after.Lines[1].ID == a.ID {
		t.Fatal("line id reused")
	}
}

func TestVersionsMove(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.ok(Command{Kind: KindCreate, Owner: "anon:x"})
	if !c.Created || c.Cart.Version != 1 || c.Cart.State != StateOpen || c.Cart.ID != "c_1" {
		t.Fatalf("created %+v", c.Cart)
	}
	v := int64(1)
	for i, cmd := range []Command{
		addCmd("c_1", item("A", ""), 1),
		addCmd("c_1", item("A", ""), 1),
		{Kind: KindReview, Cart: "c_1"},
	} {
		h.at(t0 + int64(i+1))
		got := h.ok(cmd).Cart
		v++
		if got.Version != v || got.UpdatedAtMs != h.now {
			t.Fatalf("after %v: version %d updated %d", cmd.Kind, got.Version, got.UpdatedAtMs)
		}
	}
	l := h.cart("c_1").Lines[0]
	if l.Qty != 2 || l.LineVersion != 3 || l.ID != "l_1" {
		t.Fatalf("line %+v", l)
	}
}

func TestIdempotentAdd(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.create("user:1")
	add := addCmd(c, item("A", ""), 2)
	add.IdemKey, add.ReqHash = "k-1", [HashLen]byte{1}
	first := h.ok(add)
	dump := h.st.dump()
	for range 3 {
		h.at(h.now + 1000)
		again := h.ok(add)
		if !again.Replayed || !reflect.DeepEqual(again.Cart, first.Cart) {
			t.Fatalf("replay %+v", again)
		}
	}
	if h.st.dump() != dump {
		t.Fatal("replays changed the store")
	}
	if got := h.cart(c); summary(got) != "A:x2" {
		t.Fatalf("cart %q", summary(got))
	}
	// Same key, different request.
	other := add
	other.ReqHash = [HashLen]byte{2}
	h.fail(other, allocator.IdempotencyMismatch)
	other = add
	other.Kind, other.Line = KindReview, LineInput{}
	h.fail(other, allocator.IdempotencyMismatch)
	c2 := h.create("user:2")
	other = add
	other.Cart = c2
	h.fail(other, allocator.IdempotencyMismatch)

	// Refusals are remembered too: the retry gets the first answer.
	l := h.cart(c).Lines[0]
	stale := Command{Kind: KindSetQty, Cart: c, LineID: l.ID, Qty: 3, LineVersion: l.LineVersion + 5, IdemKey: "k-2"}
	r1 := h.fail(stale, allocator.VersionConflict)
	r2 := h.fail(stale, allocator.VersionConflict)
	if !r2.Replayed || !reflect.DeepEqual(r2.ConflictLine, r1.ConflictLine) {
		t.Fatalf("replayed refusal %+v", r2)
	}

	// After the TTL the key is forgotten (and swept by Tick).
	h.at(t0 + 25*hour)
	h.m.Tick(h.st, h.now)
	if n := h.st.count(subIdem) + h.st.count(subIdemExp); n != 0 {
		t.Fatalf("%d idempotency entries left", n)
	}
	if r := h.ok(add); r.Replayed || summary(r.Cart) != "A:x4" {
		t.Fatalf("after ttl: %+v", r)
	}
	// A key reused before the sweep replaces the old record and its index entry.
	h.at(t0 + 50*hour)
	h.ok(add)
	if n := h.st.count(subIdemExp); n != 1 {
		t.Fatalf("%d expiry entries", n)
	}
	h.fail(Command{Kind: KindCreate, Owner: "user:1", IdemKey: "bad key"}, allocator.InvalidArgument)
}

func TestIdempotentCreateAndCheckout(t *testing.T) {
	h := newHarness(t, Config{})
	h.pools.put(pool("A", ""), 5, 0)
	create := Command{Kind: KindCreate, Owner: "user:1", IdemKey: "create-1"}
	c := h.ok(create).Cart.ID
	if again := h.ok(create); !again.Replayed || again.Cart.ID != c || !again.Created {
		t.Fatalf("replayed create %+v", again)
	}
	h.add(c, item("A", ""), 2)
	co := Command{Kind: KindCheckout, Cart: c, ExpectedVersion: 2, IdemKey: "co-1"}
	first := h.ok(co)
	again := h.ok(co)
	if !again.Replayed || again.Checkout.ID != first.Checkout.ID || len(h.pools.res) != 1 {
		t.Fatalf("replayed checkout made %d reservations", len(h.pools.res))
	}
	if meta := loadMeta(h.st); meta.carts != 1 || meta.checkouts != 1 {
		t.Fatalf("meta %+v", meta)
	}
}

func TestIdleExpiry(t *testing.T) {
	h := newHarness(t, Config{IdleTTLMs: 10 * day, SweepPerTick: 2})
	var ids []string
	for i := range 5 {
		h.at(t0 + int64(i)*hour)
		ids = append(ids, h.create("anon:"+itoa(i)))
	}
	// Touch the first cart later: it is now the last to expire.
	h.at(t0 + 5*hour)
	h.add(ids[0], item("A", ""), 1)
	order := []string{ids[1], ids[2], ids[3], ids[4], ids[0]}

	if due, ok := NextDueMs(h.st); !ok || due != t0+hour+10*day {
		t.Fatalf("next due %d %v", due-t0, ok)
	}
	h.at(t0 + 9*day)
	h.m.Tick(h.st, h.now)
	if n := h.st.count(subCart); n != 5 {
		t.Fatalf("%d carts before due", n)
	}
	h.at(t0 + 11*day)
	for round, want := range [][]string{order[:2], order[2:4], order[4:]} {
		h.m.Tick(h.st, h.now)
		for _, id := range order {
			_, e := Get(h.st, id)
			gone := e != nil && e.Code == allocator.NotFound
			wantGone := false
			for _, o := range order[:2*round+len(want)] {
				wantGone = wantGone || o == id
			}
			if gone != wantGone {
				t.Fatalf("round %d: %s gone=%v", round, id, gone)
			}
		}
	}
	if n := h.st.count(subIdle); n != 0 {
		t.Fatalf("%d idle entries left", n)
	}
	if _, ok := NextDueMs(h.st); ok {
		t.Fatal("nothing should be due")
	}
	h.fail(addCmd(ids[0], item("A", ""), 1), allocator.NotFound)
}

func TestPriceAge(t *testing.T) {
	h := newHarness(t, Config{})
	h.pools.put(pool("A", ""), 50, 0).put(pool("B", ""), 50, 0)
	c := h.create("user:1")
	h.add(c, item("A", ""), 1)
	h.at(t0 + 5*day)
	h.add(c, item("B", ""), 1)

	// Checkout start 8 days later is a touch: it flags and refuses.
	h.at(t0 + 8*day)
	cart := h.cart(c)
	r := h.fail(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version}, allocator.InvalidState)
	got := h.cart(c)
	if got.State != StateNeedsReview || got.ReviewReason != "prices older than 7d" || got.Version != cart.Version+1 {
		t.Fatalf("after stale checkout: %v %q v%d", got.State, got.ReviewReason, got.Version)
	}
	if !reflect.DeepEqual(r.Cart, got) || len(h.pools.res) != 0 {
		t.Fatal("refusal result or reservations wrong")
	}
	// Review acknowledges the prices.
	got = h.ok(Command{Kind: KindReview, Cart: c}).Cart
	if got.State != StateOpen || got.Lines[0].PricedAtMs != h.now {
		t.Fatalf("after review %v %+v", got.State, got.Lines[0])
	}
	h.ok(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: got.Version})

	// An edit touching a stale cart flags it; the next line edit clears.
	h2 := newHarness(t, Config{})
	c = h2.create("user:1")
	h2.add(c, item("A", ""), 1)
	h2.at(t0 + 8*day)
	got = h2.add(c, item("B", ""), 1)
	if got.State != StateNeedsReview {
		t.Fatalf("edit of stale cart: %v", got.State)
	}
	a := got.Lines[0]
	got = h2.ok(Command{Kind: KindSetQty, Cart: c, LineID: a.ID, Qty: 2, LineVersion: a.LineVersion}).Cart
	if got.State != StateOpen || got.ReviewReason != "" {
		t.Fatalf("after edit: %v %q", got.State, got.ReviewReason)
	}
	// Fresh prices: a touch within the age does nothing.
	h2.at(t0 + 9*day)
	if got = h2.add(c, item("C", ""), 1); got.State != StateOpen {
		t.Fatalf("fresh cart: %v", got.State)
	}
	// Re-adding a line refreshes its price clock.
	h2.at(t0 + 15*day + 1)
	got = h2.add(c, item("A", ""), 1)
	if got.State != StateNeedsReview { // B and C are still old
		t.Fatalf("%v", got.State)
	}
}

func TestCheckedOutCartEdits(t *testing.T) {
	h := newHarness(t, Config{})
	h.pools.put(pool("A", ""), 10, 0).put(pool("B", ""), 10, 0)
	c := h.create("user:1")
	h.add(c, item("A", ""), 1)
	cart := h.add(c, item("B", ""), 2)
	r := h.ok(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version, TTLMs: 60_000})
	co := r.Checkout
	if !r.Created || co.CartVersion != cart.Version || co.ID != "co_1" || co.State != CheckoutHeld ||
		r.Cart.State != StateCheckedOut || r.Cart.CheckoutID != co.ID || r.Cart.Version != cart.Version+1 {
		t.Fatalf("checkout %+v cart %+v", co, r.Cart)
	}
	if co.ExpiresAtMs != h.now+60_000 || co.ValidatedAtMs != h.now || co.Owner != "user:1" || co.ReservationID != 1 {
		t.Fatalf("checkout times %+v", co)
	}
	for i, l := range co.Lines {
		cl := cart.Lines[i]
		if l.LineID != cl.ID || l.Pool != cl.Pool || l.Qty != cl.Qty || l.Price != cl.Price || l.State != allocator.LineHeld {
			t.Fatalf("snapshot line %+v, cart line %+v", l, cl)
		}
	}
	snap := h.st.m[string(numKey(subCheckout, 1))]

	// While held, a second checkout start is refused.
	h.fail(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: r.Cart.Version}, allocator.InvalidState)
	// The old version is a conflict, with the current cart in details.
	vc := h.fail(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version}, allocator.VersionConflict)
	if vc.ConflictCart == nil || vc.ConflictCart.Version != r.Cart.Version {
		t.Fatalf("conflict details %+v", vc.ConflictCart)
	}
	// An edit reopens the cart; the snapshot does not change.
	b := r.Cart.Lines[1]
	edited := h.ok(Command{Kind: KindSetQty, Cart: c, LineID: b.ID, Qty: 5, LineVersion: b.LineVersion}).Cart
	if edited.State != StateOpen || edited.Version != r.Cart.Version+1 {
		t.Fatalf("edited %v v%d", edited.State, edited.Version)
	}
	h.add(c, item("C", ""), 1)
	if got := h.st.m[string(numKey(subCheckout, 1))]; string(got) != string(snap) {
		t.Fatal("the snapshot changed")
	}
	got, e := GetCheckout(h.st, co.ID)
	if e != nil || !reflect.DeepEqual(got, co) {
		t.Fatalf("GetCheckout %+v %v", got, e)
	}
	// Confirm still places the snapshot's order; twice is a success.
	for range 2 {
		if r := h.ok(Command{Kind: KindConfirmCheckout, Checkout: co.ID}); r.Checkout.State != CheckoutConfirmed || r.Checkout.ConfirmedAtMs != h.now {
			t.Fatalf("confirm %+v", r.Checkout)
		}
	}
	if h.pools.res[0].state != allocator.StateConfirmed {
		t.Fatal("reservation not confirmed")
	}
	h.fail(Command{Kind: KindConfirmCheckout, Checkout: "co_9"}, allocator.NotFound)
	h.fail(Command{Kind: KindConfirmCheckout, Checkout: "co_09"}, allocator.InvalidArgument)
}

func TestCheckoutExpiry(t *testing.T) {
	h := newHarness(t, Config{})
	h.pools.put(pool("A", ""), 10, 0)
	c := h.create("user:1")
	cart := h.add(c, item("A", ""), 1)
	co := h.ok(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version, TTLMs: 1000}).Checkout
	h.at(h.now + 1000)
	r := h.fail(Command{Kind: KindConfirmCheckout, Checkout: co.ID}, allocator.Expired)
	if r.Checkout == nil || r.Checkout.State != CheckoutExpired {
		t.Fatalf("result %+v", r.Checkout)
	}
	got, _ := GetCheckout(h.st, co.ID)
	if got.State != CheckoutExpired || got.CartVersion != co.CartVersion || !reflect.DeepEqual(got.Lines, co.Lines) {
		t.Fatalf("checkout after expiry %+v", got)
	}
	h.fail(Command{Kind: KindConfirmCheckout, Checkout: co.ID}, allocator.Expired)

	// After the hold lapsed, the checked_out cart may start again.
	cart = h.cart(c)
	co2 := h.ok(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version}).Checkout
	if co2.ID != "co_2" {
		t.Fatalf("second checkout %s", co2.ID)
	}
	// A released reservation: the checkout failed.
	h.pools.release(co2.ReservationID)
	if r := h.fail(Command{Kind: KindConfirmCheckout, Checkout: co2.ID}, allocator.InvalidState); r.Checkout.State != CheckoutFailed {
		t.Fatalf("%v", r.Checkout.State)
	}
	// Confirmed: the cart cannot be checked out again until edited.
	cart = h.cart(c)
	co3 := h.ok(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version}).Checkout
	h.ok(Command{Kind: KindConfirmCheckout, Checkout: co3.ID})
	cart = h.cart(c)
	h.fail(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version}, allocator.InvalidState)

	// Snapshots are kept CheckoutRetentionMs after their expiry, then swept.
	h.at(co3.ExpiresAtMs + DefaultCheckoutRetentionMs)
	h.m.Tick(h.st, h.now)
	if n := h.st.count(subCheckout) + h.st.count(subRetain); n != 0 {
		t.Fatalf("%d checkout entries left", n)
	}
}

// TestCheckoutAfterRelease: a checkout whose hold was released early (the
// client gave the units back) does not block the next checkout of the cart
// until its expires_at; one still held does.
func TestCheckoutAfterRelease(t *testing.T) {
	h := newHarness(t, Config{})
	h.pools.put(pool("A", ""), 10, 0)
	c := h.create("user:1")
	cart := h.add(c, item("A", ""), 1)
	co := h.ok(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version, TTLMs: 60_000}).Checkout
	cart = h.cart(c)
	h.fail(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version}, allocator.InvalidState) // still held
	h.pools.release(co.ReservationID)
	co2 := h.ok(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version}).Checkout
	if co2.ID == co.ID || co2.ReservationID == co.ReservationID {
		t.Fatalf("second checkout %+v", co2)
	}
	// Its reservation confirmed directly, not through the checkout: the
	// cart was ordered, and a new checkout is refused.
	h.pools.res[co2.ReservationID-1].state = allocator.StateConfirmed
	cart = h.cart(c)
	if r := h.fail(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version}, allocator.InvalidState); !strings.Contains(r.Err.Message, "ordered") {
		t.Fatalf("after a direct confirm: %v", r.Err)
	}
}

func TestPartialCheckout(t *testing.T) {
	h := newHarness(t, Config{})
	h.pools.put(pool("A", ""), 10, 0).put(pool("B", ""), 1, 0).put(pool("C", ""), 10, 1)
	c := h.create("user:1")
	h.add(c, item("A", ""), 2)
	h.add(c, item("B", ""), 3)
	h.add(c, item("C", ""), 2)
	cart := h.add(c, item("D", ""), 1) // no such pool
	r := h.ok(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version, Partial: true})
	var states []string
	for _, l := range r.Checkout.Lines {
		states = append(states, l.State.String())
	}
	if got := strings.Join(states, " "); got != "held sold_out buyer_limit sold_out" {
		t.Fatalf("states %q", got)
	}
	var corr []string
	for _, x := range r.Checkout.Corrections {
		corr = append(corr, x.LineID+":"+x.State.String())
	}
	if got := strings.Join(corr, " "); got != "l_2:sold_out l_3:buyer_limit l_4:sold_out" {
		t.Fatalf("corrections %q", got)
	}
	if r.Checkout.Corrections[2].Message != noPoolMessage {
		t.Fatalf("%+v", r.Checkout.Corrections[2])
	}
	// The cart is not silently changed.
	if got := h.cart(c); !reflect.DeepEqual(got.Lines, cart.Lines) {
		t.Fatal("lines changed")
	}
	if h.pools.pools[pool("A", "")].avail != 8 {
		t.Fatal("A not held")
	}
}

func TestAllOrNothingRefusal(t *testing.T) {
	h := newHarness(t, Config{})
	h.pools.put(pool("A", ""), 10, 0).put(pool("B", ""), 1, 0)
	c := h.create("user:1")
	h.add(c, item("A", ""), 2)
	cart := h.add(c, item("B", ""), 3)
	dump := h.st.dump()
	r := h.fail(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version}, allocator.SoldOut)
	if h.st.dump() != dump {
		t.Fatal("a refused checkout changed the store")
	}
	if r.Checkout != nil || len(r.Corrections) != 1 || r.Corrections[0].LineID != "l_2" || r.Corrections[0].State != allocator.LineSoldOut {
		t.Fatalf("refusal %+v", r)
	}
	if h.pools.pools[pool("A", "")].avail != 10 {
		t.Fatal("units held")
	}
	// Buyer limit refusal carries the allocator's code.
	h.pools.put(pool("B", ""), 10, 2)
	h.fail(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version}, allocator.BuyerLimit)
	h.pools.pools[pool("B", "")].notOpen = true
	h.fail(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version}, allocator.NotOpen)
	// A line without a pool refuses all-or-nothing without asking the allocator.
	h.pools.put(pool("B", ""), 10, 0)
	cart = h.add(c, item("Z", ""), 1)
	r = h.fail(Command{Kind: KindCheckout, Cart: c, ExpectedVersion: cart.Version}, allocator.SoldOut)
	if len(r.Corrections) != 1 || r.Corrections[0].Pool != pool("Z", "") || len(h.pools.res) != 0 {
		t.Fatalf("refusal %+v", r)
	}
	// Empty cart.
	e := h.create("user:2")
	h.fail(Command{Kind: KindCheckout, Cart: e, ExpectedVersion: 1}, allocator.InvalidState)
}

// TestCheckoutWithAllocator runs checkout and confirm against the real
// allocator, as the engine wires it.
func TestCheckoutWithAllocator(t *testing.T) {
	am := allocator.New(allocator.Config{MaxClockStepMs: 1 << 40})
	ap := &allocPools{m: am, now: t0}
	put := func(id string, onHand, limit int64) {
		cfg := allocator.DefaultPoolConfig(onHand)
		cfg.PerBuyerLimit = limit
		if r := ap.one(allocator.Command{Kind: allocator.KindPutPool, Pool: id, Config: cfg}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	put(pool("A", ""), 5, 0)
	put(pool("B", ""), 1, 0)
	put(pool("C", ""), 5, 2)
	m, st := New(Config{}), newStore()
	apply := func(now int64, c Command) Result {
		ap.now = now
		return m.Apply(st, ap, now, &c)
	}
	id := apply(t0, Command{Kind: KindCreate, Owner: "user:9"}).Cart.ID
	apply(t0, addCmd(id, item("A", ""), 2))
	apply(t0, addCmd(id, item("B", ""), 2))
	cart := apply(t0, addCmd(id, item("C", ""), 1)).Cart
	r := apply(t0, Command{Kind: KindCheckout, Cart: id, ExpectedVersion: cart.Version})
	if r.Err == nil || r.Err.Code != allocator.SoldOut || len(r.Corrections) != 1 || r.Corrections[0].LineID != "l_2" {
		t.Fatalf("all-or-nothing %+v", r)
	}
	r = apply(t0, Command{Kind: KindCheckout, Cart: id, ExpectedVersion: cart.Version, Partial: true, TTLMs: 5000})
	if r.Err != nil || len(r.Checkout.Corrections) != 1 || r.Checkout.Lines[0].State != allocator.LineHeld {
		t.Fatalf("partial %+v %v", r.Checkout, r.Err)
	}
	if r.Checkout.ReservationID == 0 || r.Checkout.ExpiresAtMs != t0+5000 {
		t.Fatalf("checkout %+v", r.Checkout)
	}
	if r := apply(t0+6000, Command{Kind: KindConfirmCheckout, Checkout: r.Checkout.ID}); r.Err == nil || r.Err.Code != allocator.Expired || r.Checkout.State != CheckoutExpired {
		t.Fatalf("late confirm %+v", r)
	}
	cart = Must(Get(st, id))
	r = apply(t0+7000, Command{Kind: KindCheckout, Cart: id, ExpectedVersion: cart.Version, Partial: true})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(t0+8000, Command{Kind: KindConfirmCheckout, Checkout: r.Checkout.ID}); r.Err != nil || r.Checkout.State != CheckoutConfirmed {
		t.Fatalf("confirm %+v", r)
	}
	if v, _ := am.Pool(pool("A", "")); v.Sold != 2 {
		t.Fatalf("pool A %+v", v)
	}
	// Merge caps at the allocator's per-buyer limit.
	src := apply(t0+9000, Command{Kind: KindCreate, Owner: "anon:9"}).Cart.ID
	apply(t0+9000, addCmd(src, item("C", ""), 5))
	r = apply(t0+9000, Command{Kind: KindMerge, Cart: id, Source: src, Policy: PolicySum})
	if got := reportSummary(r.Report); got != "C:capped:x2" {
		t.Fatalf("report %q", got)
	}
}

func Must[T any](v T, e *allocator.Error) T {
	if e != nil {
		panic(e)
	}
	return v
}

func TestValidation(t *testing.T) {
	long := strings.Repeat("x", 129)
	okLine := item("A", "")
	with := func(f func(*LineInput)) LineInput {
		l := okLine
		l.Attrs = nil
		f(&l)
		return l
	}
	attrs17 := make([]Attr, 17)
	for i := range attrs17 {
		attrs17[i] = Attr{Key: "k" + itoa(i), Value: "v"}
	}
	bad := []Command{
		{Kind: KindCreate, Owner: "bob"},
		{Kind: KindCreate, Owner: "user:"},
		{Kind: KindCreate, Owner: "anon:a b"},
		{Kind: KindCreate, Owner: "user:" + long},
		{Kind: 3},
		{Kind: 200, Cart: "c_1"},
		addCmd("c_1", okLine, 0),
		addCmd("c_1", okLine, allocator.MaxQty+1),
		addCmd("x_1", okLine, 1),
		addCmd("c_01", okLine, 1),
		addCmd("c_1", with(func(l *LineInput) { l.SKU = "" }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.SKU = "a b" }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.Variant = long }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.SKU = strings.Repeat("s", 126) }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.Pool = "p q" }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.Attrs = attrs17 }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.Attrs = []Attr{{"a", "1"}, {"a", "2"}} }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.Attrs = []Attr{{"", "1"}} }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.Attrs = []Attr{{"k", long}} }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.Attrs = []Attr{{"k", "\xff"}} }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.Price.Currency = "eur" }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.Price.Currency = "EURO" }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.Price.AmountMinor = -1 }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.Price.AmountMinor = MaxAmountMinor + 1 }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.Price = Price{AmountMinor: 5} }), 1),
		addCmd("c_1", with(func(l *LineInput) { l.Price.OfferID = "o p" }), 1),
		{Kind: KindSetQty, Cart: "c_1", LineID: "l_1", Qty: 0, LineVersion: 1},
		{Kind: KindSetQty, Cart: "c_1", LineID: "l_1", Qty: 1},
		{Kind: KindSetQty, Cart: "c_1", LineID: "1", Qty: 1, LineVersion: 1},
		{Kind: KindDeleteLine, Cart: "c_1", LineID: "l_0", LineVersion: 1},
		{Kind: KindMerge, Cart: "c_1", Source: "c_1"},
		{Kind: KindMerge, Cart: "c_1", Source: ""},
		{Kind: KindMerge, Cart: "c_1", Source: "c_2", Policy: numPolicies},
		{Kind: KindCheckout, Cart: "c_1"},
		{Kind: KindCheckout, Cart: "c_1", ExpectedVersion: 1, TTLMs: -1},
		{Kind: KindCheckout, Cart: "c_1", ExpectedVersion: 1, TTLMs: allocator.MaxTTLMs + 1},
		{Kind: KindConfirmCheckout, Checkout: "c_1"},
		{Kind: KindReview, Cart: ""},
	}
	h := newHarness(t, Config{})
	h.create("user:1")
	for i, c := range bad {
		r := h.apply(c)
		if r.Err == nil || r.Err.Code != allocator.InvalidArgument {
			t.Errorf("%d (%v): got %v, want invalid_argument", i, c.Kind, r.Err)
		}
	}
	good := []LineInput{
		with(func(l *LineInput) { l.Variant, l.Seller, l.Fulfillment = "", "", "" }),
		with(func(l *LineInput) { l.Price = Price{} }),
		with(func(l *LineInput) { l.Price = Price{Currency: "JPY", AmountMinor: MaxAmountMinor} }),
		with(func(l *LineInput) { l.Attrs = attrs17[:16] }),
		with(func(l *LineInput) { l.Attrs = []Attr{{"msg", "Happy birthday, Zoë!"}, {"empty", ""}} }),
		with(func(l *LineInput) { l.SKU, l.Pool = strings.Repeat("s", 126), "p" }),
	}
	for i, l := range good {
		if r := h.apply(addCmd("c_1", l, 1)); r.Err != nil {
			t.Errorf("good line %d: %v", i, r.Err)
		}
	}
	for _, p := range []string{"", "review", "sum", "max", "latest", "target_wins", "source_wins"} {
		if pol, ok := ParsePolicy(p); !ok || (p != "" && pol.String() != p) {
			t.Errorf("policy %q", p)
		}
	}
	if _, ok := ParsePolicy("union"); ok {
		t.Error("unknown policy parsed")
	}
	if _, e := Get(h.st, "c_2"); e == nil || e.Code != allocator.NotFound {
		t.Errorf("missing cart: %v", e)
	}
	if _, e := Get(h.st, "cart"); e == nil || e.Code != allocator.InvalidArgument {
		t.Errorf("bad id: %v", e)
	}
}
