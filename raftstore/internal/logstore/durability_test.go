package logstore

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/hashicorp/raft"
)

// TestCrashDurability writes from several groups concurrently, takes crash
// clones of the filesystem (dropping none, some or all unsynced data) while
// writes are in flight, and checks that everything acknowledged before the
// clone survives, including deletes and stable-store writes.
func TestCrashDurability(t *testing.T) {
	for _, quiesce := range []bool{false, true} {
		for _, pct := range []int{0, 50, 100} {
			for seed := int64(1); seed <= 2; seed++ {
				if pct == 100 && seed > 1 {
					continue
				}
				name := fmt.Sprintf("inflight/unsynced=%d%%/seed=%d", pct, seed)
				if quiesce {
					name = fmt.Sprintf("quiesced/unsynced=%d%%/seed=%d", pct, seed)
				}
				t.Run(name, func(t *testing.T) { crashDurability(t, quiesce, pct, seed) })
			}
		}
	}
}

// crashDurability runs the writers, then crash-clones the filesystem either
// while they are still writing (in flight: later writes may or may not
// survive) or after they stopped (quiesced: the recovered state must equal
// the acknowledged state exactly, since every write was synced).
func crashDurability(t *testing.T, quiesce bool, unsyncedPct int, seed int64) {
	fs := vfs.NewCrashableMem()
	db := openDB(t, fs)
	const groups = 4
	// Acknowledged state per group: entries [first, last] of term 1, and the
	// last acknowledged CurrentTerm.
	var acked [groups]struct {
		first, last, term atomic.Uint64
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range uint16(groups) {
		s := mustGroup(t, db, g)
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := &acked[g]
			next := uint64(1)
			for n := 1; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				size := 1 + n%16
				if err := s.StoreLogs(entries(g, next, next+uint64(size)-1, 1)); err != nil {
					t.Error(err)
					return
				}
				next += uint64(size)
				a.last.Store(next - 1)
				if a.first.Load() == 0 {
					a.first.Store(1)
				}
				if n%5 == 0 {
					// Compact a prefix, as raft does after a snapshot.
					newFirst := (next-1)/2 + 1
					if err := s.DeleteRange(0, newFirst-1); err != nil {
						t.Error(err)
						return
					}
					a.first.Store(newFirst)
				}
				if err := s.SetUint64([]byte("CurrentTerm"), uint64(n)); err != nil {
					t.Error(err)
					return
				}
				a.term.Store(uint64(n))
			}
		}()
	}

	// Let every group get some writes and compactions acknowledged.
	deadline := time.Now().Add(10 * time.Second)
	for g := 0; g < groups; {
		if acked[g].last.Load() >= 100 && acked[g].first.Load() > 1 {
			g++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %d made no progress", g)
		}
		time.Sleep(time.Millisecond)
	}
	if quiesce {
		close(stop)
		wg.Wait()
	}
	// Snapshot what is acknowledged, then clone: everything in the snapshot
	// was synced before the clone started.
	var want [groups]struct{ first, last, term uint64 }
	for g := range want {
		want[g].first, want[g].last, want[g].term = acked[g].first.Load(), acked[g].last.Load(), acked[g].term.Load()
	}
	clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: unsyncedPct, RNG: rand.New(rand.NewPCG(uint64(seed), 0))})
	if !quiesce {
		close(stop)
		wg.Wait()
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db2 := openDB(t, clone)
	defer db2.Close()
	for g := range uint16(groups) {
		w := want[g]
		if w.last == 0 {
			t.Fatalf("group %d acknowledged nothing in time", g)
		}
		s := mustGroup(t, db2, g)
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		if quiesce && (first != w.first || last != w.last) {
			t.Fatalf("group %d: recovered [%d, %d], acknowledged [%d, %d]", g, first, last, w.first, w.last)
		}
		// In flight, later (unacknowledged) appends and prefix deletes may
		// or may not have survived, but nothing acknowledged may be undone.
		if last < w.last {
			t.Fatalf("group %d: recovered last %d < acknowledged %d", g, last, w.last)
		}
		if first < w.first {
			// A compaction acknowledged before the clone was undone.
			t.Fatalf("group %d: recovered first %d < acknowledged first %d", g, first, w.first)
		}
		for i := max(first, w.first); i <= w.last; i++ {
			checkPresent(t, s, i, 1)
		}
		for i := first; i <= last; i++ { // no holes
			checkPresent(t, s, i, 1)
		}
		term, err := s.GetUint64([]byte("CurrentTerm"))
		if quiesce && term != w.term {
			t.Fatalf("group %d: CurrentTerm %d, acknowledged %d", g, term, w.term)
		}
		if err != nil && w.term > 0 || term < w.term {
			t.Fatalf("group %d: CurrentTerm %d (%v) < acknowledged %d", g, term, err, w.term)
		}
	}
}

