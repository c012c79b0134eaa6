package cart

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/holdfast/holdfast/allocator"
)

// ErrCorrupt is returned (wrapped) for bytes that are not a well-formed
// command or stored value.
var ErrCorrupt = errors.New("cart: corrupt encoding")

// Format versions: the first byte of every stored value.
const (
	cartFormat     = 1
	checkoutFormat = 1
	idemFormat     = 1
)

// Decoding bounds, besides the contract limits.
const (
	maxMessageLen = 4096
	maxReasonLen  = 1024
)

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, 1)
	}
	return append(dst, 0)
}

// decoder reads with sticky errors so decoders read straight through; it
// never panics and never allocates more than its input justifies. Strings
// are substrings of one copy of the input, made on the first string read,
// so a decoded value costs one allocation for all its strings.
type decoder struct {
	b   []byte
	err error
	in  []byte // the whole input
	all string // copy of in, made by the first string read
}

func newDecoder(b []byte) decoder { return decoder{b: b, in: b} }

func (d *decoder) fail(why string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, why)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("short")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// enum reads a byte that must be below n.
func (d *decoder) enum(n int, what string) uint8 {
	v := d.byte()
	if int(v) >= n {
		d.fail("bad " + what)
		return 0
	}
	return v
}

func (d *decoder) bool() bool { return d.enum(2, "bool") == 1 }

func (d *decoder) bytes(dst []byte) {
	if len(d.b) < len(dst) {
		d.fail("short")
		return
	}
	copy(dst, d.b)
	d.b = d.b[len(dst):]
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a collection length of at most limit.
func (d *decoder) count(limit int) int {
	n := d.uvarint()
	if n > uint64(limit) || n > uint64(len(d.b)) { // every element takes a byte at least
		d.fail("bad count")
		return 0
	}
	return int(n)
}

func (d *decoder) string(maxLen int) string {
	n := d.uvarint()
	if n > uint64(maxLen) || n > uint64(len(d.b)) {
		d.fail("bad string length")
		return ""
	}
	if n == 0 {
		return ""
	}
	if d.all == "" {
		d.all = string(d.in)
	}
	off := len(d.in) - len(d.b)
	d.b = d.b[n:]
	return d.all[off : off+int(n)]
}

// nested reads a length-prefixed value.
func (d *decoder) nested() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("bad length")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}

// ---- lines ----

// DefaultPool is the pool a line draws from when it names none.
func DefaultPool(sku, variant, seller, fulfillment string) string {
	return sku + ":" + variant + ":" + seller + ":" + fulfillment
}

func appendPrice(b []byte, p *Price) []byte {
	b = binary.AppendVarint(b, p.AmountMinor)
	b = appendString(b, p.Currency)
	return appendString(b, p.OfferID)
}

func (d *decoder) price() Price {
	return Price{AmountMinor: d.varint(), Currency: d.string(allocator.MaxIDLen), OfferID: d.string(allocator.MaxIDLen)}
}

func appendLine(b []byte, l *Line) []byte {
	n, _ := parseID(lineIDPrefix, l.ID)
	b = binary.AppendUvarint(b, n)
	for _, s := range [...]string{l.SKU, l.Variant, l.Seller, l.Fulfillment} {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(l.Attrs)))
	for _, a := range l.Attrs {
		b = appendString(b, a.Key)
		b = appendString(b, a.Value)
	}
	pool := l.Pool
	if pool == DefaultPool(l.SKU, l.Variant, l.Seller, l.Fulfillment) {
		pool = "" // the common case costs one byte
	}
	b = appendString(b, pool)
	b = binary.AppendVarint(b, l.Qty)
	b = appendPrice(b, &l.Price)
	b = binary.AppendVarint(b, l.LineVersion)
	b = binary.AppendVarint(b, l.UpdatedAtMs)
	return binary.AppendVarint(b, l.PricedAtMs)
}

