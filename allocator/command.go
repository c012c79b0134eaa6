package allocator

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Kind is the type of a command. Kinds 1-63 belong to the allocator; a
// composite state machine may dispatch other ranges elsewhere.
type Kind uint8

// Command kinds. Values are part of the log format: never renumber.
const (
	KindPutPool Kind = 1 + iota
	KindAdjustPool
	KindReserve
	KindConfirm
	KindRelease
	KindExtend
	KindTick
)

// MaxKind is the highest command kind owned by the allocator.
const MaxKind Kind = 63

// HashLen is the length of a request hash kept with an idempotency key.
const HashLen = 16

// LineRequest is one requested line of a reservation.
type LineRequest struct {
	Pool string
	Qty  int64
}

// Command is one state machine command. It is a flat union rather than an
// interface so decoding allocates nothing but its strings and lines; only
// the fields of its Kind are meaningful.
type Command struct {
	Kind Kind

	// IdemKey, if set, makes the command idempotent: the same key with the
	// same ReqHash returns the first Result again and changes nothing.
	IdemKey string
	ReqHash [HashLen]byte

	Pool   string     // PutPool, AdjustPool
	Config PoolConfig // PutPool
	Delta  int64      // AdjustPool

	Reservation uint64 // Confirm, Release, Extend
	TTLMs       int64  // Reserve: 0 means the pools' default; Extend: required

	Buyer   string        // Reserve
	Lines   []LineRequest // Reserve
	Partial bool          // Reserve: hold what can be held
	Wait    bool          // Reserve: queue when the units are not there
}

const (
	flagIdem    = 1 << 0
	flagPartial = 1 << 1
	flagWait    = 1 << 2
	flagWaitOn  = 1 << 3 // PutPool: waitlist enabled
)

// ErrCorrupt is returned by DecodeCommand for bytes that are not a command.
var ErrCorrupt = errors.New("allocator: corrupt command")

// AppendEncode appends the binary encoding of c to dst.
func (c *Command) AppendEncode(dst []byte) []byte {
	var flags byte
	if c.IdemKey != "" {
		flags |= flagIdem
	}
	if c.Partial {
		flags |= flagPartial
	}
	if c.Wait {
		flags |= flagWait
	}
	if c.Config.Waitlist.Enabled {
		flags |= flagWaitOn
	}
	dst = append(dst, byte(c.Kind), flags)
	if c.IdemKey != "" {
		dst = appendString(dst, c.IdemKey)
		dst = append(dst, c.ReqHash[:]...)
	}
	switch c.Kind {
	case KindPutPool:
		dst = appendString(dst, c.Pool)
		cfg := &c.Config
		dst = binary.AppendVarint(dst, cfg.OnHand)
		dst = binary.AppendVarint(dst, cfg.PerBuyerLimit)
		dst = binary.AppendVarint(dst, cfg.HoldTTLMs)
		dst = binary.AppendVarint(dst, cfg.MaxHoldTTLMs)
		dst = binary.AppendVarint(dst, cfg.MaxExtensions)
		dst = append(dst, byte(cfg.Mode))
		dst = binary.AppendVarint(dst, cfg.Draw.OpensAtMs)
		dst = binary.AppendVarint(dst, cfg.Draw.ClosesAtMs)
		dst = appendString(dst, cfg.Draw.Seed)
		dst = binary.AppendVarint(dst, cfg.Waitlist.OfferTTLMs)
		dst = binary.AppendVarint(dst, cfg.Waitlist.WaitTTLMs)
		for _, v := range [...]int64{cfg.Demand.WarmRPS, cfg.Demand.HotRPS, cfg.Demand.LowStockUnits, cfg.Demand.LowStockPercent, cfg.Demand.HorizonMs} {
			dst = binary.AppendVarint(dst, v)
		}
	case KindAdjustPool:
		dst = appendString(dst, c.Pool)
		dst = binary.AppendVarint(dst, c.Delta)
	case KindReserve:
		dst = appendString(dst, c.Buyer)
		dst = binary.AppendVarint(dst, c.TTLMs)
		dst = binary.AppendUvarint(dst, uint64(len(c.Lines)))
		for _, l := range c.Lines {
			dst = appendString(dst, l.Pool)
			dst = binary.AppendVarint(dst, l.Qty)
		}
	case KindConfirm, KindRelease:
		dst = binary.AppendUvarint(dst, c.Reservation)
	case KindExtend:
		dst = binary.AppendUvarint(dst, c.Reservation)
		dst = binary.AppendVarint(dst, c.TTLMs)
	case KindTick:
	}
	return dst
}

// DecodeCommand decodes one command. It never panics: any input that is
// not exactly one well-formed command gives an error wrapping ErrCorrupt.
func DecodeCommand(b []byte) (Command, error) {
	d := decoder{b: b}
	var c Command
	c.Kind = Kind(d.byte())
	flags := d.byte()
	if flags&^(flagIdem|flagPartial|flagWait|flagWaitOn) != 0 {
		return Command{}, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, flags)
	}
	if flags&flagIdem != 0 {
		c.IdemKey = d.string(MaxIDLen)
		if c.IdemKey == "" {
			d.fail("empty idempotency key")
		}
		d.bytes(c.ReqHash[:])
	}
	c.Partial = flags&flagPartial != 0
	c.Wait = flags&flagWait != 0
	switch c.Kind {
	case KindPutPool:
		c.Pool = d.string(MaxIDLen)
		cfg := &c.Config
		cfg.OnHand = d.varint()
		cfg.PerBuyerLimit = d.varint()
		cfg.HoldTTLMs = d.varint()
		cfg.MaxHoldTTLMs = d.varint()
		cfg.MaxExtensions = d.varint()
		cfg.Mode = Mode(d.byte())
		cfg.Draw.OpensAtMs = d.varint()
		cfg.Draw.ClosesAtMs = d.varint()
		cfg.Draw.Seed = d.string(MaxIDLen)
		cfg.Waitlist.Enabled = flags&flagWaitOn != 0
		cfg.Waitlist.OfferTTLMs = d.varint()
		cfg.Waitlist.WaitTTLMs = d.varint()
		for _, v := range [...]*int64{&cfg.Demand.WarmRPS, &cfg.Demand.HotRPS, &cfg.Demand.LowStockUnits, &cfg.Demand.LowStockPercent, &cfg.Demand.HorizonMs} {
			*v = d.varint()
		}
	case KindAdjustPool:
		c.Pool = d.string(MaxIDLen)
		c.Delta = d.varint()
	case KindReserve:
		c.Buyer = d.string(MaxIDLen)
		c.TTLMs = d.varint()
		n := d.uvarint()
		if n > MaxLines {
			d.fail("too many lines")
			break
		}
		c.Lines = make([]LineRequest, n)
		for i := range c.Lines {
			c.Lines[i].Pool = d.string(MaxIDLen)
			c.Lines[i].Qty = d.varint()
		}
	case KindConfirm, KindRelease:
		c.Reservation = d.uvarint()
	case KindExtend:
		c.Reservation = d.uvarint()
		c.TTLMs = d.varint()
	case KindTick:
	default:
		d.fail("unknown kind")
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return Command{}, d.err
	}
	return c, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decoder reads with sticky errors so DecodeCommand reads straight through.
type decoder struct {
	b   []byte
	err error
}

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

func (d *decoder) string(maxLen int) string {
	n := d.uvarint()
	if n > uint64(maxLen) || n > uint64(len(d.b)) {
		d.fail("bad string length")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
