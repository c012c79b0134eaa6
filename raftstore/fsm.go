package raftstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// StateMachine is what a Raft group replicates. raftstore calls Apply from
// one goroutine at a time with committed entries in log order; the other
// methods may be called concurrently with it, so implementations lock.
type StateMachine interface {
	// Apply applies the commands of one committed entry, stamped by the
	// leader at nowMs, and returns one result per command.
	Apply(nowMs int64, cmds [][]byte) []any
	// Snapshot captures the whole state as of the last Apply. It runs on
	// the apply goroutine and must be quick; the returned Snapshot is
	// written out on another goroutine while Apply goes on.
	Snapshot() (Snapshot, error)
	// Restore replaces the whole state with one written by a Snapshot,
	// reading it as a stream.
	Restore(r io.Reader) error
	// ClockMs is the state machine's log clock.
	ClockMs() int64
	// NextDeadlineMs is when something next falls due (a lower bound).
	NextDeadlineMs() (int64, bool)
}

// Snapshot is a captured state being written out.
type Snapshot interface {
	Persist(w io.Writer) error
	Release()
}

// Entry kinds: the first byte of every log entry raftstore writes.
const (
	entryBatch  byte = 1 // nowMs, then a batch of state machine commands
	entryMember byte = 2 // a node announcing its API address
)

// maxEntryCmds bounds the commands decoded from one entry.
const maxEntryCmds = 1 << 16

func appendBatchHeader(dst []byte, nowMs int64, n int) []byte {
	dst = append(dst, entryBatch)
	dst = binary.AppendVarint(dst, nowMs)
	return binary.AppendUvarint(dst, uint64(n))
}

func appendCmd(dst, cmd []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(cmd)))
	return append(dst, cmd...)
}

var errCorruptEntry = errors.New("raftstore: corrupt entry")

// decodeBatch splits a batch entry. The command slices alias data.
func decodeBatch(data []byte, cmds [][]byte) (int64, [][]byte, error) {
	if len(data) == 0 || data[0] != entryBatch {
		return 0, nil, errCorruptEntry
	}
	b := data[1:]
	nowMs, k := binary.Varint(b)
	if k <= 0 {
		return 0, nil, errCorruptEntry
	}
	b = b[k:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > maxEntryCmds {
		return 0, nil, errCorruptEntry
	}
	b = b[k:]
	for i := uint64(0); i < n; i++ {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return 0, nil, errCorruptEntry
		}
		cmds = append(cmds, b[k:k+int(l)])
		b = b[k+int(l):]
	}
	if len(b) != 0 {
		return 0, nil, errCorruptEntry
	}
	return nowMs, cmds, nil
}

func encodeMember(id, apiAddr string) []byte {
	b := []byte{entryMember}
	b = binary.AppendUvarint(b, uint64(len(id)))
	b = append(b, id...)
	b = binary.AppendUvarint(b, uint64(len(apiAddr)))
	return append(b, apiAddr...)
}

func decodeStrings(b []byte, n int) ([]string, []byte, bool) {
	out := make([]string, 0, n)
	for range n {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, nil, false
		}
		out = append(out, string(b[k:k+int(l)]))
		b = b[k+int(l):]
	}
	return out, b, true
}

// fsm adapts a StateMachine to raft.BatchingFSM and keeps the member
// registry (node id -> API address) that followers use to forward.
type fsm struct {
	sm StateMachine

	mu      sync.RWMutex
	members map[string]string

	applied  atomic.Uint64
	applyMu  sync.Mutex // held while a batch applies (Node.Consistent)
	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced after every applied batch

	scratch [][]byte
	onBatch func(entries, cmds int)

	lastSnap atomic.Pointer[snapMark] // what the latest Snapshot captured (backups)
}

// snapMark records the applied index and log clock a Snapshot captured.
type snapMark struct {
	applied uint64
	clockMs int64
}

func newFSM(sm StateMachine) *fsm {
	return &fsm{sm: sm, members: make(map[string]string), notify: make(chan struct{})}
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch implements raft.BatchingFSM.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	out := make([]any, len(logs))
	cmds := 0
	for i, l := range logs {
		if l.Type != raft.LogCommand || len(l.Data) == 0 {
			continue
		}
		switch l.Data[0] {
		case entryBatch:
			nowMs, batch, err := decodeBatch(l.Data, f.scratch[:0])
			if err != nil {
				// Every replica sees the same bytes and skips them alike.
				out[i] = err
				continue
			}
			out[i] = f.sm.Apply(nowMs, batch)
			cmds += len(batch)
			clear(batch)
			f.scratch = batch[:0]
		case entryMember:
			s, _, ok := decodeStrings(l.Data[1:], 2)
			if !ok {
				out[i] = errCorruptEntry
				continue
			}
			f.mu.Lock()
			f.members[s[0]] = s[1]
			f.mu.Unlock()
		default:
			out[i] = errCorruptEntry
		}
	}
	if len(logs) > 0 {
		f.applied.Store(logs[len(logs)-1].Index)
	}
	if f.onBatch != nil {
		f.onBatch(len(logs), cmds)
	}
	f.notifyMu.Lock()
	close(f.notify)
	f.notify = make(chan struct{})
	f.notifyMu.Unlock()
	return out
}

// waitCh returns a channel closed after the next applied batch.
func (f *fsm) waitCh() <-chan struct{} {
	f.notifyMu.Lock()
	defer f.notifyMu.Unlock()
	return f.notify
}

func (f *fsm) member(id string) string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.members[id]
}

// Snapshot implements raft.FSM. It serialises on the FSM goroutine (so the
// copy is consistent) and writes on raft's snapshot goroutine.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	ids := make([]string, 0, len(f.members))
	for id := range f.members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	b := binary.AppendUvarint(nil, uint64(len(ids)))
	for _, id := range ids {
		b = binary.AppendUvarint(b, uint64(len(id)))
		b = append(b, id...)
		b = binary.AppendUvarint(b, uint64(len(f.members[id])))
		b = append(b, f.members[id]...)
	}
	f.mu.RUnlock()
	s, err := f.sm.Snapshot()
	if err != nil {
		return nil, err
	}
	f.lastSnap.Store(&snapMark{applied: f.applied.Load(), clockMs: f.sm.ClockMs()})
	return &snapshot{header: b, state: s}, nil
}

// Restore implements raft.FSM.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	r := bufio.NewReaderSize(rc, 1<<20)
	n, err := binary.ReadUvarint(r)
	if err != nil || n > 1<<16 {
		return fmt.Errorf("%w: snapshot header", errCorruptEntry)
	}
	members := make(map[string]string, n)
	for range n {
		id, err1 := readString(r)
		addr, err2 := readString(r)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("%w: snapshot members", errCorruptEntry)
		}
		members[id] = addr
	}
	if err := f.sm.Restore(r); err != nil {
		return err
	}
	f.mu.Lock()
	f.members = members
	f.mu.Unlock()
	return nil
}

// readString reads a uvarint-prefixed string of at most 1 KiB.
func readString(r *bufio.Reader) (string, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil || n > 1024 {
		return "", errCorruptEntry
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

type snapshot struct {
	header []byte
	state  Snapshot
}

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriterSize(sink, 1<<20)
	_, err := w.Write(s.header)
	if err == nil {
		err = s.state.Persist(w)
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() { s.state.Release() }
