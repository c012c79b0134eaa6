package cart

import (
	"encoding/binary"
	"errors"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/internal/wire"
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

// ---- lines ----

// DefaultPool is the pool a line draws from when it names none.
func DefaultPool(sku, variant, seller, fulfillment string) string {
	return sku + ":" + variant + ":" + seller + ":" + fulfillment
}

func appendPrice(b []byte, p *Price) []byte {
	b = binary.AppendVarint(b, p.AmountMinor)
	b = wire.AppendString(b, p.Currency)
	return wire.AppendString(b, p.OfferID)
}

func readPrice(d *wire.Decoder) Price {
	return Price{AmountMinor: d.Varint(), Currency: d.String(allocator.MaxIDLen), OfferID: d.String(allocator.MaxIDLen)}
}

func appendLine(b []byte, l *Line) []byte {
	n, _ := parseID(lineIDPrefix, l.ID)
	b = binary.AppendUvarint(b, n)
	for _, s := range [...]string{l.SKU, l.Variant, l.Seller, l.Fulfillment} {
		b = wire.AppendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(l.Attrs)))
	for _, a := range l.Attrs {
		b = wire.AppendString(b, a.Key)
		b = wire.AppendString(b, a.Value)
	}
	pool := l.Pool
	if pool == DefaultPool(l.SKU, l.Variant, l.Seller, l.Fulfillment) {
		pool = "" // the common case costs one byte
	}
	b = wire.AppendString(b, pool)
	b = binary.AppendVarint(b, l.Qty)
	b = appendPrice(b, &l.Price)
	b = binary.AppendVarint(b, l.LineVersion)
	b = binary.AppendVarint(b, l.UpdatedAtMs)
	return binary.AppendVarint(b, l.PricedAtMs)
}

func readLine(d *wire.Decoder) Line {
	var l Line
	n := d.Uvarint()
	if n == 0 && d.Err() == nil {
		d.Fail("bad line id")
	}
	l.ID = formatID(lineIDPrefix, n)
	l.SKU = d.String(allocator.MaxIDLen)
	l.Variant = d.String(allocator.MaxIDLen)
	l.Seller = d.String(allocator.MaxIDLen)
	l.Fulfillment = d.String(allocator.MaxIDLen)
	if na := d.Count(MaxAttrs); na > 0 {
		l.Attrs = make([]Attr, na)
		for i := range l.Attrs {
			l.Attrs[i] = Attr{Key: d.String(MaxAttrLen), Value: d.String(MaxAttrLen)}
		}
	}
	l.Pool = d.String(allocator.MaxIDLen)
	if l.Pool == "" {
		l.Pool = DefaultPool(l.SKU, l.Variant, l.Seller, l.Fulfillment)
	}
	l.Qty = d.Varint()
	l.Price = readPrice(d)
	l.LineVersion = d.Varint()
	l.UpdatedAtMs = d.Varint()
	l.PricedAtMs = d.Varint()
	return l
}

func appendOutcome(b []byte, o *MergeOutcome) []byte {
	b = appendLine(b, &o.Line)
	b = wire.AppendString(b, o.SourceLineID)
	b = append(b, byte(o.Outcome))
	b = binary.AppendVarint(b, o.TargetQty)
	return binary.AppendVarint(b, o.SourceQty)
}

func readOutcome(d *wire.Decoder) MergeOutcome {
	var o MergeOutcome
	o.Line = readLine(d)
	o.SourceLineID = d.String(allocator.MaxIDLen)
	o.Outcome = Outcome(d.Enum(int(numOutcomes), "outcome"))
	o.TargetQty = d.Varint()
	o.SourceQty = d.Varint()
	return o
}

func appendReport(b []byte, r []MergeOutcome) []byte {
	b = binary.AppendUvarint(b, uint64(len(r)))
	for i := range r {
		b = appendOutcome(b, &r[i])
	}
	return b
}

