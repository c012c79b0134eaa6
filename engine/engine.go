// Package engine is the replicated state machine of one holdfast Raft group:
// it decodes the commands of a committed log entry and hands them to the
// domain state machines (the allocator today; carts join it later). It
// knows nothing of Raft, HTTP or disks: raftstore drives it through the
// raftstore.StateMachine interface.
package engine

import (
	"io"

	"github.com/holdfast/holdfast/allocator"
)

// Machine is a holdfast group's state machine.
type Machine struct {
	// Alloc is the allocator. Reads go to it directly; writes only through
	// Apply.
	Alloc *allocator.Machine

	cmds    []allocator.Command // scratch, reused across entries
	results []allocator.Result
}

// New returns an empty Machine.
func New(cfg allocator.Config) *Machine {
	return &Machine{Alloc: allocator.New(cfg)}
}

// Apply applies the encoded commands of one log entry stamped by the leader
// at nowMs and returns one allocator.Result per command. A command that does
// not decode is answered with invalid_argument on every replica alike.
func (m *Machine) Apply(nowMs int64, cmds [][]byte) []any {
	m.cmds = m.cmds[:0]
	for _, b := range cmds {
		c, err := allocator.DecodeCommand(b)
		if err != nil {
			c = allocator.Command{} // kind 0: answered as an unknown command
		}
		m.cmds = append(m.cmds, c)
	}
	m.results = m.Alloc.Apply(nowMs, m.cmds, m.results[:0])
	out := make([]any, len(m.results))
	for i := range m.results {
		out[i] = m.results[i]
	}
	clear(m.cmds) // drop references to decoded strings
	return out
}

// Snapshot returns the canonical encoding of the state.
func (m *Machine) Snapshot() []byte { return m.Alloc.Snapshot() }

// Restore replaces the state from a Snapshot.
func (m *Machine) Restore(r io.Reader) error { return m.Alloc.Restore(r) }

// ClockMs is the log clock of the last applied entry.
func (m *Machine) ClockMs() int64 { return m.Alloc.ClockMs() }

// NextDeadlineMs is when the next hold or key falls due, if any.
func (m *Machine) NextDeadlineMs() (int64, bool) { return m.Alloc.NextDeadlineMs() }
