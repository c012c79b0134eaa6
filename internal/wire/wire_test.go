package wire

import (
	"encoding/binary"
	"errors"
	"testing"
)

var errCorrupt = errors.New("corrupt")

func sample() []byte {
	b := AppendString(nil, "pool-1")
	b = binary.AppendVarint(b, -42)
	b = binary.AppendUvarint(b, 300)
	b = AppendBool(b, true)
	b = append(b, 2)
	b = AppendString(b, "")
	b = binary.AppendUvarint(b, 3)
	return append(b, 'x', 'y', 'z')
}

func read(d *Decoder) (string, int64, uint64, bool, uint8, string, []byte) {
	return d.String(64), d.Varint(), d.Uvarint(), d.Bool(), d.Enum(3, "kind"), d.String(64), d.Nested()
}

func TestRoundTripAndInterning(t *testing.T) {
	for _, d := range []*Decoder{NewDecoder(sample(), errCorrupt), NewInterningDecoder(sample(), errCorrupt)} {
		s, v, u, b, e, empty, n := read(d)
		if err := d.End(); err != nil || s != "pool-1" || v != -42 || u != 300 || !b || e != 2 || empty != "" || string(n) != "xyz" {
			t.Fatalf("decoded %q %d %d %v %d %q %q, err %v", s, v, u, b, e, empty, n, err)
		}
	}
}

// TestTruncationsFailCleanly: every prefix of a valid input is an error
// wrapping the given sentinel, never a panic; trailing bytes are too.
func TestTruncationsFailCleanly(t *testing.T) {
	full := sample()
	for i := range full {
		d := NewInterningDecoder(full[:i], errCorrupt)
		read(d)
		if err := d.End(); !errors.Is(err, errCorrupt) {
			t.Fatalf("prefix of %d bytes: %v", i, err)
		}
	}
	d := NewDecoder(append(sample(), 0), errCorrupt)
	read(d)
	if err := d.End(); !errors.Is(err, errCorrupt) {
		t.Fatalf("trailing byte: %v", err)
	}
	d = NewDecoder([]byte{5}, errCorrupt)
	if d.Bool(); d.Err() == nil {
		t.Fatal("bool 5 accepted")
	}
	d = NewDecoder(binary.AppendUvarint(nil, 1<<40), errCorrupt)
	if d.Count(100); d.Err() == nil {
		t.Fatal("count over its limit accepted")
	}
}
