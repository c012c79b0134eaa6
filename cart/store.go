package cart

import (
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/internal/wire"
)

// Store is the cart keyspace as seen while applying one log entry (or a
// read view). Writes are visible to later Gets in the same entry. The
// package never retains a value or key it was given: a value returned by
// Get need only stay valid until the next Set or Delete.
type Store interface {
	// Get returns the value of key. The caller must not modify it.
	Get(key []byte) (value []byte, ok bool)
	// Set stores value under key. The store must copy both if it keeps them.
	Set(key, value []byte)
	// Delete removes key; deleting a missing key is a no-op.
	Delete(key []byte)
	// Scan calls f on keys in [lo, hi) in ascending order until f returns
	// false. key and value are only valid during the call, and f must not
	// write to the store.
	Scan(lo, hi []byte, f func(key, value []byte) bool)
}

// Pools is what carts need from the allocator. The engine implements it
// over *allocator.Machine, within the same log entry, so a checkout's
// reservation and the cart's snapshot commit together.
type Pools interface {
	// PerBuyerLimit returns the pool's per-buyer limit (0: none) and
	// whether the pool exists.
	PerBuyerLimit(pool string) (limit int64, exists bool)
	// Reserve makes one reservation for buyer (ttlMs 0: the pools'
	// default hold TTL).
	Reserve(buyer string, lines []allocator.LineRequest, ttlMs int64, partial bool) allocator.Result
	// Confirm confirms a reservation.
	Confirm(reservation uint64) allocator.Result
	// ReservationState reports a reservation's state, and false when the
	// allocator no longer knows it.
	ReservationState(reservation uint64) (allocator.ReservationState, bool)
}

// Prefix is the first byte of every cart key; the engine hands the cart
// layer a Store restricted to keys starting with it. Key layout: Prefix, a
// sub-kind byte, then (numbers big-endian, so keys sort numerically):
//
//	0x10 0x00                          meta: uvarint last cart number, uvarint last checkout number
//	0x10 0x01 <cart u64>               cart record
//	0x10 0x02 <checkout u64>           checkout record
//	0x10 0x03 <due u64> <cart u64>     idle index: cart deleted at due (empty value)
//	0x10 0x04 <due u64> <checkout u64> retention index: checkout deleted at due (empty value)
//	0x10 0x05 <key bytes>              idempotency record
//	0x10 0x06 <due u64> <key bytes>    idempotency expiry index (empty value)
const Prefix byte = 0x10

const (
	subMeta     byte = 0x00
	subCart     byte = 0x01
	subCheckout byte = 0x02
	subIdle     byte = 0x03
	subRetain   byte = 0x04
	subIdem     byte = 0x05
	subIdemExp  byte = 0x06
)

func metaKey() []byte { return []byte{Prefix, subMeta} }

func numKey(sub byte, n uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{Prefix, sub}, n)
}

// dueKey is an index key: sub, due, then a number or bytes.
func dueKey(sub byte, due int64, tail []byte) []byte {
	k := make([]byte, 0, 10+len(tail))
	k = append(k, Prefix, sub)
	k = binary.BigEndian.AppendUint64(k, uint64(max(due, 0)))
	return append(k, tail...)
}

func be64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func idemKey(key string) []byte {
	return append([]byte{Prefix, subIdem}, key...)
}

// Ids as the API shows them: a prefix and canonical lowercase hex.
const (
	cartIDPrefix     = "c_"
	lineIDPrefix     = "l_"
	checkoutIDPrefix = "co_"
)

func formatID(prefix string, n uint64) string { return prefix + strconv.FormatUint(n, 16) }

// parseID accepts only the canonical rendering of formatID, so one object
// has one name.
func parseID(prefix, s string) (uint64, bool) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok || rest == "" || len(rest) > 16 || (len(rest) > 1 && rest[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseUint(rest, 16, 64)
	if err != nil || n == 0 || strconv.FormatUint(n, 16) != rest {
		return 0, false
	}
	return n, true
}

// FormatCartID renders cart number n as its id.
func FormatCartID(n uint64) string { return formatID(cartIDPrefix, n) }

// ParseCartID parses a cart id.
func ParseCartID(s string) (uint64, bool) { return parseID(cartIDPrefix, s) }

// ParseCheckoutID parses a checkout id.
func ParseCheckoutID(s string) (uint64, bool) { return parseID(checkoutIDPrefix, s) }

// ParseLineID parses a line id ("l_<hex>", canonical spelling only).
func ParseLineID(s string) (uint64, bool) { return parseID(lineIDPrefix, s) }

// meta holds the id counters.
type meta struct {
	carts, checkouts uint64
}

func loadMeta(st Store) meta {
	v, ok := st.Get(metaKey())
	if !ok {
		return meta{}
	}
	d := wire.NewInterningDecoder(v, ErrCorrupt)
	m := meta{carts: d.Uvarint(), checkouts: d.Uvarint()}
	if d.Err() != nil {
		// Counters that do not decode would reuse ids; refuse to guess.
		return meta{carts: 1 << 62, checkouts: 1 << 62}
	}
	return m
}

func saveMeta(st Store, m meta) {
	b := binary.AppendUvarint(make([]byte, 0, 20), m.carts)
	st.Set(metaKey(), binary.AppendUvarint(b, m.checkouts))
}
