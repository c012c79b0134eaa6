package allocator

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/holdfast/holdfast/internal/wire"
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
	KindRefusals
	KindSetClock
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
	Delta  int64      // AdjustPool; SetClock: the clock to move to, in ms

	Reservation uint64 // Confirm, Release, Extend
	TTLMs       int64  // Reserve: 0 means the pools' default; Extend: required

	Buyer   string        // Reserve
	Lines   []LineRequest // Reserve
	Partial bool          // Reserve: hold what can be held
	Wait    bool          // Reserve: queue when the units are not there

	Refusals []Refusal // Refusals: answered by the leader without a log entry
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
		dst = wire.AppendString(dst, c.IdemKey)
		dst = append(dst, c.ReqHash[:]...)
	}
	switch c.Kind {
	case KindPutPool:
		dst = wire.AppendString(dst, c.Pool)
		cfg := &c.Config
		dst = binary.AppendVarint(dst, cfg.OnHand)
		dst = binary.AppendVarint(dst, cfg.PerBuyerLimit)
		dst = binary.AppendVarint(dst, cfg.HoldTTLMs)
		dst = binary.AppendVarint(dst, cfg.MaxHoldTTLMs)
		dst = binary.AppendVarint(dst, cfg.MaxExtensions)
		dst = append(dst, byte(cfg.Mode))
		dst = binary.AppendVarint(dst, cfg.Draw.OpensAtMs)
		dst = binary.AppendVarint(dst, cfg.Draw.ClosesAtMs)
		dst = wire.AppendString(dst, cfg.Draw.Seed)
		dst = binary.AppendVarint(dst, cfg.Waitlist.OfferTTLMs)
		dst = binary.AppendVarint(dst, cfg.Waitlist.WaitTTLMs)
		for _, v := range [...]int64{cfg.Demand.WarmRPS, cfg.Demand.HotRPS, cfg.Demand.LowStockUnits, cfg.Demand.LowStockPercent, cfg.Demand.HorizonMs} {
			dst = binary.AppendVarint(dst, v)
		}
	case KindAdjustPool:
		dst = wire.AppendString(dst, c.Pool)
		dst = binary.AppendVarint(dst, c.Delta)
	case KindReserve:
		dst = wire.AppendString(dst, c.Buyer)
		dst = binary.AppendVarint(dst, c.TTLMs)
		dst = binary.AppendUvarint(dst, uint64(len(c.Lines)))
		for _, l := range c.Lines {
			dst = wire.AppendString(dst, l.Pool)
			dst = binary.AppendVarint(dst, l.Qty)
		}
	case KindConfirm, KindRelease:
		dst = binary.AppendUvarint(dst, c.Reservation)
	case KindExtend:
		dst = binary.AppendUvarint(dst, c.Reservation)
		dst = binary.AppendVarint(dst, c.TTLMs)
	case KindSetClock:
		dst = binary.AppendVarint(dst, c.Delta)
	case KindRefusals:
		dst = binary.AppendUvarint(dst, uint64(len(c.Refusals)))
		for i := range c.Refusals {
			r := &c.Refusals[i]
			dst = wire.AppendString(dst, r.IdemKey) // empty: no key
			if r.IdemKey != "" {
				dst = append(dst, r.ReqHash[:]...)
			}
			dst = append(dst, byte(r.Err.Code))
			dst = appendLines(dst, r.Err.Lines)
		}
	case KindTick:
	}
	return dst
}

// DecodeCommand decodes one command. It never panics: any input that is
// not exactly one well-formed command gives an error wrapping ErrCorrupt.
func DecodeCommand(b []byte) (Command, error) {
	d := wire.NewDecoder(b, ErrCorrupt)
	var c Command
	c.Kind = Kind(d.Byte())
	flags := d.Byte()
	if flags&^(flagIdem|flagPartial|flagWait|flagWaitOn) != 0 {
		return Command{}, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, flags)
	}
	if flags&flagIdem != 0 {
		c.IdemKey = d.String(MaxIDLen)
		if c.IdemKey == "" {
			d.Fail("empty idempotency key")
		}
		d.Bytes(c.ReqHash[:])
	}
	c.Partial = flags&flagPartial != 0
	c.Wait = flags&flagWait != 0
	switch c.Kind {
	case KindPutPool:
		c.Pool = d.String(MaxIDLen)
		cfg := &c.Config
		cfg.OnHand = d.Varint()
		cfg.PerBuyerLimit = d.Varint()
		cfg.HoldTTLMs = d.Varint()
		cfg.MaxHoldTTLMs = d.Varint()
		cfg.MaxExtensions = d.Varint()
		cfg.Mode = Mode(d.Byte())
		cfg.Draw.OpensAtMs = d.Varint()
		cfg.Draw.ClosesAtMs = d.Varint()
		cfg.Draw.Seed = d.String(MaxIDLen)
		cfg.Waitlist.Enabled = flags&flagWaitOn != 0
		cfg.Waitlist.OfferTTLMs = d.Varint()
		cfg.Waitlist.WaitTTLMs = d.Varint()
		for _, v := range [...]*int64{&cfg.Demand.WarmRPS, &cfg.Demand.HotRPS, &cfg.Demand.LowStockUnits, &cfg.Demand.LowStockPercent, &cfg.Demand.HorizonMs} {
			*v = d.Varint()
		}
	case KindAdjustPool:
		c.Pool = d.String(MaxIDLen)
		c.Delta = d.Varint()
	case KindReserve:
		c.Buyer = d.String(MaxIDLen)
		c.TTLMs = d.Varint()
		n := d.Uvarint()
		if n > MaxLines {
			d.Fail("too many lines")
			break
		}
		c.Lines = make([]LineRequest, n)
		for i := range c.Lines {
			c.Lines[i].Pool = d.String(MaxIDLen)
			c.Lines[i].Qty = d.Varint()
		}
	case KindConfirm, KindRelease:
		c.Reservation = d.Uvarint()
	case KindExtend:
		c.Reservation = d.Uvarint()
		c.TTLMs = d.Varint()
	case KindSetClock:
		if flags != 0 {
			d.Fail("flags on a set-clock command")
			break
		}
		c.Delta = d.Varint()
	case KindRefusals:
		if flags != 0 {
			d.Fail("flags on a refusals command") // its refusals carry their own keys
			break
		}
		c.Refusals = decodeRefusals(d)
	case KindTick:
	default:
		d.Fail("unknown kind")
	}
	if err := d.End(); err != nil {
		return Command{}, err
	}
	return c, nil
}
