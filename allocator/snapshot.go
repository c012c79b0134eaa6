package allocator

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"github.com/holdfast/holdfast/internal/wire"
	"io"
	"math"
	"slices"
)

// snapshotVersion is the first byte of every snapshot. Version 3 (before
// per-pool stats) is still read, with zero stats.
const snapshotVersion = 4

// oldestSnapshotVersion is the oldest version Restore reads.
const oldestSnapshotVersion = 3

// Snapshot returns the canonical encoding of the whole state: the same state
// gives the same bytes on every replica (every collection is written in
// sorted order), so its hash compares replicas. The lease tables are not
// written: they are rebuilt from the deadlines on restore.
func (m *Machine) Snapshot() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.appendSnapshot(make([]byte, 0, 64+len(m.pools)*64+m.res.len()*96))
}

// StateHash is the SHA-256 of Snapshot.
func (m *Machine) StateHash() [32]byte { return sha256.Sum256(m.Snapshot()) }

func (m *Machine) appendSnapshot(b []byte) []byte {
	b = append(b, snapshotVersion)
	b = binary.AppendVarint(b, m.clockMs)
	for _, v := range [...]uint64{m.nextID, m.idemSeq, m.nextPoolSeq, uint64(m.nextTable)} {
		b = binary.AppendUvarint(b, v)
	}

	b = binary.AppendUvarint(b, uint64(len(m.poolIDs)))
	for _, id := range m.poolIDs {
		p := m.pools[id]
		b = wire.AppendString(b, p.ID)
		b = binary.AppendUvarint(b, p.seq)
		b = binary.AppendUvarint(b, uint64(p.table))
		b = appendConfig(b, &p.Config)
		for _, v := range [...]int64{p.Held, p.Sold, p.CreatedAtMs, p.UpdatedAtMs} {
			b = binary.AppendVarint(b, v)
		}
		for i := range p.demand.sec {
			b = binary.AppendVarint(b, p.demand.sec[i])
			b = binary.AppendVarint(b, p.demand.req[i])
			b = binary.AppendVarint(b, p.demand.den[i])
		}
		b = append(b, byte(p.demand.heat))
		s := &p.stats
		for _, v := range [...]int64{s.Entries, s.Winners, s.Offers, s.Expired, s.Confirmed, s.Released} {
			b = binary.AppendVarint(b, v)
		}
	}

	b = binary.AppendUvarint(b, uint64(m.res.len()))
	m.res.each(func(r *reservation) {
		b = binary.AppendUvarint(b, r.id)
		b = wire.AppendString(b, r.buyer)
		b = append(b, byte(r.state), r.where, boolByte(r.offered))
		b = binary.AppendUvarint(b, uint64(r.table))
		for _, v := range [...]int64{r.createdAtMs, r.expiresAtMs, r.capMs, r.extensions, r.maxExtensions, r.finishedAtMs} {
			b = binary.AppendVarint(b, v)
		}
		b = binary.AppendUvarint(b, uint64(len(r.lines)))
		for _, l := range r.lines {
			b = wire.AppendString(b, l.pool.ID)
			b = binary.AppendVarint(b, l.qty)
			b = append(b, byte(l.state))
		}
	})

	// Per pool: per-buyer usage (buyers sorted), open draw entries in entry
	// order, and the waitlist in queue order.
	for _, id := range m.poolIDs {
		p := m.pools[id]
		buyers := make([]string, 0, len(p.usage))
		for buyer := range p.usage {
			buyers = append(buyers, buyer)
		}
		slices.Sort(buyers)
		b = binary.AppendUvarint(b, uint64(len(buyers)))
		for _, buyer := range buyers {
			b = wire.AppendString(b, buyer)
			b = binary.AppendVarint(b, p.usage[buyer])
		}
		b = append(b, boolByte(p.draw != nil))
		if p.draw != nil {
			b = binary.AppendUvarint(b, uint64(len(p.draw.byBuyer)))
			for _, r := range p.draw.entrants {
				if r != nil {
					b = binary.AppendUvarint(b, r.id)
				}
			}
		}
		b = binary.AppendUvarint(b, uint64(p.waitq.len()))
		p.waitq.each(func(r *reservation) { b = binary.AppendUvarint(b, r.id) })
	}

	seqs := make([]uint64, 0, len(m.idemBySeq))
	for s := range m.idemBySeq {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	b = binary.AppendUvarint(b, uint64(len(seqs)))
	for _, s := range seqs {
		key := m.idemBySeq[s]
		rec := m.idem[key]
		b = binary.AppendUvarint(b, s)
		b = wire.AppendString(b, key)
		b = binary.AppendVarint(b, rec.expiresAtMs)
		b = append(b, rec.hash[:]...)
		b = appendResult(b, &rec.result)
	}
	return b
}

func appendConfig(b []byte, c *PoolConfig) []byte {
	for _, v := range [...]int64{c.OnHand, c.PerBuyerLimit, c.HoldTTLMs, c.MaxHoldTTLMs, c.MaxExtensions, c.Draw.OpensAtMs, c.Draw.ClosesAtMs, c.Waitlist.OfferTTLMs, c.Waitlist.WaitTTLMs,
		c.Demand.WarmRPS, c.Demand.HotRPS, c.Demand.LowStockUnits, c.Demand.LowStockPercent, c.Demand.HorizonMs} {
		b = binary.AppendVarint(b, v)
	}
	b = append(b, byte(c.Mode), boolByte(c.Waitlist.Enabled))
	return wire.AppendString(b, c.Draw.Seed)
}

func readConfig(d *wire.Decoder, c *PoolConfig) {
	for _, v := range [...]*int64{&c.OnHand, &c.PerBuyerLimit, &c.HoldTTLMs, &c.MaxHoldTTLMs, &c.MaxExtensions, &c.Draw.OpensAtMs, &c.Draw.ClosesAtMs, &c.Waitlist.OfferTTLMs, &c.Waitlist.WaitTTLMs,
		&c.Demand.WarmRPS, &c.Demand.HotRPS, &c.Demand.LowStockUnits, &c.Demand.LowStockPercent, &c.Demand.HorizonMs} {
		*v = d.Varint()
	}
	c.Mode = Mode(d.Byte())
	c.Waitlist.Enabled = d.Byte() != 0
	c.Draw.Seed = d.String(MaxIDLen)
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// Result encoding, for idempotency records. A presence byte precedes each
// optional part.
func appendResult(b []byte, r *Result) []byte {
	b = append(b, boolByte(r.Created))
	b = append(b, boolByte(r.Err != nil))
	if r.Err != nil {
		b = append(b, byte(r.Err.Code))
		b = wire.AppendString(b, r.Err.Message)
		b = appendLines(b, r.Err.Lines)
	}
	b = append(b, boolByte(r.Pool != nil))
	if p := r.Pool; p != nil {
		b = wire.AppendString(b, p.ID)
		b = appendConfig(b, &p.Config)
		// Every field of the view: a replay after a restore must return the
		// same object as the first answer.
		s := &p.Stats
		for _, v := range [...]int64{p.Held, p.Sold, p.Available, p.CreatedAtMs, p.UpdatedAtMs, p.Waiting, p.WaitingQty, p.DrawEntries,
			s.Entries, s.Winners, s.Offers, s.Expired, s.Confirmed, s.Released} {
			b = binary.AppendVarint(b, v)
		}
		b = binary.AppendUvarint(b, math.Float64bits(p.RequestsPerSec))
		b = binary.AppendUvarint(b, math.Float64bits(p.DenialsPerSec))
		b = append(b, byte(p.Claim), byte(p.Heat), boolByte(p.DrawClosed))
	}
	b = append(b, boolByte(r.Reservation != nil))
	if v := r.Reservation; v != nil {
		b = binary.AppendUvarint(b, v.ID)
		b = wire.AppendString(b, v.Buyer)
		b = append(b, byte(v.State))
		for _, x := range [...]int64{v.CreatedAtMs, v.ExpiresAtMs, v.Extensions, v.Position} {
			b = binary.AppendVarint(b, x)
		}
		b = appendLines(b, v.Lines)
	}
	return b
}

func appendLines(b []byte, ls []LineView) []byte {
	b = binary.AppendUvarint(b, uint64(len(ls)))
	for _, l := range ls {
		b = wire.AppendString(b, l.Pool)
		b = binary.AppendVarint(b, l.Qty)
		b = append(b, byte(l.State))
	}
	return b
}

func readLines(d *wire.Decoder) []LineView {
	n := d.Uvarint()
	if n > MaxLines {
		d.Fail("too many lines")
		return nil
	}
	if n == 0 {
		return nil
	}
	ls := make([]LineView, n)
	for i := range ls {
		ls[i] = LineView{Pool: d.String(MaxIDLen), Qty: d.Varint(), State: LineState(d.Byte())}
	}
	return ls
}

func readResult(d *wire.Decoder, version byte) Result {
	var r Result
	r.Created = d.Byte() != 0
	if d.Byte() != 0 {
		r.Err = &Error{Code: Code(d.Byte()), Message: d.String(1 << 16)}
		r.Err.Lines = readLines(d)
	}
	if d.Byte() != 0 {
		p := &PoolView{ID: d.String(MaxIDLen)}
		readConfig(d, &p.Config)
		for _, v := range [...]*int64{&p.Held, &p.Sold, &p.Available, &p.CreatedAtMs, &p.UpdatedAtMs, &p.Waiting, &p.WaitingQty, &p.DrawEntries} {
			*v = d.Varint()
		}
		if version >= 4 {
			s := &p.Stats
			for _, v := range [...]*int64{&s.Entries, &s.Winners, &s.Offers, &s.Expired, &s.Confirmed, &s.Released} {
				*v = d.Varint()
			}
		}
		p.RequestsPerSec = math.Float64frombits(d.Uvarint())
		p.DenialsPerSec = math.Float64frombits(d.Uvarint())
		p.Claim, p.Heat, p.DrawClosed = Claim(d.Byte()), Heat(d.Byte()), d.Byte() != 0
		r.Pool = p
	}
	if d.Byte() != 0 {
		v := &ReservationView{ID: d.Uvarint(), Buyer: d.String(MaxIDLen), State: ReservationState(d.Byte())}
		for _, x := range [...]*int64{&v.CreatedAtMs, &v.ExpiresAtMs, &v.Extensions, &v.Position} {
			*x = d.Varint()
		}
		v.Lines = readLines(d)
		r.Reservation = v
	}
	return r
}

// Restore replaces the state with a snapshot written by Snapshot. It
// validates what it reads, so a corrupt snapshot is an error, never a
// machine that panics later.
func (m *Machine) Restore(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("allocator: read snapshot: %w", err)
	}
	fresh := New(m.cfg)
	if err := fresh.decodeSnapshot(data); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clockMs, m.nextID = fresh.clockMs, fresh.nextID
	m.pools, m.poolIDs, m.poolBySeq, m.nextPoolSeq = fresh.pools, fresh.poolIDs, fresh.poolBySeq, fresh.nextPoolSeq
	m.res, m.active = fresh.res, fresh.active
	m.idem, m.idemBySeq, m.idemSeq, m.idemOldest = fresh.idem, fresh.idemBySeq, fresh.idemSeq, fresh.idemOldest
	m.tables, m.tableByID, m.nextTable = fresh.tables, fresh.tableByID, fresh.nextTable
	m.stats, m.waiting = fresh.stats, fresh.waiting
	return nil
}

func (m *Machine) decodeSnapshot(data []byte) error {
	d := wire.NewDecoder(data, ErrCorrupt)
	version := d.Byte()
	if version < oldestSnapshotVersion || version > snapshotVersion {
		return fmt.Errorf("%w: snapshot version %d", ErrCorrupt, version)
	}
	m.clockMs = d.Varint()
	m.nextID, m.idemSeq, m.nextPoolSeq = d.Uvarint(), d.Uvarint(), d.Uvarint()
	nextTable := d.Uvarint()
	if m.nextID >= maxSeq || m.idemSeq >= maxSeq || m.nextPoolSeq >= maxSeq || nextTable >= 1<<31 {
		d.Fail("sequence out of range")
	}
	m.nextTable = uint32(nextTable)
	m.tables, m.tableByID = nil, map[uint32]*leaseTable{}
	m.table(0)
	tableOf := func(id uint64) uint32 {
		if id > uint64(m.nextTable) {
			d.Fail("lease table out of range")
			return 0
		}
		return uint32(id)
	}

	// Every collection must be strictly increasing in its key: that rules
	// out duplicates, which would corrupt the indexes built below.
	n := d.Uvarint()
	for i := uint64(0); i < n && d.Err() == nil; i++ {
		p := &Pool{ID: d.String(MaxIDLen), seq: d.Uvarint()}
		p.table = tableOf(d.Uvarint())
		readConfig(d, &p.Config)
		p.Held, p.Sold, p.CreatedAtMs, p.UpdatedAtMs = d.Varint(), d.Varint(), d.Varint(), d.Varint()
		for j := range p.demand.sec {
			p.demand.sec[j], p.demand.req[j], p.demand.den[j] = d.Varint(), d.Varint(), d.Varint()
		}
		p.demand.heat = Heat(d.Byte())
		s := &p.stats
		if version >= 4 {
			s.Entries, s.Winners, s.Offers = d.Varint(), d.Varint(), d.Varint()
			s.Expired, s.Confirmed, s.Released = d.Varint(), d.Varint(), d.Varint()
		}
		switch {
		case !ValidID(p.ID) || (i > 0 && p.ID <= m.poolIDs[i-1]):
			d.Fail("pool ids not valid and strictly increasing")
		case p.seq == 0 || p.seq > m.nextPoolSeq || m.poolBySeq[p.seq] != nil:
			d.Fail("pool numbers not unique within range")
		case p.Config.Validate() != nil || p.Held < 0 || p.Sold < 0 || p.Held+p.Sold > p.Config.OnHand || p.demand.heat > HeatHot ||
			s.Entries < 0 || s.Winners < 0 || s.Offers < 0 || s.Expired < 0 || s.Confirmed < 0 || s.Released < 0:
			d.Fail("pool state out of range")
		case p.table != 0 && m.tableByID[p.table] != nil:
			d.Fail("two pools own one lease table")
		}
		if d.Err() != nil {
			break
		}
		if p.table != 0 {
			m.table(p.table).owner = p
		}
		m.pools[p.ID] = p
		m.poolBySeq[p.seq] = p
		m.poolIDs = append(m.poolIDs, p.ID)
	}

	var lastID uint64
	n = d.Uvarint()
	for i := uint64(0); i < n && d.Err() == nil; i++ {
		r := &reservation{id: d.Uvarint(), buyer: d.String(MaxIDLen), state: ReservationState(d.Byte()), where: d.Byte(), offered: d.Byte() != 0}
		r.table = tableOf(d.Uvarint())
		for _, v := range [...]*int64{&r.createdAtMs, &r.expiresAtMs, &r.capMs, &r.extensions, &r.maxExtensions, &r.finishedAtMs} {
			*v = d.Varint()
		}
		nl := d.Uvarint()
		switch {
		case r.id <= lastID || r.id > m.nextID || r.state > StateExpired:
			d.Fail("reservation ids not strictly increasing within 1..next id")
		case nl == 0 || nl > MaxLines:
			d.Fail("bad line count")
		case (r.state == StateWaiting) != (r.where != waitNone) || r.where > waitInDraw || (r.state == StateWaiting && nl != 1):
			d.Fail("waiting state inconsistent")
		case r.state.Terminal() && r.table != 0:
			d.Fail("finished reservation outside the shared table")
		}
		if d.Err() != nil {
			break
		}
		lastID = r.id
		r.setLines(int(nl))
		for j := range r.lines {
			p := m.pools[d.String(MaxIDLen)]
			if p == nil {
				d.Fail("line names an unknown pool")
				break
			}
			r.lines[j] = line{pool: p, qty: d.Varint(), state: LineState(d.Byte())}
			if l := r.lines[j]; l.qty < 1 || l.qty > MaxQty || l.state > LineAvailable {
				d.Fail("bad line")
			}
		}
		if d.Err() != nil {
			break
		}
		m.res.put(r)
		due := r.expiresAtMs
		if r.state.Terminal() {
			due = r.finishedAtMs + m.cfg.RetainFinishedMs
		} else {
			m.active[r.buyer]++
			if r.state == StateActive {
				m.stats.ActiveHolds++
			}
		}
		m.table(r.table).wheel.Add(resKey(r.id), due)
	}

	seen := 0 // waiting reservations placed in a queue or draw
	for _, id := range m.poolIDs {
		if d.Err() != nil {
			break
		}
		p := m.pools[id]
		n = d.Uvarint()
		var last string
		for i := uint64(0); i < n && d.Err() == nil; i++ {
			buyer := d.String(MaxIDLen)
			if i > 0 && buyer <= last {
				d.Fail("buyers not strictly increasing")
				break
			}
			last = buyer
			m.addUsage(p, buyer, d.Varint())
		}
		place := func(want uint8) *reservation {
			r := m.res.get(d.Uvarint())
			if r == nil || r.state != StateWaiting || r.where != want || r.lines[0].pool != p {
				d.Fail("queue names a reservation that does not wait there")
				return nil
			}
			r.where = waitNone // placed; restored below
			seen++
			return r
		}
		if d.Byte() != 0 {
			if p.Config.Mode != ModeDraw {
				d.Fail("draw entries on a pool that is not a draw")
				break
			}
			p.draw = &drawState{byBuyer: map[string]*reservation{}}
			n = d.Uvarint()
			for i := uint64(0); i < n && d.Err() == nil; i++ {
				if r := place(waitInDraw); r != nil {
					if p.draw.byBuyer[r.buyer] != nil {
						d.Fail("two draw entries of one buyer")
						break
					}
					r.where, r.ticket = waitInDraw, uint64(len(p.draw.entrants))
					p.draw.entrants = append(p.draw.entrants, r)
					p.draw.byBuyer[r.buyer] = r
				}
			}
			m.tableByID[0].wheel.Add(poolKey(p.seq), p.Config.Draw.ClosesAtMs)
		}
		n = d.Uvarint()
		for i := uint64(0); i < n && d.Err() == nil; i++ {
			if i >= MaxWaiting {
				d.Fail("waitlist too long")
				break
			}
			if r := place(waitInQueue); r != nil {
				r.where = waitInQueue
				p.waitq.push(r)
				m.waiting++
			}
		}
	}
	waiting := 0
	m.res.each(func(r *reservation) {
		if r.state == StateWaiting {
			waiting++
		}
	})
	if d.Err() == nil && seen != waiting {
		d.Fail("a waiting reservation is in no queue")
	}

	var lastSeq uint64
	n = d.Uvarint()
	for i := uint64(0); i < n && d.Err() == nil; i++ {
		rec := &idemRecord{seq: d.Uvarint()}
		key := d.String(MaxIDLen)
		rec.expiresAtMs = d.Varint()
		d.Bytes(rec.hash[:])
		rec.result = readResult(d, version)
		if rec.seq <= lastSeq || rec.seq > m.idemSeq || m.idem[key] != nil {
			d.Fail("idempotency records not strictly increasing within 1..seq, or a key twice")
			break
		}
		lastSeq = rec.seq
		if i == 0 {
			m.idemOldest = rec.seq - 1
		}
		m.idem[key] = rec
		m.idemBySeq[rec.seq] = key
		m.tableByID[0].wheel.Add(idemKey(rec.seq), rec.expiresAtMs)
	}
	if n == 0 {
		m.idemOldest = m.idemSeq
	}
	if err := d.End(); err != nil {
		return fmt.Errorf("allocator: restore: %w", err)
	}
	return nil
}