// walInjector fails WAL operations of the armed kinds after skip more of
// them have passed.
type walInjector struct {
	kinds map[errorfs.OpKind]bool
	armed atomic.Bool
	skip  atomic.Int64
	hits  atomic.Int64
}

func (w *walInjector) String() string { return "walInjector" }

func (w *walInjector) MaybeError(op errorfs.Op) error {
	if !w.armed.Load() || !w.kinds[op.Kind] || !strings.HasSuffix(op.Path, ".log") {
		return nil
	}
	if w.skip.Add(-1) >= 0 {
		return nil
	}
	w.hits.Add(1)
	return errorfs.ErrInjected
}

// TestFailureLatch injects WAL write or sync errors and checks that the
// failing write reports an error, that every later write fails with the
// latched error even after the disk "recovers", that reads keep working, and
// that everything acknowledged before the failure is durable.
func TestFailureLatch(t *testing.T) {
	cases := []struct {
		name  string
		kinds []errorfs.OpKind
		skip  int64
	}{
		{"sync fails at once", []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}, 0},
		{"sync fails after 5", []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}, 5},
		{"write fails after 3", []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewCrashableMem()
			inj := &walInjector{kinds: map[errorfs.OpKind]bool{}}
			for _, k := range tc.kinds {
				inj.kinds[k] = true
			}
			inj.skip.Store(tc.skip)
			db, err := Open("db", Options{FS: errorfs.Wrap(mem, inj), Logger: quietLogger{t}})
			if err != nil {
				t.Fatal(err)
			}
			s := mustGroup(t, db, 9)
			storeRange(t, s, 1, 10, 1)
			if err := s.SetUint64([]byte("CurrentTerm"), 1); err != nil {
				t.Fatal(err)
			}

			inj.armed.Store(true)
			next, ackedLast := uint64(11), uint64(10)
			var failErr error
			for range 50 {
				if failErr = s.StoreLogs(entries(9, next, next+1, 1)); failErr != nil {
					break
				}
				ackedLast = next + 1
				next += 2
			}
			if failErr == nil {
				t.Fatal("no write failed")
			}
			if inj.hits.Load() == 0 {
				t.Fatal("write failed without an injected error")
			}
			if !errors.Is(failErr, ErrFailed) || !errors.Is(failErr, errorfs.ErrInjected) {
				t.Fatalf("failing call: want ErrFailed wrapping ErrInjected, got %v", failErr)
			}
			latched := db.Err()
			if latched == nil || !errors.Is(latched, errorfs.ErrInjected) {
				t.Fatalf("Err() = %v", latched)
			}
			select {
			case <-db.Failed():
			default:
				t.Fatal("Failed() channel not closed")
			}

			// The disk "recovers": later fsyncs would succeed, but the
			// store must keep refusing.
			inj.armed.Store(false)
			emptyBatch := db.Pebble().NewBatch()
			defer emptyBatch.Close()
			refused := map[string]error{
				"StoreLogs":   s.StoreLogs(entries(9, next, next, 1)),
				"StoreLog":    s.StoreLog(entry(9, ackedLast+1, 1)),
				"DeleteRange": s.DeleteRange(1, 2),
				"Set":         s.Set([]byte("k"), []byte("v")),
				"SetUint64":   s.SetUint64([]byte("CurrentTerm"), 2),
				"Apply":       db.Apply(emptyBatch),
			}
			other := mustGroup(t, db, 10)
			refused["other group"] = other.StoreLogs(entries(10, 1, 1, 1))
			for name, err := range refused {
				if err != latched {
					t.Errorf("%s after failure: got %v, want the latched error", name, err)
				}
			}
			if db.Err() != latched {
				t.Fatal("latched error changed")
			}

			// Reads still work and the cache did not move.
			if last, _ := s.LastIndex(); last != ackedLast {
				t.Fatalf("LastIndex %d, want %d", last, ackedLast)
			}
			checkPresent(t, s, 1, 1)
			checkPresent(t, s, ackedLast, 1)

			// Close must not hang.
			done := make(chan error, 1)
			go func() { done <- db.Close() }()
			select {
			case err := <-done:
				t.Logf("Close after failure: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("Close hangs after failure")
			}

			// Everything acknowledged was synced before the failure.
			db2 := openDB(t, mem.CrashClone(vfs.CrashCloneCfg{}))
			defer db2.Close()
			s2 := mustGroup(t, db2, 9)
			last, _ := s2.LastIndex()
			if last < ackedLast {
				t.Fatalf("recovered last %d < acknowledged %d", last, ackedLast)
			}
			for i := uint64(1); i <= ackedLast; i++ {
				checkPresent(t, s2, i, 1)
			}
			if v, err := s2.GetUint64([]byte("CurrentTerm")); err != nil || v != 1 {
				t.Fatalf("CurrentTerm = %d, %v", v, err)
			}
		})
	}
}