func (d *decoder) line() Line {
	var l Line
	n := d.uvarint()
	if n == 0 && d.err == nil {
		d.fail("bad line id")
	}
	l.ID = formatID(lineIDPrefix, n)
	l.SKU = d.string(allocator.MaxIDLen)
	l.Variant = d.string(allocator.MaxIDLen)
	l.Seller = d.string(allocator.MaxIDLen)
	l.Fulfillment = d.string(allocator.MaxIDLen)
	if na := d.count(MaxAttrs); na > 0 {
		l.Attrs = make([]Attr, na)
		for i := range l.Attrs {
			l.Attrs[i] = Attr{Key: d.string(MaxAttrLen), Value: d.string(MaxAttrLen)}
		}
	}
	l.Pool = d.string(allocator.MaxIDLen)
	if l.Pool == "" {
		l.Pool = DefaultPool(l.SKU, l.Variant, l.Seller, l.Fulfillment)
	}
	l.Qty = d.varint()
	l.Price = d.price()
	l.LineVersion = d.varint()
	l.UpdatedAtMs = d.varint()
	l.PricedAtMs = d.varint()
	return l
}

func appendOutcome(b []byte, o *MergeOutcome) []byte {
	b = appendLine(b, &o.Line)
	b = appendString(b, o.SourceLineID)
	b = append(b, byte(o.Outcome))
	b = binary.AppendVarint(b, o.TargetQty)
	return binary.AppendVarint(b, o.SourceQty)
}

func (d *decoder) outcome() MergeOutcome {
	var o MergeOutcome
	o.Line = d.line()
	o.SourceLineID = d.string(allocator.MaxIDLen)
	o.Outcome = Outcome(d.enum(int(numOutcomes), "outcome"))
	o.TargetQty = d.varint()
	o.SourceQty = d.varint()
	return o
}

func appendReport(b []byte, r []MergeOutcome) []byte {
	b = binary.AppendUvarint(b, uint64(len(r)))
	for i := range r {
		b = appendOutcome(b, &r[i])
	}
	return b
}

func (d *decoder) report() []MergeOutcome {
	n := d.count(MaxLines)
	if n == 0 {
		return nil
	}
	r := make([]MergeOutcome, n)
	for i := range r {
		r[i] = d.outcome()
	}
	return r
}

// ---- carts ----

// appendCart appends the stored encoding of c.
func appendCart(b []byte, c *Cart) []byte {
	b = append(b, cartFormat)
	b = appendString(b, c.ID)
	b = appendString(b, c.Owner)
	b = binary.AppendVarint(b, c.Version)
	b = append(b, byte(c.State), c.review)
	b = appendString(b, c.ReviewReason)
	b = binary.AppendVarint(b, c.CreatedAtMs)
	b = binary.AppendVarint(b, c.UpdatedAtMs)
	b = binary.AppendVarint(b, c.idleDueMs)
	b = binary.AppendUvarint(b, c.nextLine)
	b = appendString(b, c.CheckoutID)
	b = appendString(b, c.MergedInto)
	b = binary.AppendUvarint(b, uint64(len(c.Lines)))
	for i := range c.Lines {
		b = appendLine(b, &c.Lines[i])
	}
	return appendReport(b, c.mergeReport)
}

// decodeCart decodes a value written by appendCart. It never panics.
func decodeCart(v []byte) (*Cart, error) {
	d := newDecoder(v)
	if f := d.byte(); f != cartFormat && d.err == nil {
		d.fail("unknown cart format")
	}
	c := &Cart{}
	c.ID = d.string(allocator.MaxIDLen)
	c.Owner = d.string(allocator.MaxIDLen)
	c.Version = d.varint()
	c.State = State(d.enum(len(stateNames), "cart state"))
	c.review = d.byte()
	c.ReviewReason = d.string(maxReasonLen)
	c.CreatedAtMs = d.varint()
	c.UpdatedAtMs = d.varint()
	c.idleDueMs = d.varint()
	c.nextLine = d.uvarint()
	c.CheckoutID = d.string(allocator.MaxIDLen)
	c.MergedInto = d.string(allocator.MaxIDLen)
	if n := d.count(MaxLines); n > 0 {
		c.Lines = make([]Line, n)
		for i := range c.Lines {
			c.Lines[i] = d.line()
		}
	}
	c.mergeReport = d.report()
	if err := d.end(); err != nil {
		return nil, err
	}
	return c, nil
}

