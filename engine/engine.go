// Package engine is the replicated state machine of one holdfast Raft group:
// it decodes the commands of a committed log entry and hands them to the
// domain state machines (the allocator, in memory, and the cart layer,
// whose state lives in the node's keyspace on disk). It knows nothing of
// Raft or HTTP: raftstore drives it through raftstore.KVStateMachine.
package engine

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/cart"
	"github.com/holdfast/holdfast/raftstore"
)

// Config configures a Machine; zero values take each part's defaults.
type Config struct {
	Allocator allocator.Config
	Carts     cart.Config
}

// Machine is a holdfast group's state machine.
type Machine struct {
	// Alloc is the allocator. Reads go to it directly; writes only through
	// Apply.
	Alloc *allocator.Machine
	// Carts is the cart layer; its state is in the keyspace (see Cart).
	Carts *cart.Machine

	kv        raftstore.KV
	restoring atomic.Bool // a snapshot is being installed: the keyspace is partial

	cmds    []allocator.Command // scratch, reused across entries
	results []allocator.Result

	// The cart layer's next deadline, for NextDeadlineMs: reading it scans
	// three key ranges of the store (which after a large sweep may hold
	// many deletion tombstones until compaction), and the leader asks every
	// few milliseconds. It is reread when a cart command was applied, and
	// otherwise every cartDueRefresh calls: a stale value only moves a tick.
	dueMu    sync.Mutex
	dueCalls int
	cartDue  int64
	cartHas  bool
	cartsRan atomic.Bool
}

// cartDueRefresh is how many NextDeadlineMs calls reuse the cart layer's
// next deadline (about 100 ms of a leader's 5 ms tick checks).
const cartDueRefresh = 20

// New returns an empty Machine.
func New(cfg Config) *Machine {
	return &Machine{Alloc: allocator.New(cfg.Allocator), Carts: cart.New(cfg.Carts)}
}

// OpenKV attaches the node's keyspace. What it holds from before a restart
// is discarded: Raft restores the latest snapshot (keyspace included) and
// replays the log after it, so the keyspace is always rebuilt from the
// synced log, and its own writes never need an fsync.
func (m *Machine) OpenKV(kv raftstore.KV) error {
	m.kv = kv
	b := kv.Batch()
	defer b.Close()
	b.DeleteAll()
	return b.Commit()
}

// Apply applies the encoded commands of one log entry stamped by the leader
// at nowMs and returns one result per command. A command that does not
// decode is answered with invalid_argument on every replica alike.
//
// Commands are routed by their first byte: cart kinds to the cart layer,
// the rest to the allocator, in log order. The cart layer's writes of the
// whole entry go to the keyspace in one batch.
func (m *Machine) Apply(nowMs int64, cmds [][]byte) []any {
	out := make([]any, len(cmds))
	// Every entry moves the allocator's clock once and reclaims what fell
	// due, even an entry of cart commands only (or none: a tick). The cart
	// layer runs on the same bounded, monotonic clock, not the raw stamp.
	m.Alloc.Advance(nowMs)
	clockMs := m.Alloc.ClockMs()
	var b raftstore.KVBatch
	if m.kv != nil {
		b = m.kv.Batch()
		defer b.Close()
	}
	ranCarts := false
	for i := 0; i < len(cmds); {
		if isCart(cmds[i]) {
			ranCarts = true
			out[i] = m.applyCart(b, clockMs, cmds[i])
			i++
			continue
		}
		// A run of allocator commands is applied in one call.
		m.cmds = m.cmds[:0]
		j := i
		for ; j < len(cmds) && !isCart(cmds[j]); j++ {
			c, err := allocator.DecodeCommand(cmds[j])
			if err != nil {
				c = allocator.Command{} // kind 0: answered as an unknown command
			}
			m.cmds = append(m.cmds, c)
		}
		m.results = m.Alloc.ApplyCommands(m.cmds, m.results[:0])
		for k := range m.results {
			out[i+k] = m.results[k]
		}
		clear(m.cmds) // drop references to decoded strings
		i = j
	}
	if b != nil {
		m.Carts.Tick(b, clockMs)
		if err := b.Commit(); err != nil {
			// A storage failure in apply cannot be answered to Raft: this
			// replica stops rather than diverge (NOTES: raft FSM).
			panic(fmt.Sprintf("engine: keyspace write failed: %v", err))
		}
	}
	if ranCarts {
		m.cartsRan.Store(true) // after the commit: the next read sees it
	}
	return out
}

