package allocator

import (
	"slices"

	"github.com/holdfast/holdfast/lease"
)

// leaseTable is a timing wheel of deadlines. Table 0 is shared by cold
// pools, idempotency keys, draw closes and finished reservations; a pool
// that turns hot gets a table of its own for the holds and waits created
// while it is hot, so its expiry storm is reclaimed with its own budget and
// a request on it can reclaim its table first without touching cold pools.
type leaseTable struct {
	id    uint32
	wheel *lease.Wheel
	owner *Pool // the hot pool it serves; nil for table 0 and retired tables
}

// Wheel keys carry the kind of deadline in the low two bits.
const (
	wheelReservation = 0 // a hold, a wait or a retention deadline
	wheelIdem        = 1 // an idempotency key's expiry
	wheelPool        = 2 // a draw pool's close
	wheelKindBits    = 2
)

func resKey(id uint64) uint64   { return id<<wheelKindBits | wheelReservation }
func idemKey(seq uint64) uint64 { return seq<<wheelKindBits | wheelIdem }
func poolKey(seq uint64) uint64 { return seq<<wheelKindBits | wheelPool }

// table returns table id, creating it if needed (restore rebuilds tables
// referenced by pools and reservations).
func (m *Machine) table(id uint32) *leaseTable {
	if t := m.tableByID[id]; t != nil {
		return t
	}
	t := &leaseTable{id: id, wheel: lease.NewWheel(m.clockMs)}
	m.tableByID[id] = t
	i, _ := slices.BinarySearchFunc(m.tables, id, func(t *leaseTable, id uint32) int { return int(int64(t.id) - int64(id)) })
	m.tables = slices.Insert(m.tables, i, t)
	return t
}

// newTable gives a pool that turned hot a table of its own.
func (m *Machine) newTable(p *Pool) {
	m.nextTable++
	t := m.table(m.nextTable)
	t.owner = p
	p.table = t.id
}

// retireTable returns a cooled pool to the shared table; its own table is
// dropped once its deadlines are gone.
func (m *Machine) retireTable(p *Pool) {
	if p.table == 0 {
		return
	}
	t := m.tableByID[p.table]
	t.owner = nil
	p.table = 0
	m.dropIfIdle(t)
}

func (m *Machine) dropIfIdle(t *leaseTable) {
	if t.id == 0 || t.owner != nil || t.wheel.Len() > 0 {
		return
	}
	delete(m.tableByID, t.id)
	m.tables = slices.DeleteFunc(m.tables, func(x *leaseTable) bool { return x == t })
}

// schedule sets r's one deadline in its table.
func (m *Machine) schedule(r *reservation, dueMs int64) {
	m.tableByID[r.table].wheel.Add(resKey(r.id), dueMs)
}

// scheduleNew sets the first deadline of a new reservation.
func (m *Machine) scheduleNew(r *reservation, dueMs int64) {
	m.tableByID[r.table].wheel.Insert(resKey(r.id), dueMs)
}

// unschedule removes r's deadline. An emptied table is not dropped here
// (a reclaim may still be walking its due keys): reclaim and retireTable
// drop idle tables.
func (m *Machine) unschedule(r *reservation) {
	if t := m.tableByID[r.table]; t != nil {
		t.wheel.Cancel(resKey(r.id))
	}
}

// deadline reports r's deadline (tests and invariant checks).
func (m *Machine) deadline(r *reservation) (int64, bool) {
	t := m.tableByID[r.table]
	if t == nil {
		return 0, false
	}
	return t.wheel.Due(resKey(r.id))
}

// leases counts the deadlines in all tables.
func (m *Machine) leases() int {
	n := 0
	for _, t := range m.tables {
		n += t.wheel.Len()
	}
	return n
}

// reclaim takes up to max due deadlines off table t, in (due, key) order,
// and acts on them.
func (m *Machine) reclaim(t *leaseTable, max int) {
	m.expired = t.wheel.Advance(m.clockMs, max, m.expired[:0])
	due := m.expired
	for i := range due {
		e := due[i]
		id := e.Key >> wheelKindBits
		switch e.Key & (1<<wheelKindBits - 1) {
		case wheelReservation:
			r := m.res.get(id)
			if r == nil {
				panic("allocator: a table holds a deadline for an unknown reservation")
			}
			if _, again := m.deadline(r); again {
				// Handled earlier in this batch (an expiry served the
				// queue, which ended r) and given a new deadline since.
				continue
			}
			if r.state.Terminal() {
				m.res.del(id)
			} else {
				m.expire(r)
			}
		case wheelIdem:
			m.forgetIdem(id)
		case wheelPool:
			p := m.poolBySeq[id]
			if p == nil {
				panic("allocator: a table holds a deadline for an unknown pool")
			}
			m.closeDraw(p)
		}
	}
	m.dropIfIdle(t)
}