// ---- checkouts ----

func appendCheckout(b []byte, co *Checkout) []byte {
	b = append(b, checkoutFormat)
	b = appendString(b, co.ID)
	b = appendString(b, co.CartID)
	b = appendString(b, co.Owner)
	b = binary.AppendVarint(b, co.CartVersion)
	b = binary.AppendVarint(b, co.ValidatedAtMs)
	b = binary.AppendVarint(b, co.ExpiresAtMs)
	b = binary.AppendUvarint(b, co.ReservationID)
	b = append(b, byte(co.State))
	b = binary.AppendVarint(b, co.ConfirmedAtMs)
	b = binary.AppendVarint(b, co.purgeAtMs)
	b = binary.AppendUvarint(b, uint64(len(co.Lines)))
	for i := range co.Lines {
		l := &co.Lines[i]
		b = appendString(b, l.LineID)
		b = appendString(b, l.Pool)
		b = binary.AppendVarint(b, l.Qty)
		b = appendPrice(b, &l.Price)
		b = append(b, byte(l.State))
	}
	return appendCorrections(b, co.Corrections)
}

func appendCorrections(b []byte, cs []Correction) []byte {
	b = binary.AppendUvarint(b, uint64(len(cs)))
	for i := range cs {
		c := &cs[i]
		b = appendString(b, c.LineID)
		b = appendString(b, c.Pool)
		b = binary.AppendVarint(b, c.Qty)
		b = append(b, byte(c.State))
		b = appendString(b, c.Message)
	}
	return b
}

// numLineStates bounds stored allocator.LineState values.
const numLineStates = int(allocator.LineAvailable) + 1

func (d *decoder) corrections() []Correction {
	n := d.count(MaxLines)
	if n == 0 {
		return nil
	}
	cs := make([]Correction, n)
	for i := range cs {
		cs[i] = Correction{
			LineID:  d.string(allocator.MaxIDLen),
			Pool:    d.string(allocator.MaxIDLen),
			Qty:     d.varint(),
			State:   allocator.LineState(d.enum(numLineStates, "line state")),
			Message: d.string(maxMessageLen),
		}
	}
	return cs
}

// decodeCheckout decodes a value written by appendCheckout. It never
// panics.
func decodeCheckout(v []byte) (*Checkout, error) {
	d := newDecoder(v)
	if f := d.byte(); f != checkoutFormat && d.err == nil {
		d.fail("unknown checkout format")
	}
	co := &Checkout{}
	co.ID = d.string(allocator.MaxIDLen)
	co.CartID = d.string(allocator.MaxIDLen)
	co.Owner = d.string(allocator.MaxIDLen)
	co.CartVersion = d.varint()
	co.ValidatedAtMs = d.varint()
	co.ExpiresAtMs = d.varint()
	co.ReservationID = d.uvarint()
	co.State = CheckoutState(d.enum(len(checkoutStateNames), "checkout state"))
	co.ConfirmedAtMs = d.varint()
	co.purgeAtMs = d.varint()
	if n := d.count(MaxLines); n > 0 {
		co.Lines = make([]CheckoutLine, n)
		for i := range co.Lines {
			co.Lines[i] = CheckoutLine{
				LineID: d.string(allocator.MaxIDLen),
				Pool:   d.string(allocator.MaxIDLen),
				Qty:    d.varint(),
				Price:  d.price(),
				State:  allocator.LineState(d.enum(numLineStates, "line state")),
			}
		}
	}
	co.Corrections = d.corrections()
	if err := d.end(); err != nil {
		return nil, err
	}
	return co, nil
}

// ---- results (idempotency records) ----

const (
	resCreated = 1 << iota
	resErr
	resCart
	resCheckout
	resConflictLine
	resConflictCart
	resAll = resCreated | resErr | resCart | resCheckout | resConflictLine | resConflictCart
)

