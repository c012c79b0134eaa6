package cart

import (
	"github.com/holdfast/holdfast/allocator"
)

func stateMessage(s allocator.LineState) string {
	switch s {
	case allocator.LineSoldOut:
		return "not enough units available"
	case allocator.LineBuyerLimit:
		return "over the pool's per-buyer limit"
	case allocator.LineNotOpen:
		return "the pool's draw is not open"
	case allocator.LineWaiting:
		return "entered in the pool's draw or waitlist: nothing held yet"
	}
	return "not held"
}

const noPoolMessage = "no such pool"

// checkout starts a checkout: it validates the cart at ExpectedVersion,
// reserves every line in one reservation for the cart's owner and stores
// an immutable snapshot.
func (m *Machine) checkout(st Store, pools Pools, now int64, cmd *Command) Result {
	c, n, e := loadLive(st, cmd.Cart)
	if e != nil {
		return Result{Err: e}
	}
	if c.Version != cmd.ExpectedVersion {
		return Result{
			Err:          errorf(allocator.VersionConflict, "cart %s is at version %d, not %d", c.ID, c.Version, cmd.ExpectedVersion),
			ConflictCart: c,
		}
	}
	if c.State != StateNeedsReview && m.flagStale(c, now) {
		// Checkout start is a touch: stale prices flag the cart (kept
		// although the command is refused) instead of being resurrected.
		m.commit(st, n, c, now)
	}
	if c.State == StateNeedsReview {
		return Result{Err: errorf(allocator.InvalidState, "cart %s needs review: %s", c.ID, c.ReviewReason), Cart: c}
	}
	if c.State == StateCheckedOut && c.CheckoutID != "" {
		if prev, _, e := loadCheckout(st, c.CheckoutID); e == nil {
			switch {
			case prev.State == CheckoutConfirmed:
				return Result{Err: errorf(allocator.InvalidState, "cart %s was ordered by checkout %s; edit it to reopen it", c.ID, prev.ID), Cart: c}
			case prev.State == CheckoutHeld:
				// The checkout's reservation may have moved on its own
				// (POST /v1/reservations/{id}/release or /confirm): a hold
				// released early no longer blocks a new checkout; one
				// confirmed directly is an order.
				rs, known := allocator.StateActive, true
				if pools != nil {
					rs, known = pools.ReservationState(prev.ReservationID)
				}
				switch {
				case known && rs == allocator.StateConfirmed:
					return Result{Err: errorf(allocator.InvalidState, "cart %s was ordered: the reservation of checkout %s is confirmed; edit it to reopen it", c.ID, prev.ID), Cart: c}
				case known && rs == allocator.StateActive && now < prev.ExpiresAtMs:
					return Result{Err: errorf(allocator.InvalidState, "checkout %s of cart %s is still held", prev.ID, c.ID), Cart: c}
				}
			}
		}
	}
	if len(c.Lines) == 0 {
		return Result{Err: errorf(allocator.InvalidState, "cart %s is empty", c.ID), Cart: c}
	}
	if len(c.Lines) > allocator.MaxLines {
		return Result{Err: errorf(allocator.InvalidState, "a checkout holds at most %d lines; cart %s has %d", allocator.MaxLines, c.ID, len(c.Lines)), Cart: c}
	}

	// Lines whose pool does not exist cannot be held: they count as
	// sold_out. The rest go to the allocator in cart order.
	reqs := make([]allocator.LineRequest, 0, len(c.Lines))
	reqOf := make([]int, len(c.Lines)) // index in reqs, -1: no pool
	var missing []Correction
	for i := range c.Lines {
		l := &c.Lines[i]
		if pools == nil {
			reqOf[i] = -1
		} else if _, ok := pools.PerBuyerLimit(l.Pool); !ok {
			reqOf[i] = -1
		} else {
			reqOf[i] = len(reqs)
			reqs = append(reqs, allocator.LineRequest{Pool: l.Pool, Qty: l.Qty})
			continue
		}
		missing = append(missing, Correction{LineID: l.ID, Pool: l.Pool, Qty: l.Qty, State: allocator.LineSoldOut, Message: noPoolMessage})
	}
	if len(reqs) == 0 || (len(missing) > 0 && !cmd.Partial) {
		return Result{Err: errorf(allocator.SoldOut, "some lines draw from pools that do not exist"), Corrections: missing}
	}
	res := pools.Reserve(c.Owner, reqs, cmd.TTLMs, cmd.Partial)
	if res.Err != nil {
		corr := missing
		for i := range c.Lines {
			if r := reqOf[i]; r >= 0 && r < len(res.Err.Lines) {
				s := res.Err.Lines[r].State
				if s != allocator.LineHeld && s != allocator.LineAvailable {
					l := &c.Lines[i]
					corr = append(corr, Correction{LineID: l.ID, Pool: l.Pool, Qty: l.Qty, State: s, Message: stateMessage(s)})
				}
			}
		}
		return Result{Err: res.Err, Corrections: sortCorrections(c, corr)}
	}
	rv := res.Reservation
	if rv == nil || len(rv.Lines) != len(reqs) {
		return Result{Err: errorf(allocator.InvalidState, "the allocator returned no reservation")}
	}

	mt := loadMeta(st)
	mt.checkouts++
	saveMeta(st, mt)
	co := &Checkout{
		ID:            formatID(checkoutIDPrefix, mt.checkouts),
		CartID:        c.ID,
		Owner:         c.Owner,
		CartVersion:   c.Version,
		ValidatedAtMs: now,
		ExpiresAtMs:   rv.ExpiresAtMs,
		ReservationID: rv.ID,
		State:         CheckoutHeld,
		Lines:         make([]CheckoutLine, len(c.Lines)),
	}
	for i := range c.Lines {
		l := &c.Lines[i]
		s := allocator.LineSoldOut
		msg := noPoolMessage
		if r := reqOf[i]; r >= 0 {
			s = rv.Lines[r].State
			msg = stateMessage(s)
		}
		co.Lines[i] = CheckoutLine{LineID: l.ID, Pool: l.Pool, Qty: l.Qty, Price: l.Price, State: s}
		if s != allocator.LineHeld {
			co.Corrections = append(co.Corrections, Correction{LineID: l.ID, Pool: l.Pool, Qty: l.Qty, State: s, Message: msg})
		}
	}
	co.purgeAtMs = deadline(max(co.ExpiresAtMs, now), m.cfg.CheckoutRetentionMs)
	saveCheckout(st, mt.checkouts, co)
	st.Set(dueKey(subRetain, co.purgeAtMs, be64(mt.checkouts)), []byte{})

	c.State = StateCheckedOut
	c.CheckoutID = co.ID
	m.commit(st, n, c, now)
	return Result{Cart: c, Checkout: co, Created: true}
}

