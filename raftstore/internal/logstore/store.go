package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// Compile-time checks of the interfaces raft consumes.
var (
	_ raft.LogStore          = (*Store)(nil)
	_ raft.StableStore       = (*Store)(nil)
	_ raft.MonotonicLogStore = (*Store)(nil)
)

// maxRetainedScratch bounds the encode buffer kept between StoreLogs calls,
// so one huge entry does not pin its size in memory for the store's life.
const maxRetainedScratch = 64 << 10

// Store implements raft.LogStore, raft.StableStore and raft.MonotonicLogStore
// for one Raft group of a DB. It is safe for concurrent use (raft appends
// from its main loop while its snapshot goroutine truncates the log prefix
// and replication goroutines read entries). Obtain it with DB.Group.
type Store struct {
	db *DB
	id uint16

	// logLower and logUpper bound every log iterator to this group
	// ([PrefixLog][id], [PrefixLog][id+1]): an unbounded iterator would walk
	// into other groups' logs or other keyspaces.
	logLower, logUpper []byte

	// wmu serializes this group's log writes so the first/last cache is
	// updated in commit order. It also guards scratch.
	wmu     sync.Mutex
	scratch []byte

	// mu guards first and last: the indexes of the first and last stored
	// entries, both 0 when the log is empty. Kept as one pair under a mutex
	// so readers never see a half-updated range.
	mu          sync.Mutex
	first, last uint64
}

func newStore(db *DB, id uint16) *Store {
	lower := groupPrefix(PrefixLog, id)
	return &Store{
		db:       db,
		id:       id,
		logLower: lower,
		logUpper: prefixEnd(lower),
	}
}

// bounds returns the cached first and last index.
func (s *Store) bounds() (first, last uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first, s.last
}

func (s *Store) setBounds(first, last uint64) {
	s.mu.Lock()
	s.first, s.last = first, last
	s.mu.Unlock()
}

// acquire takes the DB's lifetime lock shared; the caller must call
// s.db.life.RUnlock when it returns nil.
func (s *Store) acquire() error {
	s.db.life.RLock()
	if s.db.closed {
		s.db.life.RUnlock()
		return ErrClosed
	}
	return nil
}

// acquireWrite is acquire plus the failure latch check, so that a failed DB
// refuses writes before doing any work.
func (s *Store) acquireWrite() error {
	if err := s.acquire(); err != nil {
		return err
	}
	if err := s.db.latch.get(); err != nil {
		s.db.life.RUnlock()
		return err
	}
	return nil
}

// loadBounds reads the first and last index from disk.
func (s *Store) loadBounds() (first, last uint64, err error) {
	it, err := s.db.pdb.NewIter(&pebble.IterOptions{LowerBound: s.logLower, UpperBound: s.logUpper})
	if err != nil {
		return 0, 0, err
	}
	if it.First() {
		if first, err = logKeyIndex(it.Key(), s.id); err == nil && it.Last() {
			last, err = logKeyIndex(it.Key(), s.id)
		}
	}
	err = errors.Join(err, it.Error(), it.Close())
	if err != nil {
		return 0, 0, err
	}
	if first > last {
		return 0, 0, fmt.Errorf("%w: first index %d > last index %d", ErrCorrupt, first, last)
	}
	return first, last, nil
}

// seekIndex returns the index of the first entry >= index (forward) or the
// last entry < index (!forward), within this group; ok is false if none.
func (s *Store) seekIndex(index uint64, forward bool) (found uint64, ok bool, err error) {
	it, err := s.db.pdb.NewIter(&pebble.IterOptions{LowerBound: s.logLower, UpperBound: s.logUpper})
	if err != nil {
		return 0, false, err
	}
	var k [logKeyLen]byte
	putLogKey(&k, s.id, index)
	if forward {
		ok = it.SeekGE(k[:])
	} else {
		ok = it.SeekLT(k[:])
	}
	if ok {
		found, err = logKeyIndex(it.Key(), s.id)
	}
	err = errors.Join(err, it.Error(), it.Close())
	if err != nil {
		return 0, false, err
	}
	return found, ok, nil
}

// FirstIndex returns the index of the first stored entry, 0 if the log is
// empty. It is served from memory.
func (s *Store) FirstIndex() (uint64, error) {
	if err := s.acquire(); err != nil {
		return 0, err
	}
	defer s.db.life.RUnlock()
	first, _ := s.bounds()
	return first, nil
}

