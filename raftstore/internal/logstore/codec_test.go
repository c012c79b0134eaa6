package logstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func logsEqual(t testing.TB, want, got *raft.Log) {
	t.Helper()
	if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type ||
		!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) ||
		!got.AppendedAt.Equal(want.AppendedAt) || got.AppendedAt.IsZero() != want.AppendedAt.IsZero() {
		t.Fatalf("log mismatch:\nwant %+v\ngot  %+v", *want, *got)
	}
}

func TestLogEncodingRoundTrip(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name string
		log  raft.Log
	}{
		{"minimal", raft.Log{Index: 1, Term: 1}},
		{"empty data non-nil", raft.Log{Index: 2, Term: 1, Type: raft.LogCommand, Data: []byte{}}},
		{"data", raft.Log{Index: 3, Term: 2, Type: raft.LogCommand, Data: []byte("reserve sku-1 x2")}},
		{"extensions only", raft.Log{Index: 4, Term: 2, Type: raft.LogNoop, Extensions: []byte{0, 1, 2, 0xff}}},
		{"data and extensions", raft.Log{Index: 5, Term: 3, Type: raft.LogConfiguration, Data: bytes.Repeat([]byte{7}, 300), Extensions: []byte("ext")}},
		{"appended at now", raft.Log{Index: 6, Term: 3, Type: raft.LogBarrier, Data: []byte{1}, AppendedAt: now}},
		{"appended at before epoch", raft.Log{Index: 7, Term: 3, AppendedAt: time.Unix(-1234567, 89)}},
		{"max values", raft.Log{Index: math.MaxUint64, Term: math.MaxUint64, Type: raft.LogType(255), AppendedAt: time.Unix(0, math.MaxInt64)}},
		{"min time", raft.Log{Index: 9, Term: 1, AppendedAt: time.Unix(0, math.MinInt64)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			enc := appendLog(nil, &tc.log)
			if len(enc) > maxLogValueOverhead+len(tc.log.Data)+len(tc.log.Extensions) {
				t.Fatalf("encoding of %d bytes exceeds bound", len(enc))
			}
			var got raft.Log
			if err := decodeLog(enc, &got); err != nil {
				t.Fatal(err)
			}
			logsEqual(t, &tc.log, &got)
			// Decoded slices must not alias the encoded buffer (Pebble
			// memory is only valid until the closer is closed).
			for i := range enc {
				enc[i] = 0xAA
			}
			logsEqual(t, &tc.log, &got)
		})
	}
}

func TestAppendedAtClamped(t *testing.T) {
	far := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	old := time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := appendedAtNanos(far); got != math.MaxInt64 {
		t.Fatalf("far future: got %d", got)
	}
	if got := appendedAtNanos(old); got != math.MinInt64 {
		t.Fatalf("far past: got %d", got)
	}
	edge := time.Unix(0, math.MaxInt64)
	if got := appendedAtNanos(edge); got != math.MaxInt64 {
		t.Fatalf("max edge: got %d", got)
	}
	if got := appendedAtNanos(edge.Add(time.Nanosecond)); got != math.MaxInt64 {
		t.Fatalf("max edge+1: got %d", got)
	}
	minEdge := time.Unix(0, math.MinInt64)
	if got := appendedAtNanos(minEdge); got != math.MinInt64 {
		t.Fatalf("min edge: got %d", got)
	}
	if got := appendedAtNanos(minEdge.Add(time.Nanosecond)); got != math.MinInt64+1 {
		t.Fatalf("min edge+1: got %d", got)
	}
}