func readReport(d *wire.Decoder) []MergeOutcome {
	n := d.Count(MaxLines)
	if n == 0 {
		return nil
	}
	r := make([]MergeOutcome, n)
	for i := range r {
		r[i] = readOutcome(d)
	}
	return r
}

// ---- carts ----

// appendCart appends the stored encoding of c.
func appendCart(b []byte, c *Cart) []byte {
	b = append(b, cartFormat)
	b = wire.AppendString(b, c.ID)
	b = wire.AppendString(b, c.Owner)
	b = binary.AppendVarint(b, c.Version)
	b = append(b, byte(c.State), c.review)
	b = wire.AppendString(b, c.ReviewReason)
	b = binary.AppendVarint(b, c.CreatedAtMs)
	b = binary.AppendVarint(b, c.UpdatedAtMs)
	b = binary.AppendVarint(b, c.idleDueMs)
	b = binary.AppendUvarint(b, c.nextLine)
	b = wire.AppendString(b, c.CheckoutID)
	b = wire.AppendString(b, c.MergedInto)
	b = binary.AppendUvarint(b, uint64(len(c.Lines)))
	for i := range c.Lines {
		b = appendLine(b, &c.Lines[i])
	}
	return appendReport(b, c.mergeReport)
}

// decodeCart decodes a value written by appendCart. It never panics.
func decodeCart(v []byte) (*Cart, error) {
	d := wire.NewInterningDecoder(v, ErrCorrupt)
	if f := d.Byte(); f != cartFormat && d.Err() == nil {
		d.Fail("unknown cart format")
	}
	c := &Cart{}
	c.ID = d.String(allocator.MaxIDLen)
	c.Owner = d.String(allocator.MaxIDLen)
	c.Version = d.Varint()
	c.State = State(d.Enum(len(stateNames), "cart state"))
	c.review = d.Byte()
	c.ReviewReason = d.String(maxReasonLen)
	c.CreatedAtMs = d.Varint()
	c.UpdatedAtMs = d.Varint()
	c.idleDueMs = d.Varint()
	c.nextLine = d.Uvarint()
	c.CheckoutID = d.String(allocator.MaxIDLen)
	c.MergedInto = d.String(allocator.MaxIDLen)
	if n := d.Count(MaxLines); n > 0 {
		c.Lines = make([]Line, n)
		for i := range c.Lines {
			c.Lines[i] = readLine(d)
		}
	}
	c.mergeReport = readReport(d)
	if err := d.End(); err != nil {
		return nil, err
	}
	return c, nil
}

// ---- checkouts ----

func appendCheckout(b []byte, co *Checkout) []byte {
	b = append(b, checkoutFormat)
	b = wire.AppendString(b, co.ID)
	b = wire.AppendString(b, co.CartID)
	b = wire.AppendString(b, co.Owner)
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
		b = wire.AppendString(b, l.LineID)
		b = wire.AppendString(b, l.Pool)
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
		b = wire.AppendString(b, c.LineID)
		b = wire.AppendString(b, c.Pool)
		b = binary.AppendVarint(b, c.Qty)
		b = append(b, byte(c.State))
		b = wire.AppendString(b, c.Message)
	}
	return b
}

// numLineStates bounds stored allocator.LineState values.
const numLineStates = int(allocator.LineAvailable) + 1

func readCorrections(d *wire.Decoder) []Correction {
	n := d.Count(MaxLines)
	if n == 0 {
		return nil
	}
	cs := make([]Correction, n)
	for i := range cs {
		cs[i] = Correction{
			LineID:  d.String(allocator.MaxIDLen),
			Pool:    d.String(allocator.MaxIDLen),
			Qty:     d.Varint(),
			State:   allocator.LineState(d.Enum(numLineStates, "line state")),
			Message: d.String(maxMessageLen),
		}
	}
	return cs
}

