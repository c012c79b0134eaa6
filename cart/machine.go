package cart

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/holdfast/holdfast/allocator"
)

// Machine is the cart layer's deterministic state machine. It holds only
// its Config: all state lives in the Store, so one Machine serves any
// number of stores and needs no locking.
type Machine struct {
	cfg Config
}

// New returns a Machine with cfg's zero fields set to their defaults.
func New(cfg Config) *Machine { return &Machine{cfg: cfg.withDefaults()} }

// Config returns the configuration in effect, defaults applied.
func (m *Machine) Config() Config { return m.cfg }

func errorf(code allocator.Code, format string, args ...any) *allocator.Error {
	return &allocator.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Apply applies one command at log time nowMs (the leader-stamped,
// monotonic clock of the log entry). pools is used by Merge (per-buyer
// caps), Checkout and ConfirmCheckout only. A refused command changes
// nothing, with two documented exceptions: checkout start on a cart whose
// prices went stale flags it needs_review, and a confirm that finds the
// hold expired (or released) records that on the checkout.
func (m *Machine) Apply(st Store, pools Pools, nowMs int64, c *Command) Result {
	if c.IdemKey != "" {
		if !allocator.ValidID(c.IdemKey) {
			return Result{Err: invalid("bad idempotency key")}
		}
		if rec := m.lookupIdem(st, c.IdemKey, nowMs); rec != nil {
			if rec.kind != c.Kind || rec.cart != idemScope(c) || rec.hash != c.ReqHash {
				return Result{Err: errorf(allocator.IdempotencyMismatch, "idempotency key %q was used with a different request", c.IdemKey)}
			}
			r := rec.result
			r.Replayed = true
			return r
		}
	}
	res := m.dispatch(st, pools, nowMs, c)
	if c.IdemKey != "" {
		m.remember(st, nowMs, c, &res)
	}
	return res
}

func (m *Machine) dispatch(st Store, pools Pools, now int64, c *Command) Result {
	if e := c.Validate(); e != nil {
		return Result{Err: e}
	}
	switch c.Kind {
	case KindCreate:
		return m.create(st, now, c.Owner)
	case KindAddLine:
		return m.addLine(st, now, c)
	case KindSetQty, KindDeleteLine:
		return m.editLine(st, now, c)
	case KindMerge:
		return m.merge(st, pools, now, c)
	case KindReview:
		return m.review(st, now, c.Cart)
	case KindCheckout:
		return m.checkout(st, pools, now, c)
	case KindConfirmCheckout:
		return m.confirm(st, pools, now, c.Checkout)
	}
	return Result{Err: invalid("unknown cart command kind %d", c.Kind)}
}

// ---- loading and saving ----

func corrupt(what, id string, err error) *allocator.Error {
	return errorf(allocator.InvalidState, "%s %s: stored record is corrupt: %v", what, id, err)
}

func loadCart(st Store, id string) (*Cart, uint64, *allocator.Error) {
	n, ok := ParseCartID(id)
	if !ok {
		return nil, 0, invalid("bad cart id %q", id)
	}
	v, ok := st.Get(numKey(subCart, n))
	if !ok {
		return nil, 0, errorf(allocator.NotFound, "no cart %s", id)
	}
	c, err := decodeCart(v)
	if err != nil {
		return nil, 0, corrupt("cart", id, err)
	}
	c.ID = id
	return c, n, nil
}

// loadLive loads a cart that may still change: not retired by a merge.
func loadLive(st Store, id string) (*Cart, uint64, *allocator.Error) {
	c, n, e := loadCart(st, id)
	if e == nil && c.State == StateMerged {
		return nil, 0, errorf(allocator.InvalidState, "cart %s was merged into %s", id, c.MergedInto)
	}
	return c, n, e
}

// commit records a change of cart c at now: the version moves, the cart
// is touched (updated_at, idle deadline) and stored.
func (m *Machine) commit(st Store, n uint64, c *Cart, now int64) {
	c.Version++
	c.UpdatedAtMs = now
	due := deadline(now, m.cfg.IdleTTLMs)
	if due != c.idleDueMs {
		if c.idleDueMs != 0 {
			st.Delete(dueKey(subIdle, c.idleDueMs, be64(n)))
		}
		c.idleDueMs = due
		st.Set(dueKey(subIdle, due, be64(n)), []byte{})
	}
	st.Set(numKey(subCart, n), appendCart(nil, c))
}

func loadCheckout(st Store, id string) (*Checkout, uint64, *allocator.Error) {
	n, ok := ParseCheckoutID(id)
	if !ok {
		return nil, 0, invalid("bad checkout id %q", id)
	}
	v, ok := st.Get(numKey(subCheckout, n))
	if !ok {
		return nil, 0, errorf(allocator.NotFound, "no checkout %s", id)
	}
	co, err := decodeCheckout(v)
	if err != nil {
		return nil, 0, corrupt("checkout", id, err)
	}
	co.ID = id
	return co, n, nil
}

func saveCheckout(st Store, n uint64, co *Checkout) {
	st.Set(numKey(subCheckout, n), appendCheckout(nil, co))
}

// Get returns a cart, for reads against a read view.
func Get(st Store, id string) (*Cart, *allocator.Error) {
	c, _, e := loadCart(st, id)
	return c, e
}

// GetCheckout returns a checkout snapshot, for reads against a read view.
func GetCheckout(st Store, id string) (*Checkout, *allocator.Error) {
	co, _, e := loadCheckout(st, id)
	return co, e
}

// ---- review ----

// formatMs renders a duration in its largest exact unit: "7d", "36h", "1500ms".
func formatMs(ms int64) string {
	for _, u := range [...]struct {
		ms   int64
		name string
	}{{86_400_000, "d"}, {3_600_000, "h"}, {60_000, "m"}, {1000, "s"}} {
		if ms%u.ms == 0 {
			return fmt.Sprintf("%d%s", ms/u.ms, u.name)
		}
	}
	return fmt.Sprintf("%dms", ms)
}

func (m *Machine) setReason(c *Cart) {
	c.ReviewReason = ""
	if c.review&reviewMerge != 0 {
		c.ReviewReason = "merge conflict: the carts disagreed on quantities"
	}
	if c.review&reviewPrices != 0 {
		if c.ReviewReason != "" {
			c.ReviewReason += "; "
		}
		c.ReviewReason += "prices older than " + formatMs(m.cfg.PriceAgeMs)
	}
	if c.review != 0 {
		c.State = StateNeedsReview
	} else if c.State == StateNeedsReview {
		c.State = StateOpen
	}
}

// stale reports whether some line's price was set more than PriceAgeMs ago.
func (m *Machine) stale(c *Cart, now int64) bool {
	for i := range c.Lines {
		if now-c.Lines[i].PricedAtMs > m.cfg.PriceAgeMs {
			return true
		}
	}
	return false
}

// flagStale applies the price-age rule on a touch: stale prices make the
// cart needs_review. It reports whether it raised the flag.
func (m *Machine) flagStale(c *Cart, now int64) bool {
	if c.review&reviewPrices != 0 || !m.stale(c, now) {
		return false
	}
	c.review |= reviewPrices
	m.setReason(c)
	return true
}

// clearReview clears every review reason; clearing a price review
// acknowledges the prices as they stand (their age restarts at now).
func (m *Machine) clearReview(c *Cart, now int64, ackPrices bool) {
	if ackPrices || c.review&reviewPrices != 0 {
		for i := range c.Lines {
			c.Lines[i].PricedAtMs = now
		}
	}
	c.review = 0
	m.setReason(c)
}

// ---- commands ----

func (m *Machine) create(st Store, now int64, owner string) Result {
	mt := loadMeta(st)
	mt.carts++
	saveMeta(st, mt)
	c := &Cart{ID: FormatCartID(mt.carts), Owner: owner, State: StateOpen, CreatedAtMs: now}
	m.commit(st, mt.carts, c, now) // version 1
	return Result{Cart: c, Created: true}
}

func sameIdentity(l *Line, sku, variant, seller, fulfillment string, attrs []Attr) bool {
	return l.SKU == sku && l.Variant == variant && l.Seller == seller && l.Fulfillment == fulfillment &&
		slices.Equal(l.Attrs, attrs)
}

func findIdentity(lines []Line, sku, variant, seller, fulfillment string, attrs []Attr) int {
	for i := range lines {
		if sameIdentity(&lines[i], sku, variant, seller, fulfillment, attrs) {
			return i
		}
	}
	return -1
}

func findLine(lines []Line, id string) int {
	for i := range lines {
		if lines[i].ID == id {
			return i
		}
	}
	return -1
}

// finishEdit applies the review rules of a line edit and commits: an edit
// of a needs_review cart clears the review (the command that raises a
// review never clears it), an edit reopens a checked_out cart, and the
// touch checks price age.
func (m *Machine) finishEdit(st Store, n uint64, c *Cart, now int64, wasReview bool) {
	if wasReview {
		m.clearReview(c, now, false)
	}
	if c.State == StateCheckedOut {
		c.State = StateOpen
	}
	m.flagStale(c, now)
	m.commit(st, n, c, now)
}

func (m *Machine) addLine(st Store, now int64, cmd *Command) Result {
	c, n, e := loadLive(st, cmd.Cart)
	if e != nil {
		return Result{Err: e}
	}
	wasReview := c.State == StateNeedsReview
	in := &cmd.Line
	attrs := canonicalAttrs(in.Attrs)
	pool := in.Pool
	if pool == "" {
		pool = DefaultPool(in.SKU, in.Variant, in.Seller, in.Fulfillment)
	}
	v := c.Version + 1
	if i := findIdentity(c.Lines, in.SKU, in.Variant, in.Seller, in.Fulfillment, attrs); i >= 0 {
		l := &c.Lines[i]
		if l.Qty+cmd.Qty > allocator.MaxQty {
			return Result{Err: invalid("line %s would hold %d, over %d", l.ID, l.Qty+cmd.Qty, allocator.MaxQty)}
		}
		l.Qty += cmd.Qty
		l.Pool = pool
		l.Price = in.Price
		l.PricedAtMs = now
		l.LineVersion = v
		l.UpdatedAtMs = now
	} else {
		if len(c.Lines) >= MaxLines {
			return Result{Err: invalid("a cart has at most %d lines", MaxLines)}
		}
		c.nextLine++
		c.Lines = append(c.Lines, Line{
			ID: formatID(lineIDPrefix, c.nextLine), SKU: in.SKU, Variant: in.Variant, Seller: in.Seller,
			Fulfillment: in.Fulfillment, Attrs: attrs, Pool: pool, Qty: cmd.Qty, Price: in.Price,
			LineVersion: v, UpdatedAtMs: now, PricedAtMs: now,
		})
	}
	m.finishEdit(st, n, c, now, wasReview)
	return Result{Cart: c}
}

func (m *Machine) editLine(st Store, now int64, cmd *Command) Result {
	c, n, e := loadLive(st, cmd.Cart)
	if e != nil {
		return Result{Err: e}
	}
	i := findLine(c.Lines, cmd.LineID)
	if i < 0 {
		return Result{Err: errorf(allocator.NotFound, "no line %s in cart %s", cmd.LineID, c.ID)}
	}
	l := &c.Lines[i]
	if l.LineVersion != cmd.LineVersion {
		cur := *l
		return Result{
			Err:          errorf(allocator.VersionConflict, "line %s is at line_version %d, not %d", l.ID, l.LineVersion, cmd.LineVersion),
			ConflictLine: &cur,
		}
	}
	wasReview := c.State == StateNeedsReview
	if cmd.Kind == KindSetQty {
		l.Qty = cmd.Qty
		l.LineVersion = c.Version + 1
		l.UpdatedAtMs = now
	} else {
		c.Lines = slices.Delete(c.Lines, i, i+1)
	}
	m.finishEdit(st, n, c, now, wasReview)
	return Result{Cart: c}
}

func (m *Machine) review(st Store, now int64, id string) Result {
	c, n, e := loadLive(st, id)
	if e != nil {
		return Result{Err: e}
	}
	m.clearReview(c, now, true)
	m.commit(st, n, c, now)
	return Result{Cart: c}
}

// ---- idempotency ----

// idemScope is the object an idempotency key is bound to besides its hash.
func idemScope(c *Command) string {
	if c.Kind == KindConfirmCheckout {
		return c.Checkout
	}
	return c.Cart
}

// lookupIdem returns the live record of key, if any. A record past its
// expiry that Tick has not swept yet counts as gone.
func (m *Machine) lookupIdem(st Store, key string, now int64) *idemRecord {
	v, ok := st.Get(idemKey(key))
	if !ok {
		return nil
	}
	rec, err := decodeIdem(v)
	if err != nil || rec.expiresAtMs <= now {
		return nil
	}
	return rec
}

func (m *Machine) remember(st Store, now int64, c *Command, res *Result) {
	k := idemKey(c.IdemKey)
	if old, ok := st.Get(k); ok {
		if rec, err := decodeIdem(old); err == nil {
			st.Delete(dueKey(subIdemExp, rec.expiresAtMs, []byte(c.IdemKey)))
		}
	}
	rec := idemRecord{kind: c.Kind, cart: idemScope(c), hash: c.ReqHash, expiresAtMs: deadline(now, m.cfg.IdempotencyTTLMs), result: *res}
	rec.result.Replayed = false
	st.Set(k, appendIdem(nil, &rec))
	st.Set(dueKey(subIdemExp, rec.expiresAtMs, []byte(c.IdemKey)), []byte{})
}

// ---- background work ----

// deadline is now + ttl, with now floored at 0 and the sum saturating, so
// index keys stay ordered whatever the clock says.
func deadline(now, ttl int64) int64 {
	now = max(now, 0)
	if now > math.MaxInt64-ttl {
		return math.MaxInt64
	}
	return now + ttl
}

// NextDueMs returns the earliest due time in any of the time indexes (idle
// carts, checkouts past retention, idempotency keys), so a leader with an
// otherwise idle log knows when a Tick has work.
func NextDueMs(st Store) (int64, bool) {
	next, ok := int64(0), false
	for _, sub := range [...]byte{subIdle, subRetain, subIdemExp} {
		st.Scan([]byte{Prefix, sub}, []byte{Prefix, sub + 1}, func(k, _ []byte) bool {
			if len(k) >= 10 {
				if due := int64(binary.BigEndian.Uint64(k[2:10])); !ok || due < next {
					next, ok = due, true
				}
			}
			return false
		})
	}
	return next, ok
}

// Tick does bounded background work due at nowMs: it deletes idle carts,
// checkouts past their retention and expired idempotency keys, at most
// Config.SweepPerTick of each, in (due, id) order. Call it once per log
// entry, after its commands.
func (m *Machine) Tick(st Store, nowMs int64) {
	m.sweep(st, subIdle, nowMs, func(due int64, tail []byte) {
		k := append([]byte{Prefix, subCart}, tail...)
		if v, ok := st.Get(k); ok {
			// Only the entry the cart points at deletes it; a stray entry
			// (none are left behind, but be safe) is just dropped.
			if c, err := decodeCart(v); err != nil || c.idleDueMs == due {
				st.Delete(k)
			}
		}
	})
	m.sweep(st, subRetain, nowMs, func(due int64, tail []byte) {
		k := append([]byte{Prefix, subCheckout}, tail...)
		if v, ok := st.Get(k); ok {
			if co, err := decodeCheckout(v); err != nil || co.purgeAtMs == due {
				st.Delete(k)
			}
		}
	})
	m.sweep(st, subIdemExp, nowMs, func(due int64, tail []byte) {
		k := append([]byte{Prefix, subIdem}, tail...)
		if v, ok := st.Get(k); ok {
			if rec, err := decodeIdem(v); err != nil || rec.expiresAtMs == due {
				st.Delete(k)
			}
		}
	})
}

// sweep removes up to SweepPerTick entries of index sub due at or before
// now, calling f with each entry's due time and tail (the id).
func (m *Machine) sweep(st Store, sub byte, now int64, f func(due int64, tail []byte)) {
	if now < 0 {
		return
	}
	lo := []byte{Prefix, sub}
	hi := dueKey(sub, min(now, 1<<62)+1, nil)
	var keys [][]byte
	st.Scan(lo, hi, func(k, _ []byte) bool {
		keys = append(keys, slices.Clone(k))
		return len(keys) < m.cfg.SweepPerTick
	})
	for _, k := range keys {
		st.Delete(k)
		if len(k) < 10 {
			continue
		}
		f(int64(binary.BigEndian.Uint64(k[2:10])), k[10:])
	}
}