func TestLogDecodingCorrupt(t *testing.T) {
	valid := appendLog(nil, &raft.Log{Index: 42, Term: 7, Type: raft.LogCommand, Data: []byte("payload"), Extensions: []byte("x"), AppendedAt: time.Now()})

	// Every strict prefix of a valid encoding is truncated data.
	for n := 0; n < len(valid); n++ {
		var l raft.Log
		if err := decodeLog(valid[:n], &l); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("prefix of %d/%d bytes: want ErrCorrupt, got %v", n, len(valid), err)
		}
	}

	hugeLen := append([]byte{logValueVersion, 0}, binary.AppendUvarint(nil, 1)...)
	hugeLen = binary.AppendUvarint(hugeLen, 1)
	hugeLen = append(hugeLen, 0)
	hugeLen = binary.AppendUvarint(hugeLen, math.MaxUint64) // data length
	overflow := append([]byte{logValueVersion, 0}, bytes.Repeat([]byte{0xff}, 11)...)

	cases := map[string][]byte{
		"empty":             nil,
		"unknown version":   append([]byte{99}, valid[1:]...),
		"version zero":      append([]byte{0}, valid[1:]...),
		"unknown flag":      append([]byte{logValueVersion, 0x80}, valid[2:]...),
		"trailing byte":     append(append([]byte(nil), valid...), 0),
		"huge data length":  hugeLen,
		"varint overflow":   overflow,
		"data past the end": append([]byte{logValueVersion, 0, 1, 1, 0, 5}, "abc"...),
	}
	for name, val := range cases {
		t.Run(name, func(t *testing.T) {
			var l raft.Log
			if err := decodeLog(val, &l); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("want ErrCorrupt, got %v", err)
			}
		})
	}
}

// FuzzDecodeLog checks that decoding arbitrary bytes never panics and that
// whatever decodes re-encodes to the same bytes (the encoding is canonical).
// Under plain `go test` it runs only the seed corpus.
func FuzzDecodeLog(f *testing.F) {
	f.Add(appendLog(nil, &raft.Log{Index: 1, Term: 1}))
	f.Add(appendLog(nil, &raft.Log{Index: 42, Term: 7, Data: []byte("d"), Extensions: []byte("e"), AppendedAt: time.Unix(5, 6)}))
	f.Add([]byte{logValueVersion, 1, 0xff})
	f.Fuzz(func(t *testing.T, val []byte) {
		var l raft.Log
		if err := decodeLog(val, &l); err != nil {
			return
		}
		// Varints have non-canonical (overlong) forms, so compare the
		// decoded values rather than bytes.
		var again raft.Log
		if err := decodeLog(appendLog(nil, &l), &again); err != nil {
			t.Fatalf("re-encoding of decoded value does not decode: %v", err)
		}
		logsEqual(t, &l, &again)
	})
}

func TestKeyHelpers(t *testing.T) {
	if got := prefixEnd([]byte{PrefixLog, 0xff, 0xff}); !bytes.Equal(got, []byte{PrefixStable}) {
		t.Fatalf("prefixEnd of last group = %x", got)
	}
	if got := prefixEnd([]byte{PrefixLog, 0x00, 0xff}); !bytes.Equal(got, []byte{PrefixLog, 0x01}) {
		t.Fatalf("prefixEnd = %x", got)
	}
	if got := prefixEnd([]byte{0xff, 0xff}); got != nil {
		t.Fatalf("prefixEnd of all-0xff = %x, want nil", got)
	}
	var k [logKeyLen]byte
	putLogKey(&k, 0x0102, 0x0304)
	if want := []byte{PrefixLog, 1, 2, 0, 0, 0, 0, 0, 0, 3, 4}; !bytes.Equal(k[:], want) {
		t.Fatalf("log key %x, want %x", k, want)
	}
	if idx, err := logKeyIndex(k[:], 0x0102); err != nil || idx != 0x0304 {
		t.Fatalf("logKeyIndex = %d, %v", idx, err)
	}
	for _, bad := range [][]byte{k[:10], append(k[:], 0), {PrefixStable, 1, 2, 0, 0, 0, 0, 0, 0, 3, 4}} {
		if _, err := logKeyIndex(bad, 0x0102); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("logKeyIndex(%x): want ErrCorrupt, got %v", bad, err)
		}
	}
	if _, err := logKeyIndex(k[:], 0x0103); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong group: want ErrCorrupt, got %v", err)
	}
	if got := stableKey(0xabcd, []byte("CurrentTerm")); !bytes.Equal(got, append([]byte{PrefixStable, 0xab, 0xcd}, "CurrentTerm"...)) {
		t.Fatalf("stable key %x", got)
	}
}