// decodeCheckout decodes a value written by appendCheckout. It never
// panics.
func decodeCheckout(v []byte) (*Checkout, error) {
	d := wire.NewInterningDecoder(v, ErrCorrupt)
	if f := d.Byte(); f != checkoutFormat && d.Err() == nil {
		d.Fail("unknown checkout format")
	}
	co := &Checkout{}
	co.ID = d.String(allocator.MaxIDLen)
	co.CartID = d.String(allocator.MaxIDLen)
	co.Owner = d.String(allocator.MaxIDLen)
	co.CartVersion = d.Varint()
	co.ValidatedAtMs = d.Varint()
	co.ExpiresAtMs = d.Varint()
	co.ReservationID = d.Uvarint()
	co.State = CheckoutState(d.Enum(len(checkoutStateNames), "checkout state"))
	co.ConfirmedAtMs = d.Varint()
	co.purgeAtMs = d.Varint()
	if n := d.Count(MaxLines); n > 0 {
		co.Lines = make([]CheckoutLine, n)
		for i := range co.Lines {
			co.Lines[i] = CheckoutLine{
				LineID: d.String(allocator.MaxIDLen),
				Pool:   d.String(allocator.MaxIDLen),
				Qty:    d.Varint(),
				Price:  readPrice(d),
				State:  allocator.LineState(d.Enum(numLineStates, "line state")),
			}
		}
	}
	co.Corrections = readCorrections(d)
	if err := d.End(); err != nil {
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
		b = wire.AppendString(b, e.Message)
		b = binary.AppendUvarint(b, uint64(len(e.Lines)))
		for _, l := range e.Lines {
			b = wire.AppendString(b, l.Pool)
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

func readResult(d *wire.Decoder) Result {
	var r Result
	flags := d.Byte()
	if flags&^resAll != 0 {
		d.Fail("bad result flags")
		return r
	}
	r.Created = flags&resCreated != 0
	if flags&resErr != 0 {
		e := &allocator.Error{Code: allocator.Code(d.Enum(numCodes, "code")), Message: d.String(maxMessageLen)}
		if n := d.Count(allocator.MaxLines); n > 0 {
			e.Lines = make([]allocator.LineView, n)
			for i := range e.Lines {
				e.Lines[i] = allocator.LineView{Pool: d.String(allocator.MaxIDLen), Qty: d.Varint(), State: allocator.LineState(d.Enum(numLineStates, "line state"))}
			}
		}
		r.Err = e
	}
	nestedCart := func() *Cart {
		v := d.Nested()
		if d.Err() != nil {
			return nil
		}
		c, err := decodeCart(v)
		if err != nil {
			d.Fail("bad nested cart")
		}
		return c
	}
	if flags&resCart != 0 {
		r.Cart = nestedCart()
	}
	if flags&resCheckout != 0 {
		v := d.Nested()
		if d.Err() == nil {
			co, err := decodeCheckout(v)
			if err != nil {
				d.Fail("bad nested checkout")
			}
			r.Checkout = co
		}
	}
	if flags&resConflictLine != 0 {
		l := readLine(d)
		r.ConflictLine = &l
	}
	if flags&resConflictCart != 0 {
		r.ConflictCart = nestedCart()
	}
	r.Report = readReport(d)
	r.Corrections = readCorrections(d)
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
	b = wire.AppendString(b, rec.cart)
	b = append(b, rec.hash[:]...)
	b = binary.AppendVarint(b, rec.expiresAtMs)
	return appendResult(b, &rec.result)
}

func decodeIdem(v []byte) (*idemRecord, error) {
	d := wire.NewInterningDecoder(v, ErrCorrupt)
	if f := d.Byte(); f != idemFormat && d.Err() == nil {
		d.Fail("unknown idempotency format")
	}
	rec := &idemRecord{}
	rec.kind = Kind(d.Byte())
	rec.cart = d.String(allocator.MaxIDLen)
	d.Bytes(rec.hash[:])
	rec.expiresAtMs = d.Varint()
	rec.result = readResult(d)
	if err := d.End(); err != nil {
		return nil, err
	}
	return rec, nil
}