func isCart(cmd []byte) bool {
	return len(cmd) > 0 && cart.Kind(cmd[0]) >= cart.MinKind && cart.Kind(cmd[0]) <= cart.MaxKind
}

func (m *Machine) applyCart(b raftstore.KVBatch, clockMs int64, raw []byte) cart.Result {
	if b == nil {
		return cart.Result{Err: &allocator.Error{Code: allocator.InvalidState, Message: "carts need the node's keyspace"}}
	}
	c, err := cart.DecodeCommand(raw)
	if err != nil {
		return cart.Result{Err: &allocator.Error{Code: allocator.InvalidArgument, Message: "undecodable cart command"}}
	}
	return m.Carts.Apply(b, pools{a: m.Alloc}, clockMs, &c)
}

// pools gives the cart layer the allocator, inside the entry being applied
// (after its Advance).
type pools struct{ a *allocator.Machine }

func (p pools) PerBuyerLimit(pool string) (int64, bool) {
	v, err := p.a.Pool(pool)
	if err != nil {
		return 0, false
	}
	return v.Config.PerBuyerLimit, true
}

func (p pools) Reserve(buyer string, lines []allocator.LineRequest, ttlMs int64, partial bool) allocator.Result {
	c := allocator.Command{Kind: allocator.KindReserve, Buyer: buyer, Lines: lines, TTLMs: ttlMs, Partial: partial}
	return p.a.ApplyCommands([]allocator.Command{c}, nil)[0]
}

func (p pools) ReservationState(id uint64) (allocator.ReservationState, bool) {
	v, err := p.a.Reservation(id)
	if err != nil {
		return 0, false
	}
	return v.State, true
}

func (p pools) Confirm(id uint64) allocator.Result {
	c := allocator.Command{Kind: allocator.KindConfirm, Reservation: id}
	return p.a.ApplyCommands([]allocator.Command{c}, nil)[0]
}

// readOnly adapts a keyspace reader to cart.Store for reads; the cart
// layer's read functions never write.
type readOnly struct{ raftstore.KVReader }

func (readOnly) Set(_, _ []byte) { panic("engine: write through a read view") }
func (readOnly) Delete([]byte)   { panic("engine: write through a read view") }

// Cart reads a cart from this replica's committed state.
func (m *Machine) Cart(id string) (*cart.Cart, *allocator.Error) {
	if m.kv == nil {
		return nil, &allocator.Error{Code: allocator.NotFound, Message: "no cart " + id}
	}
	return cart.Get(readOnly{m.kv}, id)
}

// Checkout reads a checkout snapshot from this replica's committed state.
func (m *Machine) Checkout(id string) (*cart.Checkout, *allocator.Error) {
	if m.kv == nil {
		return nil, &allocator.Error{Code: allocator.NotFound, Message: "no checkout " + id}
	}
	return cart.GetCheckout(readOnly{m.kv}, id)
}

// ClockMs is the log clock of the last applied entry.
func (m *Machine) ClockMs() int64 { return m.Alloc.ClockMs() }

// NextDeadlineMs is when the next hold, key, idle cart or checkout
// retention falls due, if any: the leader proposes a tick then, so carts
// expire on an idle log too.
func (m *Machine) NextDeadlineMs() (int64, bool) {
	next, ok := m.Alloc.NextDeadlineMs()
	if m.kv == nil || m.restoring.Load() {
		return next, ok
	}
	m.dueMu.Lock()
	if m.cartsRan.Swap(false) || m.dueCalls%cartDueRefresh == 0 {
		m.cartDue, m.cartHas = cart.NextDueMs(readOnly{m.kv})
	}
	m.dueCalls++
	due, has := m.cartDue, m.cartHas
	m.dueMu.Unlock()
	if has && (!ok || due < next) {
		next, ok = due, true
	}
	return next, ok
}