// sortCorrections puts corrections in cart line order.
func sortCorrections(c *Cart, cs []Correction) []Correction {
	if len(cs) < 2 {
		return cs
	}
	out := make([]Correction, 0, len(cs))
	for i := range c.Lines {
		for _, x := range cs {
			if x.LineID == c.Lines[i].ID {
				out = append(out, x)
			}
		}
	}
	return out
}

// confirm places the order: it confirms the checkout's reservation.
// Confirming a confirmed checkout is a success; after the hold expired it
// is expired, and the checkout records it.
func (m *Machine) confirm(st Store, pools Pools, now int64, id string) Result {
	co, n, e := loadCheckout(st, id)
	if e != nil {
		return Result{Err: e}
	}
	switch co.State {
	case CheckoutConfirmed:
		return Result{Checkout: co}
	case CheckoutExpired:
		return Result{Err: errorf(allocator.Expired, "the hold of checkout %s expired before confirm", co.ID), Checkout: co}
	case CheckoutFailed:
		return Result{Err: errorf(allocator.InvalidState, "the reservation of checkout %s was released", co.ID), Checkout: co}
	}
	if pools == nil {
		return Result{Err: errorf(allocator.InvalidState, "no allocator"), Checkout: co}
	}
	res := pools.Confirm(co.ReservationID)
	if res.Err == nil {
		co.State = CheckoutConfirmed
		co.ConfirmedAtMs = now
		saveCheckout(st, n, co)
		return Result{Checkout: co}
	}
	switch res.Err.Code {
	case allocator.Expired:
		co.State = CheckoutExpired
	case allocator.NotFound:
		// The allocator forgets finished reservations after a while.
		if now < co.ExpiresAtMs {
			co.State = CheckoutFailed
			res.Err = errorf(allocator.InvalidState, "the reservation of checkout %s is gone", co.ID)
		} else {
			co.State = CheckoutExpired
			res.Err = errorf(allocator.Expired, "the hold of checkout %s expired before confirm", co.ID)
		}
	case allocator.InvalidState:
		if rv := res.Reservation; rv != nil && rv.State == allocator.StateReleased {
			co.State = CheckoutFailed
		}
	}
	if co.State != CheckoutHeld {
		saveCheckout(st, n, co)
	}
	return Result{Err: res.Err, Checkout: co}
}
