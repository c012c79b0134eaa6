package allocator

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/holdfast/holdfast/lease"
)

// snapshotVersion is the first byte of every snapshot.
const snapshotVersion = 1

// Snapshot returns the canonical encoding of the whole state: the same state
// gives the same bytes on every replica (every collection is written in
// sorted order), so its hash compares replicas. The timing wheel is not
// written: it is rebuilt from the deadlines on restore.
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
	b = binary.AppendUvarint(b, m.nextID)
	b = binary.AppendUvarint(b, m.idemSeq)

	b = binary.AppendUvarint(b, uint64(len(m.poolIDs)))
	for _, id := range m.poolIDs {
		p := m.pools[id]
		b = appendString(b, p.ID)
		b = appendConfig(b, &p.Config)
		b = binary.AppendVarint(b, p.Held)
		b = binary.AppendVarint(b, p.Sold)
		b = binary.AppendVarint(b, p.CreatedAtMs)
		b = binary.AppendVarint(b, p.UpdatedAtMs)
	}

	b = binary.AppendUvarint(b, uint64(m.res.len()))
	m.res.each(func(r *reservation) {
		b = binary.AppendUvarint(b, r.id)
		b = appendString(b, r.buyer)
		b = append(b, byte(r.state))
		for _, v := range [...]int64{r.createdAtMs, r.expiresAtMs, r.capMs, r.extensions, r.maxExtensions, r.position, r.finishedAtMs} {
			b = binary.AppendVarint(b, v)
		}
		b = binary.AppendUvarint(b, uint64(len(r.lines)))
		for _, l := range r.lines {
			b = appendString(b, l.pool.ID)
			b = binary.AppendVarint(b, l.qty)
			b = append(b, byte(l.state))
		}
	})

	// Per-buyer usage, pool by pool (pools in id order, buyers sorted).
	for _, id := range m.poolIDs {
		p := m.pools[id]
		buyers := make([]string, 0, len(p.usage))
		for buyer := range p.usage {
			buyers = append(buyers, buyer)
		}
		slices.Sort(buyers)
		b = binary.AppendUvarint(b, uint64(len(buyers)))
		for _, buyer := range buyers {
			b = appendString(b, buyer)
			b = binary.AppendVarint(b, p.usage[buyer])
		}
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
		b = appendString(b, key)
		b = binary.AppendVarint(b, rec.expiresAtMs)
		b = append(b, rec.hash[:]...)
		b = appendResult(b, &rec.result)
	}
	return b
}

func appendConfig(b []byte, c *PoolConfig) []byte {
	for _, v := range [...]int64{c.OnHand, c.PerBuyerLimit, c.HoldTTLMs, c.MaxHoldTTLMs, c.MaxExtensions, c.Draw.OpensAtMs, c.Draw.ClosesAtMs, c.Waitlist.OfferTTLMs, c.Waitlist.WaitTTLMs} {
		b = binary.AppendVarint(b, v)
	}
	b = append(b, byte(c.Mode), boolByte(c.Waitlist.Enabled))
	return appendString(b, c.Draw.Seed)
}

func readConfig(d *decoder, c *PoolConfig) {
	for _, v := range [...]*int64{&c.OnHand, &c.PerBuyerLimit, &c.HoldTTLMs, &c.MaxHoldTTLMs, &c.MaxExtensions, &c.Draw.OpensAtMs, &c.Draw.ClosesAtMs, &c.Waitlist.OfferTTLMs, &c.Waitlist.WaitTTLMs} {
		*v = d.varint()
	}
	c.Mode = Mode(d.byte())
	c.Waitlist.Enabled = d.byte() != 0
	c.Draw.Seed = d.string(MaxIDLen)
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
		b = appendString(b, r.Err.Message)
		b = appendLines(b, r.Err.Lines)
	}
	b = append(b, boolByte(r.Pool != nil))
	if p := r.Pool; p != nil {
		b = appendString(b, p.ID)
		b = appendConfig(b, &p.Config)
		for _, v := range [...]int64{p.Held, p.Sold, p.Available, p.CreatedAtMs, p.UpdatedAtMs} {
			b = binary.AppendVarint(b, v)
		}
		b = append(b, byte(p.Claim))
	}
	b = append(b, boolByte(r.Reservation != nil))
	if v := r.Reservation; v != nil {
		b = binary.AppendUvarint(b, v.ID)
		b = appendString(b, v.Buyer)
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
		b = appendString(b, l.Pool)
		b = binary.AppendVarint(b, l.Qty)
		b = append(b, byte(l.State))
	}
	return b
}

func readLines(d *decoder) []LineView {
	n := d.uvarint()
	if n > MaxLines {
		d.fail("too many lines")
		return nil
	}
	if n == 0 {
		return nil
	}
	ls := make([]LineView, n)
	for i := range ls {
		ls[i] = LineView{Pool: d.string(MaxIDLen), Qty: d.varint(), State: LineState(d.byte())}
	}
	return ls
}

