// Package logstore implements hashicorp/raft's LogStore, StableStore and
// MonotonicLogStore on a Pebble v2 database that several Raft groups (and
// other keyspaces) share.
//
// Durability rules, all of which exist because holdfast must never lose an
// acknowledged write:
//
//   - Every write (StoreLogs, DeleteRange, Set, SetUint64, DB.Apply) is one
//     Pebble batch committed with pebble.Sync, so it is on disk when the call
//     returns nil.
//   - The first storage failure is latched: the DB then refuses every later
//     write with the same error (DB.Err), because after a failed fsync a later
//     fsync may succeed without the earlier data having reached the disk.
//     Pebble reports WAL write/sync failures not as an error from Apply but
//     through Logger.Fatalf (which by default calls os.Exit); this package
//     installs a logger that turns Fatalf into the latch instead, and checks
//     the latch after every commit.
//     The filesystem is also wrapped so that any failed write or sync of any
//     Pebble file latches at once, before Pebble releases the waiting commits.
//   - Reads keep working after a failure so the node can step down and shut
//     down cleanly, but a node whose DB.Err is non-nil must stop serving.
//   - Commits already inside Pebble when the WAL fails are not covered by the
//     latch: Pebble panics if such a commit reaches the failed WAL writer,
//     and aborts the process (an unrecoverable "unlock of unlocked mutex"
//     fatal error) if it has to rotate the failed WAL. Panics are not
//     recovered here because Pebble may still hold its commit mutex. Both
//     are fail-stop and lose nothing acknowledged: every acknowledged write
//     was synced before the failure.
//
// Key layout and the key prefixes reserved for this package are documented
// at PrefixMeta, PrefixLog, PrefixStable and FirstFreePrefix.
package logstore

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// FormatMajorVersion is the Pebble on-disk format new stores are created with
// and existing stores are ratcheted to on Open. It is pinned by name rather
// than pebble.FormatNewest so that a Pebble upgrade never silently makes a
// store unreadable by the previous binary; it is the newest non-experimental
// format of pebble v2.1.x (it includes WAL sync chunks, which let WAL replay
// tell a torn tail from corruption). Raising it is a deliberate, one-way
// decision.
const FormatMajorVersion = pebble.FormatValueSeparation

const (
	// defaultCacheBytes is the block cache size when Options.CacheBytes is 0.
	defaultCacheBytes = 64 << 20

	// memTableBytes is larger than Pebble's 4 MiB default: Raft logs are
	// written once, read back mostly while still recent (followers catching
	// up, FSM apply) and deleted in prefixes after snapshots, so a bigger
	// memtable serves more reads from memory, produces fewer L0 files, and
	// often lets a whole log segment die before it is ever compacted.
	memTableBytes = 64 << 20
	// memTableStopWritesThreshold allows three full memtables to queue for
	// flushing before writes stall, absorbing bursts without a Raft-visible
	// latency spike (bounded memory: 4 x 64 MiB).
	memTableStopWritesThreshold = 4
	// l0StopWritesThreshold is raised from Pebble's default 12: a write stall
	// turns into Raft election timeouts, which cost more than the extra read
	// amplification of a deeper L0 while compactions catch up.
	l0StopWritesThreshold = 24
	// bloomBitsPerKey gives roughly a 1% false positive rate; GetLog is a
	// point lookup and followers catching up read from sstables.
	bloomBitsPerKey = 10
	// maxCompactionConcurrency lets Pebble add compactions when L0 grows.
	maxCompactionConcurrency = 3
)

// Options configures Open. Zero values mean the documented defaults.
type Options struct {
	// FS is the filesystem; nil means the OS filesystem (vfs.Default). Tests
	// pass vfs.NewMem(), vfs.NewCrashableMem() or an errorfs wrapper.
	FS vfs.FS
	// CacheBytes is the Pebble block cache size; 0 means 64 MiB.
	CacheBytes int64
	// Logger receives Pebble's own log messages; nil means a quiet default
	// that drops informational messages and writes errors to the standard
	// library logger. Pebble's Fatalf calls are never forwarded as Fatalf
	// (which would exit the process): they latch the DB failed (see DB.Err)
	// and are forwarded as Errorf.
	Logger pebble.Logger
}