// quietLogger routes Pebble's logs to the test log.
type quietLogger struct{ t testing.TB }

func (l quietLogger) Infof(string, ...any) {}
func (l quietLogger) Errorf(format string, args ...any) {
	l.t.Logf("pebble error: "+format, args...)
}
func (l quietLogger) Fatalf(format string, args ...any) {
	l.t.Errorf("Fatalf forwarded as Fatalf: "+format, args...)
}

// TestFatalfLatches checks the logger adapter directly: Pebble's Fatalf must
// latch (not exit) and keep the I/O error reachable via errors.Is.
func TestFatalfLatches(t *testing.T) {
	l := newLatch()
	lg := &latchLogger{latch: l, out: quietLogger{t}}
	cause := errors.New("disk on fire")
	lg.Fatalf("pebble: fatal commit error: %v", cause)
	lg.Fatalf("second: %v", errors.New("ignored"))
	err := l.get()
	if !errors.Is(err, ErrFailed) || !errors.Is(err, cause) || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("latched %v", err)
	}
	var _ raft.LogStore = (*Store)(nil)
}

// TestFailureLatchConcurrent fails the WAL while several groups commit
// concurrently (Pebble groups their fsyncs): every writer must end up with
// the latched error, nothing may panic out of the store, and Close must
// return.
func TestFailureLatchConcurrent(t *testing.T) {
	// Entries are small so that no commit in flight at the failure fills a
	// WAL block or the memtable: Pebble would then panic or abort the process
	// (see the package comment), which cannot be tested in-process.
	for run := range 5 {
		t.Run(fmt.Sprint(run), func(t *testing.T) {
			inj := &walInjector{kinds: map[errorfs.OpKind]bool{errorfs.OpFileSync: true, errorfs.OpFileSyncData: true, errorfs.OpFileSyncTo: true, errorfs.OpFileWrite: true}}
			inj.skip.Store(int64(10 + run*7))
			mem := vfs.NewCrashableMem()
			db, err := Open("db", Options{FS: errorfs.Wrap(mem, inj), Logger: quietLogger{t}})
			if err != nil {
				t.Fatal(err)
			}
			const groups = 6
			var acked [groups]atomic.Uint64
			var wg sync.WaitGroup
			inj.armed.Store(true)
			for g := range uint16(groups) {
				s := mustGroup(t, db, g)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := uint64(1); i < 10000; i++ {
						if err := s.StoreLog(entry(g, i, 1)); err != nil {
							if !errors.Is(err, ErrFailed) {
								t.Errorf("group %d: %v", g, err)
							}
							return
						}
						acked[g].Store(i)
					}
					t.Errorf("group %d never failed", g)
				}()
			}
			wg.Wait()
			if db.Err() == nil {
				t.Fatal("not latched")
			}
			done := make(chan error, 1)
			go func() { done <- db.Close() }()
			select {
			case err := <-done:
				t.Logf("Close: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("Close hangs after failure")
			}
			db2 := openDB(t, mem.CrashClone(vfs.CrashCloneCfg{}))
			defer db2.Close()
			for g := range uint16(groups) {
				s := mustGroup(t, db2, g)
				for i := uint64(1); i <= acked[g].Load(); i++ {
					checkPresent(t, s, i, 1)
				}
			}
		})
	}
}
