package raftstore

import (
	"bytes"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2"

	"github.com/holdfast/holdfast/raftstore/internal/logstore"
)

// KVPrefix is the first key byte of the state machine's keyspace in the
// node's Pebble store; the log store reserves the bytes below it.
const KVPrefix = logstore.FirstFreePrefix

// KVReader reads the state machine's keyspace. Keys passed in and out are
// relative to the keyspace (without KVPrefix).
type KVReader interface {
	// Get returns a copy of key's value.
	Get(key []byte) ([]byte, bool)
	// Scan calls f for keys in [lo, hi) in order until f returns false;
	// hi nil means the end of the keyspace. f must not retain its slices.
	Scan(lo, hi []byte, f func(key, value []byte) bool)
}

// KVBatch is the writes of one log entry: reads through it see them.
type KVBatch interface {
	KVReader
	Set(key, value []byte)
	Delete(key []byte)
	// DeleteAll removes the whole keyspace (restore).
	DeleteAll()
	// Commit makes the writes visible. It does not wait for an fsync: the
	// keyspace is rebuilt from the synced Raft log after a crash.
	Commit() error
	// Len is the size of the batch in bytes.
	Len() int
	Close()
}

// KVView is a consistent point-in-time read view; Close releases it.
type KVView interface {
	KVReader
	Close()
}

// KV is the state machine's keyspace in the node's Pebble store. The state
// machine writes it only from Apply and Restore (one batch per entry) and
// may read it anywhere.
type KV interface {
	KVReader
	Batch() KVBatch
	// View pins the current state (a Pebble snapshot): snapshots stream
	// from it while Apply goes on.
	View() KVView
}

// KVStateMachine is a StateMachine that keeps part of its state in the KV.
// raftstore calls OpenKV once, before Raft starts; the keyspace may then hold
// state from before a restart, which the state machine must discard: Raft
// restores the latest snapshot and replays the log after it.
type KVStateMachine interface {
	StateMachine
	OpenKV(kv KV) error
}

type pebbleKV struct{ db *logstore.DB }

func withPrefix(key []byte) []byte {
	k := make([]byte, 1+len(key))
	k[0] = KVPrefix
	copy(k[1:], key)
	return k
}

func bounds(lo, hi []byte) *pebble.IterOptions {
	upper := []byte{KVPrefix + 1}
	if hi != nil {
		upper = withPrefix(hi)
	}
	return &pebble.IterOptions{LowerBound: withPrefix(lo), UpperBound: upper}
}

type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

func get(r reader, key []byte) ([]byte, bool) {
	v, c, err := r.Get(withPrefix(key))
	if err != nil {
		return nil, false // ErrNotFound; other read errors surface as a missing key and the latched store
	}
	out := bytes.Clone(v)
	c.Close()
	if out == nil {
		out = []byte{}
	}
	return out, true
}

func scan(r reader, lo, hi []byte, f func(k, v []byte) bool) {
	it, err := r.NewIter(bounds(lo, hi))
	if err != nil {
		return
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil || !f(it.Key()[1:], v) {
			return
		}
	}
}

func (kv *pebbleKV) Get(key []byte) ([]byte, bool) { return get(kv.db.Pebble(), key) }
func (kv *pebbleKV) Scan(lo, hi []byte, f func(k, v []byte) bool) {
	scan(kv.db.Pebble(), lo, hi, f)
}

func (kv *pebbleKV) Batch() KVBatch {
	return &pebbleBatch{db: kv.db, b: kv.db.Pebble().NewIndexedBatch()}
}

func (kv *pebbleKV) View() KVView { return &pebbleView{s: kv.db.Pebble().NewSnapshot()} }

type pebbleView struct{ s *pebble.Snapshot }

func (v *pebbleView) Get(key []byte) ([]byte, bool) { return get(v.s, key) }
func (v *pebbleView) Scan(lo, hi []byte, f func(k, v []byte) bool) {
	scan(v.s, lo, hi, f)
}
func (v *pebbleView) Close() { v.s.Close() }

type pebbleBatch struct {
	db *logstore.DB
	b  *pebble.Batch
}

func (b *pebbleBatch) Get(key []byte) ([]byte, bool) { return get(b.b, key) }
func (b *pebbleBatch) Scan(lo, hi []byte, f func(k, v []byte) bool) {
	scan(b.b, lo, hi, f)
}
func (b *pebbleBatch) Set(key, value []byte) { b.b.Set(withPrefix(key), value, nil) }
func (b *pebbleBatch) Delete(key []byte)     { b.b.Delete(withPrefix(key), nil) }
func (b *pebbleBatch) DeleteAll()            { b.b.DeleteRange([]byte{KVPrefix}, []byte{KVPrefix + 1}, nil) }
func (b *pebbleBatch) Len() int              { return b.b.Len() }
func (b *pebbleBatch) Close()                { b.b.Close() }
func (b *pebbleBatch) Commit() error {
	if b.b.Empty() {
		return nil
	}
	if err := b.db.ApplyNoSync(b.b); err != nil {
		return fmt.Errorf("raftstore: state machine write: %w", err)
	}
	return nil
}