// LastIndex returns the index of the last stored entry, 0 if the log is
// empty. It is served from memory.
func (s *Store) LastIndex() (uint64, error) {
	if err := s.acquire(); err != nil {
		return 0, err
	}
	defer s.db.life.RUnlock()
	_, last := s.bounds()
	return last, nil
}

// GetLog reads the entry at index into l, returning raft.ErrLogNotFound if
// it is not stored. Indexes outside [FirstIndex, LastIndex] are answered
// from the cache without a disk read.
func (s *Store) GetLog(index uint64, l *raft.Log) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.db.life.RUnlock()

	if first, last := s.bounds(); last == 0 || index < first || index > last {
		return raft.ErrLogNotFound
	}
	var k [logKeyLen]byte
	putLogKey(&k, s.id, index)
	val, closer, err := s.db.pdb.Get(k[:])
	if errors.Is(err, pebble.ErrNotFound) {
		// Only reachable for a hole left by a DeleteRange in the middle of
		// the log, which raft itself never issues.
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("logstore: group %d: get log %d: %w", s.id, index, err)
	}
	err = decodeLog(val, l) // copies out of val
	_ = closer.Close()
	if err == nil && l.Index != index {
		err = fmt.Errorf("%w: entry under index %d claims index %d", ErrCorrupt, index, l.Index)
	}
	if err != nil {
		*l = raft.Log{}
		return fmt.Errorf("logstore: group %d: log %d: %w", s.id, index, err)
	}
	return nil
}

// StoreLog stores one entry; see StoreLogs.
func (s *Store) StoreLog(l *raft.Log) error {
	return s.StoreLogs([]*raft.Log{l})
}

// StoreLogs stores entries with consecutive indexes as one batch, synced to
// disk before it returns nil. Because the store is monotonic the entries
// must also be adjacent to (or overlap) the stored range: a batch that would
// leave a gap is rejected, since a gap means the caller lost track of the
// log. Entries overlapping stored ones overwrite them. Index 0 is invalid
// (0 means "empty" in FirstIndex/LastIndex).
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if err := s.acquireWrite(); err != nil {
		return err
	}
	defer s.db.life.RUnlock()
	if len(logs) == 0 {
		return nil
	}

	size := 0
	for i, l := range logs {
		switch {
		case l == nil:
			return fmt.Errorf("logstore: group %d: StoreLogs: entry %d is nil", s.id, i)
		case l.Index == 0:
			return fmt.Errorf("logstore: group %d: StoreLogs: index 0 is invalid", s.id)
		case i > 0 && l.Index != logs[i-1].Index+1:
			return fmt.Errorf("logstore: group %d: StoreLogs: indexes not consecutive (%d after %d)",
				s.id, l.Index, logs[i-1].Index)
		}
		size += logKeyLen + maxLogValueOverhead + len(l.Data) + len(l.Extensions) + 16 // + batch record header
	}
	lo, hi := logs[0].Index, logs[len(logs)-1].Index

	s.wmu.Lock()
	defer s.wmu.Unlock()

	first, last := s.bounds()
	if last != 0 && (lo-1 > last || hi < first-1) { // lo, first >= 1
		return fmt.Errorf("logstore: group %d: StoreLogs [%d, %d] would leave a gap next to stored [%d, %d]",
			s.id, lo, hi, first, last)
	}

	b := s.db.pdb.NewBatchWithSize(size)
	defer b.Close()
	var k [logKeyLen]byte
	for _, l := range logs {
		putLogKey(&k, s.id, l.Index)
		s.scratch = appendLog(s.scratch[:0], l)
		if err := b.Set(k[:], s.scratch, nil); err != nil { // Set copies
			return fmt.Errorf("logstore: group %d: batch: %w", s.id, err)
		}
	}
	if cap(s.scratch) > maxRetainedScratch {
		s.scratch = nil
	}
	if err := s.db.commitLocked(b); err != nil {
		return err
	}

	if last == 0 {
		first, last = lo, hi
	} else {
		first, last = min(first, lo), max(last, hi)
	}
	s.setBounds(first, last)
	return nil
}