// Snapshot format: the allocator's snapshot, length-prefixed, then the
// keyspace as (key, value) records, uvarint-length-prefixed, ending with
// an empty key (keys are never empty).

// Snapshot captures the allocator and pins the keyspace; both are as of the
// last applied entry because raftstore calls it between entries.
func (m *Machine) Snapshot() (raftstore.Snapshot, error) {
	s := &snapshot{alloc: m.Alloc.Snapshot()}
	if m.kv != nil {
		s.view = m.kv.View()
	}
	return s, nil
}

type snapshot struct {
	alloc []byte
	view  raftstore.KVView
}

func (s *snapshot) Persist(w io.Writer) error {
	var hdr [binary.MaxVarintLen64]byte
	if _, err := w.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(s.alloc)))]); err != nil {
		return err
	}
	if _, err := w.Write(s.alloc); err != nil {
		return err
	}
	var err error
	if s.view != nil {
		s.view.Scan(nil, nil, func(k, v []byte) bool {
			for _, part := range [][]byte{k, v} {
				if _, err = w.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(part)))]); err != nil {
					return false
				}
				if _, err = w.Write(part); err != nil {
					return false
				}
			}
			return true
		})
	}
	if err != nil {
		return err
	}
	_, err = w.Write([]byte{0})
	return err
}

func (s *snapshot) Release() {
	if s.view != nil {
		s.view.Close()
	}
}

// maxRecord bounds one key or value in a snapshot stream.
const maxRecord = 64 << 20

// restoreBatchBytes bounds the memory a restore holds before committing.
const restoreBatchBytes = 4 << 20

var errCorrupt = errors.New("engine: corrupt snapshot")

// Restore replaces the whole state from a snapshot stream. The keyspace is
// wiped and rewritten in bounded batches, so a large keyspace never sits in
// memory; a crash half way is repaired by OpenKV and the next restore.
func (m *Machine) Restore(r io.Reader) error {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 1<<20)
	}
	n, err := binary.ReadUvarint(br)
	if err != nil || n > 1<<40 {
		return fmt.Errorf("%w: allocator length", errCorrupt)
	}
	// The allocator's part is held until the keyspace is complete, so the
	// two are swapped in together; reads of the keyspace answer
	// "restoring" meanwhile.
	alloc := make([]byte, n)
	if _, err := io.ReadFull(br, alloc); err != nil {
		return fmt.Errorf("%w: allocator: %v", errCorrupt, err)
	}
	if m.kv == nil {
		if err := expectEnd(br); err != nil {
			return err
		}
		return m.Alloc.Restore(bytes.NewReader(alloc))
	}
	m.restoring.Store(true)
	defer m.restoring.Store(false)
	if err := m.restoreKeyspace(br); err != nil {
		return err
	}
	return m.Alloc.Restore(bytes.NewReader(alloc))
}

// Restoring reports whether a snapshot is being installed: the keyspace
// is then partial and reads of it must wait.
func (m *Machine) Restoring() bool { return m.restoring.Load() }

func (m *Machine) restoreKeyspace(br *bufio.Reader) error {
	b := m.kv.Batch()
	b.DeleteAll()
	for {
		k, err := readRecord(br)
		if err != nil {
			b.Close()
			return err
		}
		if len(k) == 0 {
			break
		}
		v, err := readRecord(br)
		if err != nil {
			b.Close()
			return err
		}
		b.Set(k, v)
		if b.Len() >= restoreBatchBytes {
			if err := b.Commit(); err != nil {
				b.Close()
				return err
			}
			b.Close()
			b = m.kv.Batch()
		}
	}
	defer b.Close()
	return b.Commit()
}

func expectEnd(r *bufio.Reader) error {
	if k, err := readRecord(r); err != nil || len(k) != 0 {
		return fmt.Errorf("%w: keyspace records without a keyspace", errCorrupt)
	}
	return nil
}

func readRecord(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil || n > maxRecord {
		return nil, fmt.Errorf("%w: record length", errCorrupt)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return b, nil
}
