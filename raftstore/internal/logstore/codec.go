package logstore

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/hashicorp/raft"
)

// Key layout. Every key this package writes starts with one "kind" byte.
// Kinds 0x00 through 0x0F are reserved for this package; other keyspaces
// sharing the Pebble DB (carts, FSM state, ...) must use a first byte of
// FirstFreePrefix (0x10) or above so that they can never collide with, or be
// swept up by a range tombstone of, a Raft group's log.
//
//	meta:   [PrefixMeta]   "layout"                           -> [layoutVersion]
//	log:    [PrefixLog]    [group uint16 BE][index uint64 BE] -> encoded raft.Log
//	stable: [PrefixStable] [group uint16 BE][raw key bytes]   -> raw value
//
// Big-endian integers make Pebble's bytewise order equal numeric order, so a
// group's log is one contiguous key range ordered by index, and
// FirstIndex/LastIndex are a bounded First/Last seek.
const (
	// PrefixMeta is the first key byte of database-wide metadata owned by
	// this package (currently only the key layout version).
	PrefixMeta byte = 0x00
	// PrefixLog is the first key byte of Raft log entries.
	PrefixLog byte = 0x01
	// PrefixStable is the first key byte of Raft StableStore keys (current
	// term, vote) of every group.
	PrefixStable byte = 0x02
	// FirstFreePrefix is the smallest first key byte other keyspaces may use.
	// Bytes below it are reserved for this package, including ones not yet
	// assigned, so that future Raft-related keyspaces need no migration.
	FirstFreePrefix byte = 0x10
)

const (
	// groupPrefixLen is the length of [kind][group].
	groupPrefixLen = 3
	// logKeyLen is the length of a complete log key.
	logKeyLen = groupPrefixLen + 8

	// layoutVersion is stored under the meta key so that a future,
	// incompatible key layout is detected on Open instead of misread.
	layoutVersion byte = 1
	// metaLayoutKeySuffix follows PrefixMeta in the layout version key.
	metaLayoutKeySuffix = "layout"

	// logValueVersion is the first byte of every encoded log value; a
	// decoder meeting another version refuses it rather than guessing.
	logValueVersion byte = 1
	// flagAppendedAt marks that AppendedAt is present. The zero time.Time
	// has no unix-nanosecond representation, so "absent" needs its own bit.
	flagAppendedAt byte = 1 << 0
	// knownFlags is every flag bit this version understands; others are
	// corruption.
	knownFlags = flagAppendedAt

	// maxLogValueOverhead bounds the non-payload bytes of an encoded log:
	// version, flags, type, and at most five varints.
	maxLogValueOverhead = 3 + 5*binary.MaxVarintLen64
)

// groupPrefix returns [kind][group BE].
func groupPrefix(kind byte, group uint16) []byte {
	return []byte{kind, byte(group >> 8), byte(group)}
}

// prefixEnd returns the smallest key greater than every key starting with
// prefix, for use as an exclusive iterator upper bound. It returns nil if no
// such key exists (prefix is all 0xFF), which Pebble treats as "no bound";
// that cannot happen for prefixes built by this package because kinds are
// below 0xFF.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

// putLogKey writes the log key of (group, index) into dst.
func putLogKey(dst *[logKeyLen]byte, group uint16, index uint64) {
	dst[0] = PrefixLog
	binary.BigEndian.PutUint16(dst[1:3], group)
	binary.BigEndian.PutUint64(dst[3:], index)
}

// logKeyIndex extracts the index from a log key of the expected group, or
// reports corruption; a key of the wrong shape inside a group's bounds means
// someone else wrote into the reserved keyspace.
func logKeyIndex(key []byte, group uint16) (uint64, error) {
	if len(key) != logKeyLen || key[0] != PrefixLog || binary.BigEndian.Uint16(key[1:3]) != group {
		return 0, fmt.Errorf("%w: unexpected key %x in log range of group %d", ErrCorrupt, key, group)
	}
	return binary.BigEndian.Uint64(key[3:]), nil
}

// stableKey returns [PrefixStable][group BE][key].
func stableKey(group uint16, key []byte) []byte {
	k := make([]byte, groupPrefixLen+len(key))
	k[0] = PrefixStable
	binary.BigEndian.PutUint16(k[1:3], group)
	copy(k[groupPrefixLen:], key)
	return k
}