func readResult(d *decoder) Result {
	var r Result
	r.Created = d.byte() != 0
	if d.byte() != 0 {
		r.Err = &Error{Code: Code(d.byte()), Message: d.string(1 << 16)}
		r.Err.Lines = readLines(d)
	}
	if d.byte() != 0 {
		p := &PoolView{ID: d.string(MaxIDLen)}
		readConfig(d, &p.Config)
		for _, v := range [...]*int64{&p.Held, &p.Sold, &p.Available, &p.CreatedAtMs, &p.UpdatedAtMs} {
			*v = d.varint()
		}
		p.Claim = Claim(d.byte())
		r.Pool = p
	}
	if d.byte() != 0 {
		v := &ReservationView{ID: d.uvarint(), Buyer: d.string(MaxIDLen), State: ReservationState(d.byte())}
		for _, x := range [...]*int64{&v.CreatedAtMs, &v.ExpiresAtMs, &v.Extensions, &v.Position} {
			*x = d.varint()
		}
		v.Lines = readLines(d)
		r.Reservation = v
	}
	return r
}

// Restore replaces the state with a snapshot written by Snapshot.
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
	m.pools, m.poolIDs, m.res = fresh.pools, fresh.poolIDs, fresh.res
	m.idem, m.idemBySeq, m.idemSeq, m.idemOldest = fresh.idem, fresh.idemBySeq, fresh.idemSeq, fresh.idemOldest
	m.wheel = fresh.wheel
	m.stats = fresh.stats
	return nil
}

func (m *Machine) decodeSnapshot(data []byte) error {
	d := decoder{b: data}
	if v := d.byte(); v != snapshotVersion {
		return fmt.Errorf("%w: snapshot version %d", ErrCorrupt, v)
	}
	m.clockMs = d.varint()
	m.nextID = d.uvarint()
	m.idemSeq = d.uvarint()
	m.wheel = lease.NewWheel(m.clockMs)

	if m.nextID >= maxSeq || m.idemSeq >= maxSeq {
		d.fail("sequence out of range")
	}

	// Every collection must be strictly increasing in its key: that rules
	// out duplicates, which would corrupt the indexes built below.
	n := d.uvarint()
	for i := uint64(0); i < n && d.err == nil; i++ {
		p := &Pool{ID: d.string(MaxIDLen)}
		readConfig(&d, &p.Config)
		p.Held, p.Sold, p.CreatedAtMs, p.UpdatedAtMs = d.varint(), d.varint(), d.varint(), d.varint()
		if !ValidID(p.ID) || (i > 0 && p.ID <= m.poolIDs[i-1]) {
			d.fail("pool ids not valid and strictly increasing")
			break
		}
		m.pools[p.ID] = p
		m.poolIDs = append(m.poolIDs, p.ID)
	}

	var lastID uint64
	n = d.uvarint()
	for i := uint64(0); i < n && d.err == nil; i++ {
		r := &reservation{id: d.uvarint(), buyer: d.string(MaxIDLen), state: ReservationState(d.byte())}
		if r.id <= lastID || r.id > m.nextID || r.state > StateExpired {
			d.fail("reservation ids not strictly increasing within 1..next id")
			break
		}
		lastID = r.id
		for _, v := range [...]*int64{&r.createdAtMs, &r.expiresAtMs, &r.capMs, &r.extensions, &r.maxExtensions, &r.position, &r.finishedAtMs} {
			*v = d.varint()
		}
		nl := d.uvarint()
		if nl > MaxLines {
			d.fail("too many lines")
			break
		}
		r.setLines(int(nl))
		for j := range r.lines {
			id := d.string(MaxIDLen)
			p := m.pools[id]
			if p == nil {
				d.fail("line names an unknown pool")
				break
			}
			r.lines[j] = line{pool: p, qty: d.varint(), state: LineState(d.byte())}
		}
		m.res.put(r)
		due := r.expiresAtMs
		if r.state.Terminal() {
			due = r.finishedAtMs + m.cfg.RetainFinishedMs
		} else {
			m.stats.ActiveHolds++
		}
		m.wheel.Add(r.id<<1|wheelReservation, due)
	}

	for _, id := range m.poolIDs {
		p := m.pools[id]
		n = d.uvarint()
		var last string
		for i := uint64(0); i < n && d.err == nil; i++ {
			buyer := d.string(MaxIDLen)
			if i > 0 && buyer <= last {
				d.fail("buyers not strictly increasing")
				break
			}
			last = buyer
			if p.usage == nil {
				p.usage = make(map[string]int64)
			}
			p.usage[buyer] = d.varint()
		}
	}

	var lastSeq uint64
	n = d.uvarint()
	for i := uint64(0); i < n && d.err == nil; i++ {
		rec := &idemRecord{seq: d.uvarint()}
		key := d.string(MaxIDLen)
		rec.expiresAtMs = d.varint()
		d.bytes(rec.hash[:])
		rec.result = readResult(&d)
		if rec.seq <= lastSeq || rec.seq > m.idemSeq || m.idem[key] != nil {
			d.fail("idempotency records not strictly increasing within 1..seq, or a key twice")
			break
		}
		lastSeq = rec.seq
		if i == 0 {
			m.idemOldest = rec.seq - 1
		}
		m.idem[key] = rec
		m.idemBySeq[rec.seq] = key
		m.wheel.Add(rec.seq<<1|wheelIdem, rec.expiresAtMs)
	}
	if n == 0 {
		m.idemOldest = m.idemSeq
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return fmt.Errorf("allocator: restore: %w", d.err)
	}
	return nil
}