// DB is one Pebble database holding the logs and stable state of one or more
// Raft groups, and possibly other keyspaces (see Pebble).
type DB struct {
	pdb   *pebble.DB
	latch *latch

	// life guards pdb against use after Close: operations hold it shared,
	// Close holds it exclusively, because Pebble panics when used after
	// Close.
	life   sync.RWMutex
	closed bool

	groupsMu sync.Mutex
	groups   map[uint16]*Store
}

// Open opens (creating if needed) the database in dir.
func Open(dir string, opts Options) (*DB, error) {
	fs := opts.FS
	if fs == nil {
		fs = vfs.Default
	}
	cacheBytes := opts.CacheBytes
	if cacheBytes <= 0 {
		cacheBytes = defaultCacheBytes
	}

	db := &DB{
		latch:  newLatch(),
		groups: make(map[uint16]*Store),
	}
	logger := &latchLogger{latch: db.latch, out: opts.Logger}

	cache := pebble.NewCache(cacheBytes)
	// The DB takes its own reference; ours is dropped when Open returns.
	defer cache.Unref()

	po := &pebble.Options{
		FS:                          &latchFS{FS: fs, latch: db.latch},
		Cache:                       cache,
		FormatMajorVersion:          FormatMajorVersion,
		Logger:                      logger,
		MemTableSize:                memTableBytes,
		MemTableStopWritesThreshold: memTableStopWritesThreshold,
		L0StopWritesThreshold:       l0StopWritesThreshold,
		CompactionConcurrencyRange: func() (int, int) {
			return 1, maxCompactionConcurrency
		},
		EventListener: &pebble.EventListener{
			// A background error is a failed flush or compaction (write
			// or sync of an sstable or the MANIFEST) or a read error found
			// while collecting table statistics. Pebble retries flushes, so
			// some of these are recoverable, but on a log store that must
			// not lose acknowledged data a misbehaving disk is a reason to
			// stop accepting writes and let the other replicas carry on.
			BackgroundError: func(err error) {
				db.latch.set(fmt.Errorf("pebble background error: %w", err))
				logger.Errorf("background error (writes now refused): %v", err)
			},
			DiskSlow: func(info pebble.DiskSlowInfo) {
				logger.Errorf("%s", info)
			},
			WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
				logger.Errorf("%s", info)
			},
		},
	}
	// L1+ inherit L0's filter policy (pebble.LevelOptions.EnsureL1PlusDefaults).
	po.Levels[0].FilterPolicy = bloom.FilterPolicy(bloomBitsPerKey)

	pdb, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("logstore: open %s: %w", dir, err)
	}
	db.pdb = pdb
	if err := db.latch.get(); err != nil {
		// WAL replay or the format ratchet hit an I/O error that Pebble
		// only logged.
		_ = pdb.Close()
		return nil, err
	}
	if err := db.checkLayout(); err != nil {
		_ = pdb.Close()
		return nil, err
	}
	return db, nil
}

// checkLayout verifies (or, on a new database, records) the key layout
// version, so a future incompatible layout fails loudly here.
func (db *DB) checkLayout() error {
	key := append([]byte{PrefixMeta}, metaLayoutKeySuffix...)
	val, closer, err := db.pdb.Get(key)
	switch {
	case err == nil:
		ok := bytes.Equal(val, []byte{layoutVersion})
		got := append([]byte(nil), val...)
		_ = closer.Close()
		if !ok {
			return fmt.Errorf("%w: unsupported key layout version %x (want %d)", ErrCorrupt, got, layoutVersion)
		}
		return nil
	case errors.Is(err, pebble.ErrNotFound):
		b := db.pdb.NewBatch()
		defer b.Close()
		if err := b.Set(key, []byte{layoutVersion}, nil); err != nil {
			return err
		}
		return db.commitLocked(b)
	default:
		return fmt.Errorf("logstore: read layout version: %w", err)
	}
}

// Close closes the database. Stores obtained from Group return ErrClosed
// afterwards. Close waits for in-flight operations.
func (db *DB) Close() error {
	db.life.Lock()
	defer db.life.Unlock()
	if db.closed {
		return ErrClosed
	}
	db.closed = true
	if err := db.pdb.Close(); err != nil {
		return fmt.Errorf("logstore: close: %w", err)
	}
	return nil
}

// Err returns the latched storage failure, or nil while the DB is healthy.
// Once non-nil it never changes and every write returns it: the node must
// stop serving writes (and report this error as the reason).
func (db *DB) Err() error {
	return db.latch.get()
}

// Failed returns a channel that is closed when the DB latches a storage
// failure, so a node can react at once instead of polling Err.
func (db *DB) Failed() <-chan struct{} {
	return db.latch.failed
}

