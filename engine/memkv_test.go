package engine

import (
	"bytes"
	"maps"
	"slices"
	"sort"

	"github.com/holdfast/holdfast/raftstore"
)

// memKV is an in-memory raftstore.KV for tests.
type memKV struct{ m map[string][]byte }

func newMemKV() *memKV { return &memKV{m: map[string][]byte{}} }

func (kv *memKV) Get(k []byte) ([]byte, bool) {
	v, ok := kv.m[string(k)]
	return bytes.Clone(v), ok
}

func scanMap(m map[string][]byte, lo, hi []byte, f func(k, v []byte) bool) {
	keys := slices.Collect(maps.Keys(m))
	sort.Strings(keys)
	for _, k := range keys {
		if k < string(lo) || (hi != nil && k >= string(hi)) {
			continue
		}
		if !f([]byte(k), m[k]) {
			return
		}
	}
}

func (kv *memKV) Scan(lo, hi []byte, f func(k, v []byte) bool) { scanMap(kv.m, lo, hi, f) }
func (kv *memKV) Batch() raftstore.KVBatch {
	return &memBatch{kv: kv, m: maps.Clone(kv.m)}
}
func (kv *memKV) View() raftstore.KVView { return &memBatch{m: maps.Clone(kv.m)} }

// memBatch is a copy-on-write batch: Commit swaps it in.
type memBatch struct {
	kv *memKV
	m  map[string][]byte
	n  int
}

func (b *memBatch) Get(k []byte) ([]byte, bool) {
	v, ok := b.m[string(k)]
	return bytes.Clone(v), ok
}
func (b *memBatch) Scan(lo, hi []byte, f func(k, v []byte) bool) { scanMap(b.m, lo, hi, f) }
func (b *memBatch) Set(k, v []byte)                              { b.m[string(k)] = bytes.Clone(v); b.n += len(k) + len(v) }
func (b *memBatch) Delete(k []byte)                              { delete(b.m, string(k)) }
func (b *memBatch) DeleteAll()                                   { clear(b.m) }
func (b *memBatch) Len() int                                     { return b.n }
func (b *memBatch) Close()                                       {}
func (b *memBatch) Commit() error {
	b.kv.m = b.m
	b.m = maps.Clone(b.m)
	return nil
}
