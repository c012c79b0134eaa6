package raftstore_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holdfast/holdfast/cart"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

// TestMillionIdleCarts is docs/design.md's claim for carts: "millions of
// idle carts cost disk, not RAM". One million carts are created (a tenth
// of them with a line) through Propose on a one-node group, with a Raft
// snapshot part way, so a restart both restores a snapshot and replays
// the log after it. The node is closed and reopened on the same data
// directory; once the last cart is readable the process's resident set
// must stay under 1 GiB, and cart reads from the replica must stay fast.
//
// It logs the creation and restart times, RSS (now and peak) and the read
// latency distribution.
func TestMillionIdleCarts(t *testing.T) {
	const (
		total      = 1_000_000
		snapshotAt = 600_000 // creates before the forced snapshot
		proposers  = 256
		lineEvery  = 10 // every tenth cart gets a line
		sampleSize = 1000
		rssLimit   = 1 << 30
	)
	dir, addr := t.TempDir(), freeAddr(t)

	n, m := openScale(t, dir, addr, 30*time.Second)
	closed := false
	defer func() {
		if !closed {
			n.Close()
		}
	}()

	type lined struct {
		id  string
		sku string
		qty int64
	}
	var (
		next     atomic.Int64
		mu       sync.Mutex
		sample   []lined // carts with a line, checked after the restart
		failed   atomic.Value
		entries0 = n.Status().LastIndex
	)
	create := func(upTo int64) {
		var wg sync.WaitGroup
		for range proposers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := context.Background()
				for failed.Load() == nil {
					i := next.Add(1)
					if i > upTo {
						return
					}
					c := cart.Command{Kind: cart.KindCreate, Owner: "user:" + strconv.FormatInt(i, 10)}
					res, err := n.Propose(ctx, c.AppendEncode(nil))
					if err != nil {
						failed.Store(fmt.Sprintf("create %d: %v", i, err))
						return
					}
					r := res.(cart.Result)
					if r.Err != nil || r.Cart == nil {
						failed.Store(fmt.Sprintf("create %d: %v", i, r.Err))
						return
					}
					if i%lineEvery != 0 {
						continue
					}
					l := lined{id: r.Cart.ID, sku: "sku-" + strconv.FormatInt(i%997, 10), qty: 1 + i%3}
					a := cart.Command{Kind: cart.KindAddLine, Cart: l.id, Line: cart.LineInput{SKU: l.sku, Variant: "v", Seller: "s"}, Qty: l.qty}
					res, err = n.Propose(ctx, a.AppendEncode(nil))
					if err != nil {
						failed.Store(fmt.Sprintf("add line to %s: %v", l.id, err))
						return
					}
					if r := res.(cart.Result); r.Err != nil {
						failed.Store(fmt.Sprintf("add line to %s: %v", l.id, r.Err))
						return
					}
					if i%(lineEvery*100) == 0 {
						mu.Lock()
						sample = append(sample, l)
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		if f := failed.Load(); f != nil {
			t.Fatal(f)
		}
		next.Store(upTo) // each proposer drew one number past upTo
	}

	start := time.Now()
	create(snapshotAt)
	phase1 := time.Since(start)
	snapStart := time.Now()
	if err := n.Snapshot(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	snapTook := time.Since(snapStart)
	phase2Start := time.Now()
	create(total)
	phase2 := time.Since(phase2Start)
	createTook := phase1 + phase2
	entries := n.Status().LastIndex - entries0
	cmds := total + total/lineEvery
	t.Logf("created %d carts (%d with a line: %d commands) in %v (%.0f commands/s, %d log entries, %.1f commands/entry); snapshot at %d carts took %v",
		total, total/lineEvery, cmds, createTook.Round(time.Millisecond), float64(cmds)/createTook.Seconds(),
		entries, float64(cmds)/float64(max(entries, 1)), snapshotAt, snapTook.Round(time.Millisecond))

	lastID := cart.FormatCartID(total)
	if _, err := m.Cart(lastID); err != nil {
		t.Fatalf("last cart %s before restart: %v", lastID, err)
	}
	if _, err := m.Cart(cart.FormatCartID(total + 1)); err == nil {
		t.Fatalf("cart %s exists: more carts than creates", cart.FormatCartID(total+1))
	}
	peakBefore := procStatus(t, "VmHWM")

	closeStart := time.Now()
	if err := n.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	closed = true
	closeTook := time.Since(closeStart)
	n, m = nil, nil
	runtime.GC()
	debug.FreeOSMemory()
	rssClosed := procStatus(t, "VmRSS")

	snapBytes, dirBytes := dirSize(t, filepath.Join(dir, "snapshots")), dirSize(t, dir)

	restartStart := time.Now()
	n2, m2 := openScale(t, dir, addr, 120*time.Second)
	defer n2.Close()
	leadTook := time.Since(restartStart)
	for {
		if _, err := m2.Cart(lastID); err == nil {
			break
		}
		if time.Since(restartStart) > 120*time.Second {
			t.Fatalf("last cart %s not readable 120 s after the restart", lastID)
		}
		time.Sleep(5 * time.Millisecond)
	}
	restartTook := time.Since(restartStart)
	if err := n2.ReadBarrier(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Contents survived: the first and last carts, the sampled lines, and
	// the id counter (the next cart is total+1).
	if c, err := m2.Cart("c_1"); err != nil || c.Version < 1 || !strings.HasPrefix(c.Owner, "user:") {
		t.Fatalf("c_1 after restart: %v %v", c, err)
	}
	if len(sample) < 50 {
		t.Fatalf("only %d sampled carts with lines", len(sample))
	}
	for _, l := range sample {
		c, err := m2.Cart(l.id)
		if err != nil {
			t.Fatalf("cart %s after restart: %v", l.id, err)
		}
		if len(c.Lines) != 1 || c.Lines[0].SKU != l.sku || c.Lines[0].Qty != l.qty || c.Version != 2 {
			t.Fatalf("cart %s after restart: version %d lines %+v, want one line %s x%d at version 2", l.id, c.Version, c.Lines, l.sku, l.qty)
		}
	}
	nc := cart.Command{Kind: cart.KindCreate, Owner: "user:after-restart"}
	res, err := n2.Propose(context.Background(), nc.AppendEncode(nil))
	if err != nil {
		t.Fatal(err)
	}
	if r := res.(cart.Result); r.Err != nil || r.Cart.ID != cart.FormatCartID(total+1) {
		t.Fatalf("create after restart: %+v, want id %s", r, cart.FormatCartID(total+1))
	}

	runtime.GC()
	debug.FreeOSMemory()
	rss := procStatus(t, "VmRSS")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)

	// Reads of random carts from the replica.
	rng := rand.New(rand.NewPCG(1, 2))
	lat := make([]time.Duration, 1000)
	for i := range lat {
		id := cart.FormatCartID(1 + rng.Uint64N(total))
		s := time.Now()
		c, err := m2.Cart(id)
		lat[i] = time.Since(s)
		if err != nil || c.ID != id {
			t.Fatalf("read %s: %v", id, err)
		}
	}
	slices.Sort(lat)
	p50, p99, worst := lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]

	t.Logf("data dir %s on disk, of which Raft snapshots %s", mib(dirBytes), mib(snapBytes))
	t.Logf("close took %v; RSS after close %s; restart: leader after %v, last cart readable after %v",
		closeTook.Round(time.Millisecond), mib(rssClosed), leadTook.Round(time.Millisecond), restartTook.Round(time.Millisecond))
	t.Logf("after restart: RSS %s (Go heap in use %s, Go sys %s); peak RSS before restart %s, peak overall %s",
		mib(rss), mib(int64(ms.HeapInuse)), mib(int64(ms.Sys)), mib(peakBefore), mib(procStatus(t, "VmHWM")))
	t.Logf("1000 random cart reads: p50 %v, p99 %v, max %v", p50, p99, worst)

	if rss >= rssLimit {
		t.Errorf("RSS %s after restart with %d carts, want under %s", mib(rss), total, mib(rssLimit))
	}
	// The carts live on disk: the Go heap holds none of them.
	if ms.HeapInuse > 128<<20 {
		t.Errorf("Go heap in use %s after restart with %d carts, want under 128 MiB", mib(int64(ms.HeapInuse)), total)
	}
	if p99 > 50*time.Millisecond {
		t.Errorf("cart read p99 %v, want under 50 ms", p99)
	}
}

// openScale opens a one-node group like single (node_test.go) but allows
// a long restart: Open restores the snapshot, and the replay of the log
// after it must finish before the node announces itself and leads.
func openScale(t *testing.T, dir, raftAddr string, timeout time.Duration) (*raftstore.Node, *engine.Machine) {
	t.Helper()
	m := engine.New(engine.Config{})
	n, err := raftstore.Open(raftstore.Config{
		ID: "n1", DataDir: dir, RaftAddr: raftAddr, APIAddr: "127.0.0.1:1",
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLog: io.Discard,
	}, m)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for {
		if _, _, ok := n.Leader(); ok && n.IsLeader() {
			return n, m
		}
		if time.Now().After(deadline) {
			n.Close()
			t.Fatalf("node did not lead within %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// procStatus reads a "kB" field of /proc/self/status, in bytes.
func procStatus(t *testing.T, field string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("%s: %q", field, v)
		}
		return kb << 10
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// dirSize is the total size of the regular files under dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
