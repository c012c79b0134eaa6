package logstore

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

func openDB(t testing.TB, fs vfs.FS) *DB {
	t.Helper()
	db, err := Open("db", Options{FS: fs, CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func mustGroup(t testing.TB, db *DB, id uint16) *Store {
	t.Helper()
	s, err := db.Group(id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// entry builds a deterministic entry whose contents depend on group, index
// and term, so reading another group's or term's entry is detected.
func entry(group uint16, index, term uint64) *raft.Log {
	return &raft.Log{
		Index:      index,
		Term:       term,
		Type:       raft.LogCommand,
		Data:       fmt.Appendf(nil, "g%d-i%d-t%d", group, index, term),
		Extensions: []byte{byte(group), byte(index)},
		AppendedAt: time.Unix(1700000000, int64(index)),
	}
}

func entries(group uint16, from, to, term uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, entry(group, i, term))
	}
	return out
}

func storeRange(t testing.TB, s *Store, from, to, term uint64) {
	t.Helper()
	if err := s.StoreLogs(entries(s.id, from, to, term)); err != nil {
		t.Fatal(err)
	}
}

// checkBounds checks the cached first/last index and that the cache agrees
// with what is on disk.
func checkBounds(t testing.TB, s *Store, first, last uint64) {
	t.Helper()
	f, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if f != first || l != last {
		t.Fatalf("group %d: cached bounds [%d, %d], want [%d, %d]", s.id, f, l, first, last)
	}
	df, dl, err := s.loadBounds()
	if err != nil {
		t.Fatal(err)
	}
	if df != first || dl != last {
		t.Fatalf("group %d: on-disk bounds [%d, %d], want [%d, %d]", s.id, df, dl, first, last)
	}
}

func checkPresent(t testing.TB, s *Store, index, term uint64) {
	t.Helper()
	var got raft.Log
	if err := s.GetLog(index, &got); err != nil {
		t.Fatalf("group %d: GetLog(%d): %v", s.id, index, err)
	}
	logsEqual(t, entry(s.id, index, term), &got)
}

func checkAbsent(t testing.TB, s *Store, index uint64) {
	t.Helper()
	var got raft.Log
	if err := s.GetLog(index, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("group %d: GetLog(%d): want ErrLogNotFound, got %v (%+v)", s.id, index, err, got)
	}
}

func TestEmptyStore(t *testing.T) {
	db := openDB(t, vfs.NewMem())
	defer db.Close()
	s := mustGroup(t, db, 0)
	checkBounds(t, s, 0, 0)
	for _, i := range []uint64{0, 1, math.MaxUint64} {
		checkAbsent(t, s, i)
	}
	if !s.IsMonotonic() {
		t.Fatal("IsMonotonic = false")
	}
	if err := s.StoreLogs(nil); err != nil {
		t.Fatalf("empty StoreLogs: %v", err)
	}
	if err := s.DeleteRange(1, 10); err != nil {
		t.Fatalf("DeleteRange on empty: %v", err)
	}
	checkBounds(t, s, 0, 0)
}

func TestStoreAndGet(t *testing.T) {
	db := openDB(t, vfs.NewMem())
	defer db.Close()
	s := mustGroup(t, db, 7)

	// Single.
	if err := s.StoreLog(entry(7, 1, 1)); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 1, 1)
	checkPresent(t, s, 1, 1)
	checkAbsent(t, s, 0)
	checkAbsent(t, s, 2)

	// Batch appended.
	storeRange(t, s, 2, 50, 2)
	checkBounds(t, s, 1, 50)
	for i := uint64(2); i <= 50; i++ {
		checkPresent(t, s, i, 2)
	}
	checkAbsent(t, s, 51)

	// An entry with an empty payload and no timestamp.
	bare := &raft.Log{Index: 51, Term: 3, Type: raft.LogNoop}
	if err := s.StoreLog(bare); err != nil {
		t.Fatal(err)
	}
	var got raft.Log
	if err := s.GetLog(51, &got); err != nil {
		t.Fatal(err)
	}
	logsEqual(t, bare, &got)
	checkBounds(t, s, 1, 51)
}

func TestStoreLogsStartsAnywhereWhenEmpty(t *testing.T) {
	db := openDB(t, vfs.NewMem())
	defer db.Close()
	s := mustGroup(t, db, 1)
	// After a snapshot restore raft deletes the whole log and continues
	// after the snapshot index.
	storeRange(t, s, 1000, 1009, 5)
	checkBounds(t, s, 1000, 1009)
	checkAbsent(t, s, 999)
	checkPresent(t, s, 1000, 5)
}

func TestOverwrite(t *testing.T) {
	db := openDB(t, vfs.NewMem())
	defer db.Close()
	s := mustGroup(t, db, 0)
	storeRange(t, s, 1, 10, 1)

	storeRange(t, s, 4, 6, 2) // inside
	checkBounds(t, s, 1, 10)
	checkPresent(t, s, 3, 1)
	checkPresent(t, s, 4, 2)
	checkPresent(t, s, 6, 2)
	checkPresent(t, s, 7, 1)

	storeRange(t, s, 9, 15, 3) // overlapping the tail
	checkBounds(t, s, 1, 15)
	checkPresent(t, s, 8, 1)
	checkPresent(t, s, 9, 3)
	checkPresent(t, s, 15, 3)

	storeRange(t, s, 11, 16, 4) // adjacent to the tail
	checkBounds(t, s, 1, 16)
	checkPresent(t, s, 10, 3)
	checkPresent(t, s, 16, 4)
}

func TestStoreLogsRejectsBadInput(t *testing.T) {
	db := openDB(t, vfs.NewMem())
	defer db.Close()
	s := mustGroup(t, db, 0)
	storeRange(t, s, 10, 20, 1)

	cases := map[string][]*raft.Log{
		"gap after last":     entries(0, 22, 23, 1),
		"gap before first":   entries(0, 5, 8, 1),
		"not consecutive":    {entry(0, 21, 1), entry(0, 23, 1)},
		"descending":         {entry(0, 21, 1), entry(0, 20, 1)},
		"duplicate in batch": {entry(0, 21, 1), entry(0, 21, 1)},
		"index zero":         {{Index: 0, Term: 1}},
		"nil entry":          {entry(0, 21, 1), nil},
	}
	for name, logs := range cases {
		t.Run(name, func(t *testing.T) {
			if err := s.StoreLogs(logs); err == nil {
				t.Fatal("accepted")
			}
			checkBounds(t, s, 10, 20)
			checkAbsent(t, s, 21)
			if db.Err() != nil {
				t.Fatalf("rejected input latched the DB: %v", db.Err())
			}
		})
	}
	// Prepending adjacent to first is contiguous and allowed.
	storeRange(t, s, 7, 9, 1)
	checkBounds(t, s, 7, 20)
}

func TestDeleteRange(t *testing.T) {
	const first, last = 11, 30
	type step struct{ min, max uint64 }
	cases := []struct {
		name        string
		deletes     []step
		first, last uint64
		absent      []uint64 // beyond the new [first, last]
	}{
		{"prefix", []step{{11, 15}}, 16, 30, nil},
		{"prefix from below first", []step{{1, 15}}, 16, 30, nil},
		{"prefix from zero", []step{{0, 29}}, 30, 30, nil},
		{"suffix", []step{{25, 30}}, 11, 24, nil},
		{"suffix to max uint64", []step{{25, math.MaxUint64}}, 11, 24, nil},
		{"single last", []step{{30, 30}}, 11, 29, nil},
		{"single first", []step{{11, 11}}, 12, 30, nil},
		{"all exact", []step{{11, 30}}, 0, 0, nil},
		{"all wide", []step{{0, math.MaxUint64}}, 0, 0, nil},
		{"middle", []step{{15, 20}}, 11, 30, []uint64{15, 17, 20}},
		{"middle then prefix into hole", []step{{15, 20}, {11, 16}}, 21, 30, nil},
		{"middle then prefix to hole end", []step{{15, 20}, {11, 14}}, 21, 30, nil},
		{"middle then suffix into hole", []step{{15, 20}, {18, 30}}, 11, 14, nil},
		{"middle then all", []step{{15, 20}, {11, 30}}, 0, 0, nil},
		{"below first", []step{{1, 10}}, 11, 30, nil},
		{"above last", []step{{31, 100}}, 11, 30, nil},
		{"min greater than max", []step{{20, 15}}, 11, 30, nil},
		{"prefix then suffix", []step{{11, 14}, {27, 30}}, 15, 26, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := openDB(t, vfs.NewMem())
			defer db.Close()
			s := mustGroup(t, db, 3)
			storeRange(t, s, first, last, 1)
			for _, d := range tc.deletes {
				if err := s.DeleteRange(d.min, d.max); err != nil {
					t.Fatal(err)
				}
			}
			checkBounds(t, s, tc.first, tc.last)
			holes := map[uint64]bool{}
			for _, i := range tc.absent {
				holes[i] = true
			}
			for i := uint64(first - 2); i <= last+2; i++ {
				in := tc.last != 0 && i >= tc.first && i <= tc.last
				if in && !holes[i] {
					continue // checked below
				}
				checkAbsent(t, s, i)
			}
			if tc.last != 0 {
				checkPresent(t, s, tc.first, 1)
				checkPresent(t, s, tc.last, 1)
			}

			// Appending continues after the new last (or anywhere if
			// empty), as raft does after truncating a conflicting suffix.
			next := tc.last + 1
			if tc.last == 0 {
				next = 500
			}
			storeRange(t, s, next, next+2, 2)
			wantFirst := tc.first
			if tc.last == 0 {
				wantFirst = next
			}
			checkBounds(t, s, wantFirst, next+2)
			checkPresent(t, s, next+1, 2)
		})
	}
}

func TestStableStore(t *testing.T) {
	db := openDB(t, vfs.NewMem())
	defer db.Close()
	s := mustGroup(t, db, 0)

	v, err := s.Get([]byte("CurrentTerm"))
	if err == nil || err.Error() != "not found" || len(v) != 0 {
		t.Fatalf("Get missing = %q, %v; want empty, \"not found\"", v, err)
	}
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing: not ErrNotFound: %v", err)
	}
	n, err := s.GetUint64([]byte("LastVoteTerm"))
	if err == nil || err.Error() != "not found" || n != 0 {
		t.Fatalf("GetUint64 missing = %d, %v; want 0, \"not found\"", n, err)
	}

	cases := []struct {
		key, val []byte
	}{
		{[]byte("LastVoteCand"), []byte("node-2")},
		{[]byte{}, []byte("empty key")},
		{[]byte{0, 0xff}, []byte{}},
		{[]byte("big"), bytes.Repeat([]byte("x"), 1<<16)},
	}
	for _, tc := range cases {
		if err := s.Set(tc.key, tc.val); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range cases {
		got, err := s.Get(tc.key)
		if err != nil {
			t.Fatalf("Get(%q): %v", tc.key, err)
		}
		if !bytes.Equal(got, tc.val) || got == nil {
			t.Fatalf("Get(%q) = %q, want %q (non-nil)", tc.key, got, tc.val)
		}
	}

	// Get returns a copy.
	got, _ := s.Get([]byte("LastVoteCand"))
	got[0] = 'X'
	if again, _ := s.Get([]byte("LastVoteCand")); string(again) != "node-2" {
		t.Fatalf("Get result aliases storage: %q", again)
	}

	// Overwrite.
	if err := s.Set([]byte("LastVoteCand"), []byte("node-3")); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get([]byte("LastVoteCand")); string(got) != "node-3" {
		t.Fatalf("overwrite: %q", got)
	}

	for _, v := range []uint64{0, 1, 1 << 40, math.MaxUint64} {
		if err := s.SetUint64([]byte("CurrentTerm"), v); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetUint64([]byte("CurrentTerm"))
		if err != nil || got != v {
			t.Fatalf("GetUint64 = %d, %v; want %d", got, err, v)
		}
	}

	// A value that is not 8 bytes is reported, not misread.
	if _, err := s.GetUint64([]byte("LastVoteCand")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetUint64 of a 6-byte value: want ErrCorrupt, got %v", err)
	}

	// Stable keys do not show up in the log.
	checkBounds(t, s, 0, 0)
}

func TestGroupsIsolatedAndReopen(t *testing.T) {
	fs := vfs.NewMem()
	db := openDB(t, fs)
	ids := []uint16{0, 1, 256, 65534, 65535}
	ranges := map[uint16][2]uint64{0: {1, 10}, 1: {5, 7}, 256: {100, 140}, 65534: {1, 1}, 65535: {3, 20}}
	for _, id := range ids {
		s := mustGroup(t, db, id)
		r := ranges[id]
		storeRange(t, s, r[0], r[1], uint64(id)+1)
		if err := s.SetUint64([]byte("CurrentTerm"), uint64(id)+1); err != nil {
			t.Fatal(err)
		}
		if err := s.Set([]byte("LastVoteCand"), fmt.Appendf(nil, "cand-%d", id)); err != nil {
			t.Fatal(err)
		}
	}
	// Another keyspace with the first free prefix, committed through Apply.
	b := db.Pebble().NewBatch()
	if err := b.Set([]byte{FirstFreePrefix, 0, 0}, []byte("cart"), nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Apply(b); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()

	if s1, s2 := mustGroup(t, db, 1), mustGroup(t, db, 1); s1 != s2 {
		t.Fatal("Group returned two stores for one id")
	}

	check := func(db *DB) {
		t.Helper()
		for _, id := range ids {
			s := mustGroup(t, db, id)
			r := ranges[id]
			checkBounds(t, s, r[0], r[1])
			for i := r[0]; i <= r[1]; i++ {
				checkPresent(t, s, i, uint64(id)+1)
			}
			checkAbsent(t, s, r[0]-1)
			checkAbsent(t, s, r[1]+1)
			if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != uint64(id)+1 {
				t.Fatalf("group %d: CurrentTerm = %d, %v", id, v, err)
			}
			if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != fmt.Sprintf("cand-%d", id) {
				t.Fatalf("group %d: LastVoteCand = %q, %v", id, v, err)
			}
		}
		if _, err := mustGroup(t, db, 2).Get([]byte("CurrentTerm")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unused group sees a stable key: %v", err)
		}
		checkBounds(t, mustGroup(t, db, 2), 0, 0)
	}
	check(db)

	// Deleting one group's whole log leaves its neighbours alone.
	if err := mustGroup(t, db, 65534).DeleteRange(0, math.MaxUint64); err != nil {
		t.Fatal(err)
	}
	ranges[65534] = [2]uint64{0, 0}
	delete(ranges, 65534)
	ids = []uint16{0, 1, 256, 65535}
	check(db)
	checkBounds(t, mustGroup(t, db, 65534), 0, 0)

	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, fs)
	defer db.Close()
	check(db)
	checkBounds(t, mustGroup(t, db, 65534), 0, 0)
	v, closer, err := db.Pebble().Get([]byte{FirstFreePrefix, 0, 0})
	if err != nil || string(v) != "cart" {
		t.Fatalf("other keyspace: %q, %v", v, err)
	}
	_ = closer.Close()
}

func TestClosed(t *testing.T) {
	db := openDB(t, vfs.NewMem())
	s := mustGroup(t, db, 0)
	storeRange(t, s, 1, 3, 1)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	var l raft.Log
	checks := map[string]error{
		"FirstIndex":  func() error { _, err := s.FirstIndex(); return err }(),
		"LastIndex":   func() error { _, err := s.LastIndex(); return err }(),
		"GetLog":      s.GetLog(1, &l),
		"StoreLogs":   s.StoreLogs(entries(0, 4, 4, 1)),
		"DeleteRange": s.DeleteRange(1, 1),
		"Set":         s.Set([]byte("k"), []byte("v")),
		"Get":         func() error { _, err := s.Get([]byte("k")); return err }(),
		"Group":       func() error { _, err := db.Group(1); return err }(),
		"Apply":       db.Apply(nil),
	}
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
}

func TestFormatMajorVersion(t *testing.T) {
	// Tripwire: when a Pebble upgrade adds a format, decide deliberately
	// whether to adopt it (it is a one-way change for existing stores).
	if FormatMajorVersion != pebble.FormatNewest {
		t.Fatalf("FormatMajorVersion %d is no longer pebble.FormatNewest (%d): review the new formats", FormatMajorVersion, pebble.FormatNewest)
	}
	db := openDB(t, vfs.NewMem())
	defer db.Close()
	if got := db.Pebble().FormatMajorVersion(); got != FormatMajorVersion {
		t.Fatalf("store format %d, want %d", got, FormatMajorVersion)
	}
}

func TestLayoutVersionChecked(t *testing.T) {
	fs := vfs.NewMem()
	db := openDB(t, fs)
	b := db.Pebble().NewBatch()
	_ = b.Set(append([]byte{PrefixMeta}, metaLayoutKeySuffix...), []byte{99}, nil)
	if err := db.Apply(b); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open("db", Options{FS: fs}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with unknown layout: want ErrCorrupt, got %v", err)
	}
}

func TestCorruptValueInStore(t *testing.T) {
	db := openDB(t, vfs.NewMem())
	defer db.Close()
	s := mustGroup(t, db, 4)
	storeRange(t, s, 1, 3, 1)
	var k [logKeyLen]byte
	putLogKey(&k, 4, 2)
	b := db.Pebble().NewBatch()
	_ = b.Set(k[:], []byte{logValueVersion, 0, 2}, nil) // truncated
	putLogKey(&k, 4, 3)
	_ = b.Set(k[:], appendLog(nil, entry(4, 9, 1)), nil) // wrong index
	if err := db.Apply(b); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	var l raft.Log
	if err := s.GetLog(2, &l); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated value: want ErrCorrupt, got %v", err)
	}
	if err := s.GetLog(3, &l); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("misplaced value: want ErrCorrupt, got %v", err)
	}
	checkPresent(t, s, 1, 1)
}
