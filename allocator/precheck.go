package allocator

import "github.com/holdfast/holdfast/internal/wire"

// Refusals without a log entry. In a sold-out drop almost every request is
// refused, and a refusal changes nothing but demand counts, so the leader
// may answer it from its applied state after a read barrier (a linearizable
// read) instead of replicating it: Precheck decides whether that is safe and
// what the answer is, and a later KindRefusals command records the batch of
// answers: their demand, and their results under their idempotency keys.

// MaxRefusals bounds the refusals one KindRefusals command records.
const MaxRefusals = 1024

// Refusal is a reserve request a leader refused from its state without a
// log entry (see Precheck), as recorded by a KindRefusals command.
type Refusal struct {
	// IdemKey and ReqHash are the request's, if it had a key: the refusal
	// becomes the key's first answer unless the key already has one.
	IdemKey string
	ReqHash [HashLen]byte
	// Err is the answer given: code, message and every line's state.
	Err *Error
}

// Precheck tells, changing nothing, whether applying reserve command c in
// an entry stamped nowMs would certainly answer res and change nothing but
// demand counts: ok is false whenever that is not certain, and the command
// must then go through the log. fresh reports a new refusal, which the
// caller records with a KindRefusals command; otherwise res is the replay
// of c's idempotency key (or its mismatch error).
//
// Precheck is only as current as the applied state: the caller makes it
// linearizable with a read barrier first. It declines when any deadline is
// due by nowMs in any lease table (a hold may be about to come back), for open draws (an entry is a state change), for a
// buyer at the active-reservation cap, and for requests that would hold or
// queue anything.
func (m *Machine) Precheck(c *Command, nowMs int64) (res Result, fresh, ok bool) {
	if c.Kind != KindReserve || !ValidID(c.Buyer) || len(c.Lines) == 0 || len(c.Lines) > MaxLines {
		return Result{}, false, false
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	nowMs = max(nowMs, m.clockMs)
	if c.IdemKey != "" {
		if rec := m.idem[c.IdemKey]; rec != nil {
			if rec.expiresAtMs <= nowMs {
				return Result{}, false, false // the log forgets it first
			}
			if rec.hash != c.ReqHash {
				return Result{Err: MismatchError(c.IdemKey)}, false, true
			}
			r := rec.result
			r.Replayed = true
			return r, false, true
		}
	}
	if m.dueBy(nowMs) {
		return Result{}, false, false
	}
	var poolBuf [8]*Pool
	pools := poolBuf[:0]
	minCap := int64(MaxTTLMs)
	for _, l := range c.Lines {
		p := m.pools[l.Pool]
		if p == nil || l.Qty < 1 || l.Qty > MaxQty || p.draw != nil {
			return Result{}, false, false
		}
		pools = append(pools, p)
		minCap = min(minCap, p.Config.MaxHoldTTLMs)
	}
	// Requests reserve would reject as invalid take the log's answer.
	if c.Wait && (len(c.Lines) != 1 || !pools[0].Config.Waitlist.Enabled) {
		return Result{}, false, false
	}
	if ttl := c.TTLMs; ttl != 0 && (ttl < MinTTLMs || ttl > minCap) {
		return Result{}, false, false
	}
	if m.active[c.Buyer] >= int32(m.cfg.MaxActivePerBuyer) {
		return Result{}, false, false
	}
	var stateBuf [8]LineState
	states := stateBuf[:0]
	if len(c.Lines) > len(stateBuf) {
		states = make([]LineState, 0, len(c.Lines))
	}
	states = states[:len(c.Lines)]
	held, firstFail := classify(c, pools, states)
	if firstFail < 0 || (c.Partial && held > 0) {
		return Result{}, false, false
	}
	return Result{Err: refusal(c, states, firstFail)}, true, true
}

// dueBy reports whether any lease table has a deadline due by nowMs (or
// cannot rule one out: NextDueMs may be early, never late). Every table
// counts: a reservation lives in its first line's pool's table, so a hold
// of any pool, or a buyer's hold that counts against a limit, may be in
// any of them. There is one table per hot pool, so few.
func (m *Machine) dueBy(nowMs int64) bool {
	if len(m.tables) > maxPrecheckTables {
		return true
	}
	for _, t := range m.tables {
		if due, ok := t.wheel.NextDueMs(); ok && due <= nowMs {
			return true
		}
	}
	return false
}

// maxPrecheckTables bounds dueBy's scan: with more hot pools than this,
// refusals go through the log.
const maxPrecheckTables = 64

// recordRefusals applies a KindRefusals command: each refusal counts as a
// denied request in its pools' demand (a line that would have fit counts
// as a request, as reserve counts it) and becomes its idempotency key's
// answer. A key that already has an answer keeps it, and the refusal is
// then not counted: the log's first answer under a key stands.
func (m *Machine) recordRefusals(rs []Refusal) Result {
	for i := range rs {
		r := &rs[i]
		if r.IdemKey != "" && m.idem[r.IdemKey] != nil {
			continue
		}
		m.stats.Refused++
		for _, l := range r.Err.Lines {
			if p := m.pools[l.Pool]; p != nil {
				m.recordDemand(p, l.State != LineAvailable)
			}
		}
		if r.IdemKey != "" {
			m.remember(r.IdemKey, r.ReqHash, Result{Err: r.Err})
		}
	}
	return Result{}
}

// decodeRefusals decodes a KindRefusals command's body. Only what
// Precheck can produce is accepted: sold_out or buyer_limit refusals whose
// lines are valid and were refused, or would have fit.
func decodeRefusals(d *wire.Decoder) []Refusal {
	n := d.Uvarint()
	if n == 0 || n > MaxRefusals {
		d.Fail("refusal count out of range")
		return nil
	}
	rs := make([]Refusal, n)
	for i := range rs {
		r := &rs[i]
		if r.IdemKey = d.String(MaxIDLen); r.IdemKey != "" {
			d.Bytes(r.ReqHash[:])
		}
		code := Code(d.Byte())
		lines := readLines(d)
		if d.Err() != nil {
			return nil
		}
		if (code != SoldOut && code != BuyerLimit) || len(lines) == 0 || (r.IdemKey != "" && !ValidID(r.IdemKey)) {
			d.Fail("not a refusal")
			return nil
		}
		for _, l := range lines {
			if !ValidID(l.Pool) || l.Qty < 1 || l.Qty > MaxQty ||
				(l.State != LineSoldOut && l.State != LineBuyerLimit && l.State != LineAvailable) {
				d.Fail("not a refused line")
				return nil
			}
		}
		r.Err = &Error{Code: code, Message: refusalMessage(code), Lines: lines}
	}
	return rs
}