// Pebble returns the underlying Pebble database for other keyspaces. Users
// must not close it, must keep their keys' first byte >= FirstFreePrefix
// (bytes below are reserved for Raft logs and stable state), and should
// commit through DB.Apply: Pebble's own Apply returns nil even when the WAL
// write or fsync failed (it reports that only through the logger), and
// bypasses the failure latch.
func (db *DB) Pebble() *pebble.DB {
	return db.pdb
}

// Apply commits b synced (pebble.Sync) through the failure latch: it refuses
// the write if the DB has failed and returns an error if this or any
// concurrent commit hit a storage failure. b must have been created from
// Pebble(); the caller still closes it.
func (db *DB) Apply(b *pebble.Batch) error {
	db.life.RLock()
	defer db.life.RUnlock()
	if db.closed {
		return ErrClosed
	}
	return db.commitLocked(b)
}

// ApplyNoSync commits b without waiting for an fsync, through the same
// failure check as Apply. For state that is rebuilt from the synced Raft log
// after a crash (the state machine's own keyspace), never for the log.
func (db *DB) ApplyNoSync(b *pebble.Batch) error {
	db.life.RLock()
	defer db.life.RUnlock()
	if db.closed {
		return ErrClosed
	}
	if err := db.latch.get(); err != nil {
		return err
	}
	if err := db.pdb.Apply(b, pebble.NoSync); err != nil {
		return fmt.Errorf("logstore: commit: %w", err)
	}
	return db.latch.get()
}

// commitLocked commits b with pebble.Sync. The caller holds db.life (shared)
// and has checked db.closed.
func (db *DB) commitLocked(b *pebble.Batch) error {
	if err := db.latch.get(); err != nil {
		return err
	}
	if err := db.pdb.Apply(b, pebble.Sync); err != nil {
		// Errors Pebble returns here are rejections before anything was
		// written (read-only DB, oversized batch): not a storage failure.
		// I/O errors never come back this way; they are latched by
		// latchFS and latchLogger.
		return fmt.Errorf("logstore: commit: %w", err)
	}
	// A WAL write or fsync failure is latched by latchFS on Pebble's WAL
	// goroutine before the waiting commits are released, and reported to
	// this goroutine through Logger.Fatalf (latchLogger) while Apply returns
	// nil, so checking the latch here catches it. A failure latched by a
	// concurrent commit is also reported: this commit's outcome is then
	// unknowable from here, and raft treats a failed StoreLogs as "not
	// stored".
	return db.latch.get()
}

// Group returns the store of Raft group id (0..65535). The same *Store is
// returned for the same id, because the store caches its first and last
// index and two caches of one group would diverge. The first call for a group
// reads its first and last index from disk.
func (db *DB) Group(id uint16) (*Store, error) {
	db.life.RLock()
	defer db.life.RUnlock()
	if db.closed {
		return nil, ErrClosed
	}
	db.groupsMu.Lock()
	defer db.groupsMu.Unlock()
	if s, ok := db.groups[id]; ok {
		return s, nil
	}
	s := newStore(db, id)
	first, last, err := s.loadBounds()
	if err != nil {
		return nil, fmt.Errorf("logstore: group %d: %w", id, err)
	}
	s.first, s.last = first, last
	db.groups[id] = s
	return s, nil
}

// latchLogger adapts Pebble's logging: Fatalf latches the failure instead of
// exiting, because Pebble calls it for WAL write/sync failures that the
// caller of Apply must learn about as an error.
type latchLogger struct {
	latch *latch
	out   pebble.Logger // nil: quiet default
}

// Infof drops informational messages unless a Logger was configured; Pebble
// logs every flush and compaction at this level.
func (l *latchLogger) Infof(format string, args ...any) {
	if l.out != nil {
		l.out.Infof(format, args...)
	}
}

// Errorf forwards errors to the configured logger or the standard logger.
func (l *latchLogger) Errorf(format string, args ...any) {
	if l.out != nil {
		l.out.Errorf(format, args...)
		return
	}
	log.Printf("pebble: "+format, args...)
}

// Fatalf latches the DB failed and logs the message as an error. It must not
// block: Pebble may call it with internal mutexes held.
func (l *latchLogger) Fatalf(format string, args ...any) {
	l.latch.set(newFatalError(format, args...))
	l.Errorf("FATAL (storage latched failed, writes refused): "+format, args...)
}
