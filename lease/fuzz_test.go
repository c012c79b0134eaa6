package lease

import (
	"encoding/binary"
	"math"
	"testing"
)

// fuzzReader hands out bytes and returns zeros once the input runs out, so
// every input decodes to some operation sequence.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) u8() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *fuzzReader) u16() uint16 { return uint16(r.u8()) | uint16(r.u8())<<8 }

func (r *fuzzReader) u64() uint64 {
	var buf [8]byte
	n := copy(buf[:], r.b)
	r.b = r.b[n:]
	return binary.LittleEndian.Uint64(buf[:])
}

// time decodes a time relative to clock, covering small offsets, powers of
// two (level boundaries), 30 days, the past, and raw int64 values.
func (r *fuzzReader) time(clock int64) int64 {
	switch r.u8() % 8 {
	case 0:
		return satAdd(clock, int64(int8(r.u8())))
	case 1:
		return satAdd(clock, satAdd(int64(1)<<(r.u8()%63), int64(int8(r.u8()))))
	case 2:
		return satAdd(clock, int64(r.u16()))
	case 3:
		return int64(r.u64())
	case 4:
		return satAdd(clock, -int64(r.u16()))
	case 5:
		return satAdd(clock, satAdd(30*day, int64(int8(r.u8()))))
	case 6:
		return math.MaxInt64 - int64(r.u8())
	default:
		return math.MinInt64 + int64(r.u8())
	}
}

// FuzzWheel decodes the input into an operation sequence over a small key
// space and checks every result against the reference model, with wheels
// rebuilt from the live set receiving the same operations.
func FuzzWheel(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{1, 0, 1, 1, 0, 0, 2, 2, 3, 0, 0, 0, 4})
	f.Add([]byte{3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 5, 6, 0, 7, 7, 3, 0, 6, 2, 4, 5, 3, 3, 0, 1})
	f.Fuzz(fuzzWheel)
}

func fuzzWheel(t *testing.T, data []byte) {
	r := &fuzzReader{b: data}
	var start int64
	switch r.u8() % 4 {
	case 1:
		start = math.MinInt64
	case 2:
		start = math.MaxInt64 - 1000
	case 3:
		start = int64(r.u64())
	}
	h := newHarness(t, start, 1)
	h.checkEvery = 1
	for len(r.b) > 0 {
		op := r.u8() % 8
		key := uint64(r.u8() % 16)
		switch op {
		case 0, 1, 2:
			h.add(key, r.time(h.ref.clock))
		case 3:
			h.cancel(key)
		case 4, 5:
			h.advance(r.time(h.ref.clock), int(r.u8()%4))
		case 6:
			h.advanceToNext()
		case 7:
			h.rebuild()
		}
	}
	h.rebuild()
	h.drainAll(2)
}