func appendNested(b []byte, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// appendResult appends r (without Replayed) for an idempotency record.
func appendResult(b []byte, r *Result) []byte {
	var flags byte
	if r.Created {
		flags |= resCreated
	}
	if r.Err != nil {
		flags |= resErr
	}
	if r.Cart != nil {
		flags |= resCart
	}
	if r.Checkout != nil {
		flags |= resCheckout
	}
	if r.ConflictLine != nil {
		flags |= resConflictLine
	}
	if r.ConflictCart != nil {
		flags |= resConflictCart
	}
	b = append(b, flags)
	if e := r.Err; e != nil {
		b = append(b, byte(e.Code))
		b = appendString(b, e.Message)
		b = binary.AppendUvarint(b, uint64(len(e.Lines)))
		for _, l := range e.Lines {
			b = appendString(b, l.Pool)
			b = binary.AppendVarint(b, l.Qty)
			b = append(b, byte(l.State))
		}
	}
	if r.Cart != nil {
		b = appendNested(b, appendCart(nil, r.Cart))
	}
	if r.Checkout != nil {
		b = appendNested(b, appendCheckout(nil, r.Checkout))
	}
	if r.ConflictLine != nil {
		b = appendLine(b, r.ConflictLine)
	}
	if r.ConflictCart != nil {
		b = appendNested(b, appendCart(nil, r.ConflictCart))
	}
	b = appendReport(b, r.Report)
	return appendCorrections(b, r.Corrections)
}

// numCodes bounds stored allocator.Code values.
const numCodes = int(allocator.IdempotencyMismatch) + 1

func (d *decoder) result() Result {
	var r Result
	flags := d.byte()
	if flags&^resAll != 0 {
		d.fail("bad result flags")
		return r
	}
	r.Created = flags&resCreated != 0
	if flags&resErr != 0 {
		e := &allocator.Error{Code: allocator.Code(d.enum(numCodes, "code")), Message: d.string(maxMessageLen)}
		if n := d.count(allocator.MaxLines); n > 0 {
			e.Lines = make([]allocator.LineView, n)
			for i := range e.Lines {
				e.Lines[i] = allocator.LineView{Pool: d.string(allocator.MaxIDLen), Qty: d.varint(), State: allocator.LineState(d.enum(numLineStates, "line state"))}
			}
		}
		r.Err = e
	}
	nestedCart := func() *Cart {
		v := d.nested()
		if d.err != nil {
			return nil
		}
		c, err := decodeCart(v)
		if err != nil {
			d.fail("bad nested cart")
		}
		return c
	}
	if flags&resCart != 0 {
		r.Cart = nestedCart()
	}
	if flags&resCheckout != 0 {
		v := d.nested()
		if d.err == nil {
			co, err := decodeCheckout(v)
			if err != nil {
				d.fail("bad nested checkout")
			}
			r.Checkout = co
		}
	}
	if flags&resConflictLine != 0 {
		l := d.line()
		r.ConflictLine = &l
	}
	if flags&resConflictCart != 0 {
		r.ConflictCart = nestedCart()
	}
	r.Report = d.report()
	r.Corrections = d.corrections()
	return r
}

// idemRecord is what an idempotency key remembers.
type idemRecord struct {
	kind        Kind
	cart        string
	hash        [HashLen]byte
	expiresAtMs int64
	result      Result
}

func appendIdem(b []byte, rec *idemRecord) []byte {
	b = append(b, idemFormat, byte(rec.kind))
	b = appendString(b, rec.cart)
	b = append(b, rec.hash[:]...)
	b = binary.AppendVarint(b, rec.expiresAtMs)
	return appendResult(b, &rec.result)
}

func decodeIdem(v []byte) (*idemRecord, error) {
	d := newDecoder(v)
	if f := d.byte(); f != idemFormat && d.err == nil {
		d.fail("unknown idempotency format")
	}
	rec := &idemRecord{}
	rec.kind = Kind(d.byte())
	rec.cart = d.string(allocator.MaxIDLen)
	d.bytes(rec.hash[:])
	rec.expiresAtMs = d.varint()
	rec.result = d.result()
	if err := d.end(); err != nil {
		return nil, err
	}
	return rec, nil
}