// DeleteRange deletes the entries with indexes in [min, max] (inclusive) as
// one synced range tombstone, so deleting a long prefix costs one write. raft
// uses it for prefixes (compaction after a snapshot), suffixes (conflicting
// entries on a follower) and the whole log (after restoring a snapshot,
// since the store is monotonic). A range that does not overlap the stored
// entries is a no-op.
func (s *Store) DeleteRange(min, max uint64) error {
	if err := s.acquireWrite(); err != nil {
		return err
	}
	defer s.db.life.RUnlock()
	if min > max {
		return nil
	}

	s.wmu.Lock()
	defer s.wmu.Unlock()

	first, last := s.bounds()
	if last == 0 || max < first || min > last {
		return nil
	}

	var lo, hi [logKeyLen]byte
	putLogKey(&lo, s.id, min)
	end := s.logUpper
	if max < math.MaxUint64 {
		putLogKey(&hi, s.id, max+1)
		end = hi[:]
	}
	b := s.db.pdb.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(lo[:], end, nil); err != nil {
		return fmt.Errorf("logstore: group %d: batch: %w", s.id, err)
	}
	if err := s.db.commitLocked(b); err != nil {
		return err
	}

	// Recompute the ends that moved from disk rather than assuming the log
	// is dense: after a (non-raft) delete in the middle, max+1 may itself be
	// missing.
	switch {
	case min <= first && max >= last:
		first, last = 0, 0
	case min <= first:
		next, ok, err := s.seekIndex(max+1, true)
		if err == nil && !ok {
			err = fmt.Errorf("%w: no entry after %d although last is %d", ErrCorrupt, max, last)
		}
		if err != nil {
			// The delete is durable but the cache cannot be trusted.
			return s.db.latch.set(fmt.Errorf("group %d: reload first index after DeleteRange: %w", s.id, err))
		}
		first = next
	case max >= last:
		prev, ok, err := s.seekIndex(min, false)
		if err == nil && !ok {
			err = fmt.Errorf("%w: no entry before %d although first is %d", ErrCorrupt, min, first)
		}
		if err != nil {
			return s.db.latch.set(fmt.Errorf("group %d: reload last index after DeleteRange: %w", s.id, err))
		}
		last = prev
	}
	s.setBounds(first, last)
	return nil
}

// IsMonotonic reports true: this store never holds gaps (StoreLogs rejects
// them), so raft deletes the whole log after restoring a snapshot instead of
// relying on a gap to signal the discontinuity.
func (s *Store) IsMonotonic() bool {
	return true
}

// Set stores val under key in this group's stable keyspace, synced.
func (s *Store) Set(key, val []byte) error {
	if err := s.acquireWrite(); err != nil {
		return err
	}
	defer s.db.life.RUnlock()
	b := s.db.pdb.NewBatch()
	defer b.Close()
	if err := b.Set(stableKey(s.id, key), val, nil); err != nil {
		return fmt.Errorf("logstore: group %d: batch: %w", s.id, err)
	}
	return s.db.commitLocked(b)
}

// Get returns a copy of the value stored under key, or (nil, ErrNotFound)
// whose text is exactly "not found", as raft requires on a fresh node. A key
// stored with an empty value returns a non-nil empty slice.
func (s *Store) Get(key []byte) ([]byte, error) {
	if err := s.acquire(); err != nil {
		return nil, err
	}
	defer s.db.life.RUnlock()
	val, closer, err := s.db.pdb.Get(stableKey(s.id, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("logstore: group %d: get %q: %w", s.id, key, err)
	}
	// val is only valid until the closer is closed.
	out := append(make([]byte, 0, len(val)), val...)
	_ = closer.Close()
	return out, nil
}

// SetUint64 stores val as 8 big-endian bytes under key, synced.
func (s *Store) SetUint64(key []byte, val uint64) error {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], val)
	return s.Set(key, buf[:])
}

// GetUint64 returns the value SetUint64 stored under key, or
// (0, ErrNotFound) whose text is exactly "not found".
func (s *Store) GetUint64(key []byte) (uint64, error) {
	val, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(val) != 8 {
		return 0, fmt.Errorf("logstore: group %d: %q: %w: %d-byte value is not a uint64", s.id, key, ErrCorrupt, len(val))
	}
	return binary.BigEndian.Uint64(val), nil
}
