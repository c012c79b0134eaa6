package cart

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/internal/wire"
)

// Kind is the type of a cart command. Carts own kinds MinKind..MaxKind; the
// allocator owns 1..allocator.MaxKind, so the engine routes an encoded
// command by its first byte.
type Kind uint8

// Command kinds. Values are part of the log format: never renumber.
const (
	KindCreate          Kind = 64 + iota // new cart for Owner
	KindAddLine                          // add Qty of Line to Cart
	KindSetQty                           // set Qty of LineID at LineVersion
	KindDeleteLine                       // delete LineID at LineVersion
	KindMerge                            // merge Source into Cart under Policy
	KindReview                           // clear needs_review, acknowledge prices
	KindCheckout                         // start a checkout of Cart at ExpectedVersion
	KindConfirmCheckout                  // confirm Checkout
)

var kindNames = [...]string{"create", "add_line", "set_qty", "delete_line", "merge", "review", "checkout", "confirm_checkout"}

// String returns a short name of the kind, e.g. "add_line".
func (k Kind) String() string {
	if k >= MinKind && int(k-MinKind) < len(kindNames) {
		return kindNames[k-MinKind]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Range of kinds owned by carts.
const (
	MinKind Kind = 64
	MaxKind Kind = 127
)

// HashLen is the length of a request hash kept with an idempotency key.
const HashLen = allocator.HashLen

// Command is one cart command: a flat union, only the fields of its Kind
// are meaningful (and encoded).
type Command struct {
	Kind Kind

	// IdemKey, if set, makes the command idempotent: the same key with the
	// same Kind, Cart and ReqHash returns the first Result again and
	// changes nothing.
	IdemKey string
	ReqHash [HashLen]byte

	Cart            string    // every kind but Create and ConfirmCheckout
	Owner           string    // Create
	Line            LineInput // AddLine
	LineID          string    // SetQty, DeleteLine
	Qty             int64     // AddLine (added), SetQty (new qty)
	LineVersion     int64     // SetQty, DeleteLine: the version the client saw
	Source          string    // Merge
	Policy          Policy    // Merge
	ExpectedVersion int64     // Checkout: the cart version the client validated
	TTLMs           int64     // Checkout: hold TTL; 0 means the pools' default
	Partial         bool      // Checkout: hold what can be held
	Checkout        string    // ConfirmCheckout
}

const (
	flagIdem    = 1 << 0
	flagPartial = 1 << 1
)

// AppendEncode appends the binary encoding of c to dst.
func (c *Command) AppendEncode(dst []byte) []byte {
	var flags byte
	if c.IdemKey != "" {
		flags |= flagIdem
	}
	if c.Partial {
		flags |= flagPartial
	}
	dst = append(dst, byte(c.Kind), flags)
	if c.IdemKey != "" {
		dst = wire.AppendString(dst, c.IdemKey)
		dst = append(dst, c.ReqHash[:]...)
	}
	switch c.Kind {
	case KindCreate:
		dst = wire.AppendString(dst, c.Owner)
	case KindAddLine:
		dst = wire.AppendString(dst, c.Cart)
		l := &c.Line
		for _, s := range [...]string{l.SKU, l.Variant, l.Seller, l.Fulfillment} {
			dst = wire.AppendString(dst, s)
		}
		dst = binary.AppendUvarint(dst, uint64(len(l.Attrs)))
		for _, a := range l.Attrs {
			dst = wire.AppendString(dst, a.Key)
			dst = wire.AppendString(dst, a.Value)
		}
		dst = wire.AppendString(dst, l.Pool)
		dst = appendPrice(dst, &l.Price)
		dst = binary.AppendVarint(dst, c.Qty)
	case KindSetQty:
		dst = wire.AppendString(dst, c.Cart)
		dst = wire.AppendString(dst, c.LineID)
		dst = binary.AppendVarint(dst, c.Qty)
		dst = binary.AppendVarint(dst, c.LineVersion)
	case KindDeleteLine:
		dst = wire.AppendString(dst, c.Cart)
		dst = wire.AppendString(dst, c.LineID)
		dst = binary.AppendVarint(dst, c.LineVersion)
	case KindMerge:
		dst = wire.AppendString(dst, c.Cart)
		dst = wire.AppendString(dst, c.Source)
		dst = append(dst, byte(c.Policy))
	case KindReview:
		dst = wire.AppendString(dst, c.Cart)
	case KindCheckout:
		dst = wire.AppendString(dst, c.Cart)
		dst = binary.AppendVarint(dst, c.ExpectedVersion)
		dst = binary.AppendVarint(dst, c.TTLMs)
	case KindConfirmCheckout:
		dst = wire.AppendString(dst, c.Checkout)
	}
	return dst
}

// DecodeCommand decodes one command. It never panics: any input that is
// not exactly one well-formed command gives an error wrapping ErrCorrupt.
// Decoding checks structure and length bounds only; Apply validates the
// values (see Command.Validate).
func DecodeCommand(b []byte) (Command, error) {
	d := wire.NewInterningDecoder(b, ErrCorrupt)
	var c Command
	c.Kind = Kind(d.Byte())
	flags := d.Byte()
	if flags&^(flagIdem|flagPartial) != 0 {
		return Command{}, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, flags)
	}
	if flags&flagIdem != 0 {
		c.IdemKey = d.String(allocator.MaxIDLen)
		if c.IdemKey == "" {
			d.Fail("empty idempotency key")
		}
		d.Bytes(c.ReqHash[:])
	}
	c.Partial = flags&flagPartial != 0
	switch c.Kind {
	case KindCreate:
		c.Owner = d.String(allocator.MaxIDLen)
	case KindAddLine:
		c.Cart = d.String(allocator.MaxIDLen)
		l := &c.Line
		l.SKU = d.String(allocator.MaxIDLen)
		l.Variant = d.String(allocator.MaxIDLen)
		l.Seller = d.String(allocator.MaxIDLen)
		l.Fulfillment = d.String(allocator.MaxIDLen)
		if n := d.Count(MaxAttrs); n > 0 {
			l.Attrs = make([]Attr, n)
			for i := range l.Attrs {
				l.Attrs[i] = Attr{Key: d.String(MaxAttrLen), Value: d.String(MaxAttrLen)}
			}
		}
		l.Pool = d.String(allocator.MaxIDLen)
		l.Price = readPrice(d)
		c.Qty = d.Varint()
	case KindSetQty:
		c.Cart = d.String(allocator.MaxIDLen)
		c.LineID = d.String(allocator.MaxIDLen)
		c.Qty = d.Varint()
		c.LineVersion = d.Varint()
	case KindDeleteLine:
		c.Cart = d.String(allocator.MaxIDLen)
		c.LineID = d.String(allocator.MaxIDLen)
		c.LineVersion = d.Varint()
	case KindMerge:
		c.Cart = d.String(allocator.MaxIDLen)
		c.Source = d.String(allocator.MaxIDLen)
		c.Policy = Policy(d.Enum(int(numPolicies), "policy"))
	case KindReview:
		c.Cart = d.String(allocator.MaxIDLen)
	case KindCheckout:
		c.Cart = d.String(allocator.MaxIDLen)
		c.ExpectedVersion = d.Varint()
		c.TTLMs = d.Varint()
	case KindConfirmCheckout:
		c.Checkout = d.String(allocator.MaxIDLen)
	default:
		d.Fail("unknown kind")
	}
	if err := d.End(); err != nil {
		return Command{}, err
	}
	return c, nil
}

func invalid(format string, args ...any) *allocator.Error {
	return &allocator.Error{Code: allocator.InvalidArgument, Message: fmt.Sprintf(format, args...)}
}

// ValidOwner reports whether s is a cart owner: "anon:" or "user:"
// followed by at least one byte, the whole a contract id.
func ValidOwner(s string) bool {
	rest, ok := strings.CutPrefix(s, "anon:")
	if !ok {
		rest, ok = strings.CutPrefix(s, "user:")
	}
	return ok && rest != "" && allocator.ValidID(s)
}

// Validate checks c against the contract's limits. The API should call it
// before proposing; Apply calls it again so a bad log entry changes
// nothing.
func (c *Command) Validate() *allocator.Error {
	if c.IdemKey != "" && !allocator.ValidID(c.IdemKey) {
		return invalid("bad idempotency key")
	}
	if c.Kind != KindCreate && c.Kind != KindConfirmCheckout {
		if _, ok := ParseCartID(c.Cart); !ok {
			return invalid("bad cart id %q", c.Cart)
		}
	}
	switch c.Kind {
	case KindCreate:
		if !ValidOwner(c.Owner) {
			return invalid("owner must be \"anon:<id>\" or \"user:<id>\", at most %d bytes of [A-Za-z0-9._:@/-]", allocator.MaxIDLen)
		}
	case KindAddLine:
		if e := validQty(c.Qty); e != nil {
			return e
		}
		return validLine(&c.Line)
	case KindSetQty:
		if e := validQty(c.Qty); e != nil {
			return e
		}
		return validLineRef(c.LineID, c.LineVersion)
	case KindDeleteLine:
		return validLineRef(c.LineID, c.LineVersion)
	case KindMerge:
		if _, ok := ParseCartID(c.Source); !ok {
			return invalid("bad source cart id %q", c.Source)
		}
		if c.Source == c.Cart {
			return invalid("a cart cannot be merged into itself")
		}
		if c.Policy >= numPolicies {
			return invalid("unknown merge policy")
		}
	case KindReview:
	case KindCheckout:
		if c.ExpectedVersion < 1 {
			return invalid("expected_version is required")
		}
		if c.TTLMs != 0 && (c.TTLMs < allocator.MinTTLMs || c.TTLMs > allocator.MaxTTLMs) {
			return invalid("ttl_ms must be between %d and %d", allocator.MinTTLMs, allocator.MaxTTLMs)
		}
	case KindConfirmCheckout:
		if _, ok := ParseCheckoutID(c.Checkout); !ok {
			return invalid("bad checkout id %q", c.Checkout)
		}
	default:
		return invalid("unknown cart command kind %d", c.Kind)
	}
	return nil
}

func validQty(q int64) *allocator.Error {
	if q < 1 || q > allocator.MaxQty {
		return invalid("qty must be between 1 and %d", allocator.MaxQty)
	}
	return nil
}

func validLineRef(id string, version int64) *allocator.Error {
	if _, ok := parseID(lineIDPrefix, id); !ok {
		return invalid("bad line id %q", id)
	}
	if version < 1 {
		return invalid("line_version is required")
	}
	return nil
}

// optionalID: "" or a contract id.
func optionalID(s string) bool { return s == "" || allocator.ValidID(s) }

func validLine(l *LineInput) *allocator.Error {
	if !allocator.ValidID(l.SKU) {
		return invalid("sku must be 1 to %d bytes of [A-Za-z0-9._:@/-]", allocator.MaxIDLen)
	}
	if !optionalID(l.Variant) || !optionalID(l.Seller) || !optionalID(l.Fulfillment) {
		return invalid("variant, seller and fulfillment must be at most %d bytes of [A-Za-z0-9._:@/-]", allocator.MaxIDLen)
	}
	if l.Pool != "" {
		if !allocator.ValidID(l.Pool) {
			return invalid("bad pool id")
		}
	} else if !allocator.ValidID(DefaultPool(l.SKU, l.Variant, l.Seller, l.Fulfillment)) {
		return invalid("sku:variant:seller:fulfillment is over %d bytes: name the pool", allocator.MaxIDLen)
	}
	if len(l.Attrs) > MaxAttrs {
		return invalid("at most %d attrs", MaxAttrs)
	}
	for i, a := range l.Attrs {
		if len(a.Key) > MaxAttrLen || !allocator.ValidID(a.Key) {
			return invalid("attr keys must be 1 to %d bytes of [A-Za-z0-9._:@/-]", MaxAttrLen)
		}
		if len(a.Value) > MaxAttrLen || !utf8.ValidString(a.Value) {
			return invalid("attr values must be valid UTF-8 of at most %d bytes", MaxAttrLen)
		}
		for _, b := range l.Attrs[:i] {
			if b.Key == a.Key {
				return invalid("duplicate attr %q", a.Key)
			}
		}
	}
	p := &l.Price
	if p.AmountMinor < 0 || p.AmountMinor > MaxAmountMinor {
		return invalid("amount_minor must be between 0 and %d", int64(MaxAmountMinor))
	}
	if p.Currency == "" {
		if p.AmountMinor != 0 || p.OfferID != "" {
			return invalid("a price needs a currency")
		}
	} else if !validCurrency(p.Currency) {
		return invalid("currency must be three uppercase letters")
	}
	if !optionalID(p.OfferID) {
		return invalid("bad offer_id")
	}
	return nil
}

func validCurrency(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// canonicalAttrs returns a sorted copy of attrs (nil when empty).
func canonicalAttrs(attrs []Attr) []Attr {
	if len(attrs) == 0 {
		return nil
	}
	out := slices.Clone(attrs)
	slices.SortFunc(out, func(a, b Attr) int { return strings.Compare(a.Key, b.Key) })
	return out
}