// appendedAtNanos converts t to unix nanoseconds. Times outside the int64
// nanosecond range (before 1678 or after 2262) have no exact representation
// and are clamped; raft only uses AppendedAt for operational metrics, so a
// clamped value is preferable to refusing to store the entry.
func appendedAtNanos(t time.Time) int64 {
	const (
		maxSec = math.MaxInt64 / 1_000_000_000        // 2262-04-11
		maxNs  = math.MaxInt64 % 1_000_000_000        // nanoseconds allowed in maxSec
		minSec = math.MinInt64/1_000_000_000 - 1      // 1677-09-21, floored like Unix()
		minNs  = math.MinInt64 - minSec*1_000_000_000 // nanoseconds needed in minSec
	)
	s, ns := t.Unix(), int64(t.Nanosecond())
	switch {
	case s > maxSec || s == maxSec && ns > maxNs:
		return math.MaxInt64
	case s < minSec || s == minSec && ns < minNs:
		return math.MinInt64
	}
	return t.UnixNano()
}

// appendLog appends the encoding of l to dst:
//
//	[version=1][flags][uvarint Index][uvarint Term][Type]
//	[varint AppendedAt unix nanos, only if flagAppendedAt]
//	[uvarint len(Data)][Data][uvarint len(Extensions)][Extensions]
//
// The index is repeated in the value (it is also in the key) so a value read
// back under the wrong key is detected as corruption.
func appendLog(dst []byte, l *raft.Log) []byte {
	var flags byte
	if !l.AppendedAt.IsZero() {
		flags |= flagAppendedAt
	}
	dst = append(dst, logValueVersion, flags)
	dst = binary.AppendUvarint(dst, l.Index)
	dst = binary.AppendUvarint(dst, l.Term)
	dst = append(dst, byte(l.Type))
	if flags&flagAppendedAt != 0 {
		dst = binary.AppendVarint(dst, appendedAtNanos(l.AppendedAt))
	}
	dst = binary.AppendUvarint(dst, uint64(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.AppendUvarint(dst, uint64(len(l.Extensions)))
	dst = append(dst, l.Extensions...)
	return dst
}

// decoder reads a log value with bounds checks; the first failure is kept in
// err and every later read is a no-op, so decodeLog checks once at the end.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or malformed %s", ErrCorrupt, what)
	}
}

func (d *decoder) byte1(what string) byte {
	if d.err != nil || len(d.buf) < 1 {
		d.fail(what)
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// bytes returns a length-prefixed field without copying.
func (d *decoder) bytes(what string) []byte {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) {
		d.fail(what)
		return nil
	}
	b := d.buf[:n:n]
	d.buf = d.buf[n:]
	return b
}

// decodeLog decodes val into l. Data and Extensions are copied (into one
// allocation) because val usually points into Pebble memory that is only
// valid until the Get closer is closed. Zero-length Data/Extensions decode as
// nil. Any malformation, including trailing bytes, is an ErrCorrupt error.
func decodeLog(val []byte, l *raft.Log) error {
	d := decoder{buf: val}
	if v := d.byte1("version"); d.err == nil && v != logValueVersion {
		return fmt.Errorf("%w: unknown log value version %d", ErrCorrupt, v)
	}
	flags := d.byte1("flags")
	if d.err == nil && flags&^knownFlags != 0 {
		return fmt.Errorf("%w: unknown log value flags %#x", ErrCorrupt, flags)
	}
	index := d.uvarint("index")
	term := d.uvarint("term")
	typ := d.byte1("type")
	var appendedAt time.Time
	if flags&flagAppendedAt != 0 {
		if ns := d.varint("appended-at"); d.err == nil {
			appendedAt = time.Unix(0, ns)
		}
	}
	data := d.bytes("data")
	ext := d.bytes("extensions")
	if d.err != nil {
		return d.err
	}
	if len(d.buf) != 0 {
		return fmt.Errorf("%w: %d trailing bytes in log value", ErrCorrupt, len(d.buf))
	}

	var backing []byte
	if n := len(data) + len(ext); n > 0 {
		backing = make([]byte, n)
		copy(backing, data)
		copy(backing[len(data):], ext)
	}
	*l = raft.Log{
		Index:      index,
		Term:       term,
		Type:       raft.LogType(typ),
		AppendedAt: appendedAt,
	}
	if len(data) > 0 {
		l.Data = backing[:len(data):len(data)]
	}
	if len(ext) > 0 {
		l.Extensions = backing[len(data):]
	}
	return nil
}
