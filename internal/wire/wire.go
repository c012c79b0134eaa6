// Package wire holds the binary codec primitives shared by the state
// machines' log commands and stored values: uvarint-length-prefixed
// strings and a decoder with sticky errors that never panics.
package wire

import (
	"encoding/binary"
	"fmt"
)

// AppendString appends s with its uvarint length.
func AppendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// AppendBool appends v as one byte.
func AppendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, 1)
	}
	return append(dst, 0)
}

// Decoder reads with sticky errors, so a decoding function reads straight
// through and checks Err (or End) once. It never panics and never
// allocates more than its input justifies.
type Decoder struct {
	b       []byte
	err     error
	corrupt error // wrapped by every error, e.g. a package's ErrCorrupt

	intern bool
	in     []byte // the whole input
	all    string // copy of in, made by the first string read when interning
}

// NewDecoder reads b; its errors wrap corrupt.
func NewDecoder(b []byte, corrupt error) *Decoder {
	return &Decoder{b: b, corrupt: corrupt}
}

// NewInterningDecoder is NewDecoder whose strings are substrings of one copy
// of the input, made on the first string read: a small value costs one
// allocation for all its strings. Not for large inputs whose strings
// outlive most of them (they would pin the whole copy).
func NewInterningDecoder(b []byte, corrupt error) *Decoder {
	return &Decoder{b: b, corrupt: corrupt, intern: true, in: b}
}

// Fail records the first error and stops further reads.
func (d *Decoder) Fail(why string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", d.corrupt, why)
	}
	d.b = nil
}

// Err is the first error, if any.
func (d *Decoder) Err() error { return d.err }

// End is Err, failing first if input is left over.
func (d *Decoder) End() error {
	if d.err == nil && len(d.b) != 0 {
		d.Fail("trailing bytes")
	}
	return d.err
}

// Byte reads one byte.
func (d *Decoder) Byte() byte {
	if len(d.b) < 1 {
		d.Fail("short")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// Enum reads a byte that must be below n.
func (d *Decoder) Enum(n int, what string) uint8 {
	v := d.Byte()
	if int(v) >= n {
		d.Fail("bad " + what)
		return 0
	}
	return v
}

// Bool reads a byte that must be 0 or 1.
func (d *Decoder) Bool() bool { return d.Enum(2, "bool") == 1 }

// Bytes fills dst.
func (d *Decoder) Bytes(dst []byte) {
	if len(d.b) < len(dst) {
		d.Fail("short")
		return
	}
	copy(dst, d.b)
	d.b = d.b[len(dst):]
}

// Uvarint reads an unsigned varint.
func (d *Decoder) Uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.Fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// Varint reads a signed varint.
func (d *Decoder) Varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.Fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// Count reads a collection length of at most limit (and at most the bytes
// left: every element takes one at least).
func (d *Decoder) Count(limit int) int {
	n := d.Uvarint()
	if n > uint64(limit) || n > uint64(len(d.b)) {
		d.Fail("bad count")
		return 0
	}
	return int(n)
}

// String reads a length-prefixed string of at most maxLen bytes.
func (d *Decoder) String(maxLen int) string {
	n := d.Uvarint()
	if n > uint64(maxLen) || n > uint64(len(d.b)) {
		d.Fail("bad string length")
		return ""
	}
	if n == 0 {
		return ""
	}
	if !d.intern {
		s := string(d.b[:n])
		d.b = d.b[n:]
		return s
	}
	if d.all == "" {
		d.all = string(d.in)
	}
	off := len(d.in) - len(d.b)
	d.b = d.b[n:]
	return d.all[off : off+int(n)]
}

// Nested reads a length-prefixed value; it aliases the input.
func (d *Decoder) Nested() []byte {
	n := d.Uvarint()
	if n > uint64(len(d.b)) {
		d.Fail("bad length")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
