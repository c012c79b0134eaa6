package allocator

import "sort"

// DefaultPoolConfig returns a config with every default filled in and the
// given on_hand.
func DefaultPoolConfig(onHand int64) PoolConfig {
	return PoolConfig{
		OnHand:        onHand,
		HoldTTLMs:     DefaultHoldTTLMs,
		MaxHoldTTLMs:  DefaultMaxHoldTTLMs,
		MaxExtensions: DefaultMaxExtensions,
		Waitlist:      WaitlistConfig{OfferTTLMs: DefaultOfferTTLMs, WaitTTLMs: DefaultWaitTTLMs},
		Demand: DemandConfig{
			WarmRPS: DefaultWarmRPS, HotRPS: DefaultHotRPS,
			LowStockUnits: DefaultLowStockUnits, LowStockPercent: DefaultLowStockPercent,
			HorizonMs: DefaultHorizonMs,
		},
	}
}

// Validate checks a fully specified config against the contract's ranges.
func (c *PoolConfig) Validate() *Error {
	d := &c.Demand
	switch {
	case c.OnHand < 0 || c.OnHand > MaxStock:
		return errorf(InvalidArgument, "on_hand must be between 0 and %d", int64(MaxStock))
	case c.PerBuyerLimit < 0 || c.PerBuyerLimit > MaxStock:
		return errorf(InvalidArgument, "per_buyer_limit must be between 0 (no limit) and %d", int64(MaxStock))
	case c.HoldTTLMs < MinTTLMs || c.HoldTTLMs > MaxTTLMs:
		return errorf(InvalidArgument, "hold_ttl_ms must be between %d and %d", MinTTLMs, MaxTTLMs)
	case c.MaxHoldTTLMs < c.HoldTTLMs || c.MaxHoldTTLMs > MaxTTLMs:
		return errorf(InvalidArgument, "max_hold_ttl_ms must be between hold_ttl_ms and %d", MaxTTLMs)
	case c.MaxExtensions < 0 || c.MaxExtensions > MaxExtensions:
		return errorf(InvalidArgument, "max_extensions must be between 0 and %d", MaxExtensions)
	case c.Mode != ModeFCFS && c.Mode != ModeDraw:
		return errorf(InvalidArgument, "mode must be fcfs or draw")
	case c.Mode == ModeDraw && c.Draw.ClosesAtMs <= c.Draw.OpensAtMs:
		return errorf(InvalidArgument, "draw.closes_at must be after draw.opens_at")
	case c.Mode == ModeDraw && c.Draw.ClosesAtMs-c.Draw.OpensAtMs > MaxTTLMs:
		return errorf(InvalidArgument, "a draw window is at most 30 days")
	case c.Mode == ModeDraw && c.Draw.Seed == "":
		return errorf(InvalidArgument, "a draw needs a seed (draw.seed)")
	case len(c.Draw.Seed) > MaxIDLen:
		return errorf(InvalidArgument, "draw.seed must be at most %d bytes", MaxIDLen)
	case c.Waitlist.OfferTTLMs < MinTTLMs || c.Waitlist.OfferTTLMs > MaxTTLMs:
		return errorf(InvalidArgument, "waitlist.offer_ttl_ms must be between %d and %d", MinTTLMs, MaxTTLMs)
	case c.Waitlist.WaitTTLMs < MinTTLMs || c.Waitlist.WaitTTLMs > MaxTTLMs:
		return errorf(InvalidArgument, "waitlist.wait_ttl_ms must be between %d and %d", MinTTLMs, MaxTTLMs)
	case d.WarmRPS < 1 || d.HotRPS < d.WarmRPS || d.HotRPS > 1_000_000_000:
		return errorf(InvalidArgument, "demand.warm_rps must be at least 1 and at most demand.hot_rps (at most 1e9)")
	case d.LowStockUnits < 0 || d.LowStockUnits > MaxStock:
		return errorf(InvalidArgument, "demand.low_stock_units must be between 0 and %d", int64(MaxStock))
	case d.LowStockPercent < 0 || d.LowStockPercent > 100:
		return errorf(InvalidArgument, "demand.low_stock_percent must be between 0 and 100")
	case d.HorizonMs < 0 || d.HorizonMs > MaxTTLMs:
		return errorf(InvalidArgument, "demand.horizon_ms must be between 0 and %d", MaxTTLMs)
	}
	return nil
}

func (m *Machine) putPool(id string, cfg *PoolConfig) Result {
	if !ValidID(id) {
		return Result{Err: errorf(InvalidArgument, "bad pool id")}
	}
	if err := cfg.Validate(); err != nil {
		return Result{Err: err}
	}
	p := m.pools[id]
	created := p == nil
	if !created {
		if cfg.OnHand < p.Held+p.Sold {
			return Result{Err: errorf(InvalidState, "on_hand %d is below held+sold %d", cfg.OnHand, p.Held+p.Sold)}
		}
		if p.draw != nil && len(p.draw.byBuyer) > 0 && (cfg.Mode != ModeDraw || cfg.Draw != p.Config.Draw) {
			return Result{Err: errorf(InvalidState, "the draw has entries: its mode, window and seed are fixed until it closes")}
		}
	} else {
		m.nextPoolSeq++
		p = &Pool{ID: id, seq: m.nextPoolSeq, CreatedAtMs: m.clockMs}
		m.pools[id] = p
		m.poolBySeq[p.seq] = p
		i := sort.SearchStrings(m.poolIDs, id)
		m.poolIDs = append(m.poolIDs, "")
		copy(m.poolIDs[i+1:], m.poolIDs[i:])
		m.poolIDs[i] = id
	}
	old := p.Config
	p.Config = *cfg
	p.UpdatedAtMs = m.clockMs
	// A new or changed draw opens (again); its close is a deadline.
	if cfg.Mode == ModeDraw && (created || old.Mode != ModeDraw || old.Draw != cfg.Draw) {
		p.draw = &drawState{byBuyer: map[string]*reservation{}}
		m.tableByID[0].wheel.Add(poolKey(p.seq), cfg.Draw.ClosesAtMs)
	}
	if cfg.Mode != ModeDraw && p.draw != nil {
		m.tableByID[0].wheel.Cancel(poolKey(p.seq))
		p.draw = nil
	}
	m.serve(p, cfg.Waitlist.OfferTTLMs) // more stock may serve the waitlist
	return Result{Created: created, Pool: m.poolView(p)}
}

func (m *Machine) adjustPool(id string, delta int64) Result {
	p := m.pools[id]
	if p == nil {
		return Result{Err: errorf(NotFound, "no pool %q", id)}
	}
	if delta < -MaxStock || delta > MaxStock {
		return Result{Err: errorf(InvalidArgument, "delta must be between %d and %d", int64(-MaxStock), int64(MaxStock))}
	}
	onHand := p.Config.OnHand + delta
	if onHand > MaxStock {
		return Result{Err: errorf(InvalidArgument, "on_hand would exceed %d", int64(MaxStock))}
	}
	if onHand < p.Held+p.Sold {
		return Result{Err: errorf(InvalidState, "on_hand %d would be below held+sold %d", onHand, p.Held+p.Sold)}
	}
	p.Config.OnHand = onHand
	p.UpdatedAtMs = m.clockMs
	m.serve(p, p.Config.Waitlist.OfferTTLMs)
	return Result{Pool: m.poolView(p)}
}

// recordDemand counts a request on p and moves it between lease tables as
// its heat crosses hot.
func (m *Machine) recordDemand(p *Pool, denied bool) {
	before, after := p.demand.record(&p.Config.Demand, m.clockMs, denied)
	switch {
	case after == HeatHot && p.table == 0:
		m.newTable(p)
	case after == HeatCold && before != HeatCold:
		m.retireTable(p)
	}
}

// claimOf says how a cart may present a line drawing from p at nowMs.
func claimOf(p *Pool, nowMs int64) Claim {
	avail := p.Available()
	d := &p.Config.Demand
	req, _ := p.demand.counts(nowMs)
	switch {
	case avail <= 0 || p.waitq.len() > 0:
		// Queued buyers are served first: nothing is for a new cart.
		return ClaimSoldOut
	case p.Config.Mode == ModeDraw && p.draw != nil:
		return ClaimConfirmAtCheckout // the draw decides
	case p.demand.heatAt(d, nowMs) == HeatHot,
		avail < d.LowStockUnits,
		avail*100 < d.LowStockPercent*p.Config.OnHand,
		d.HorizonMs > 0 && req*d.HorizonMs >= avail*DemandWindowMs:
		return ClaimConfirmAtCheckout
	}
	return ClaimSoft
}

func (m *Machine) poolView(p *Pool) *PoolView {
	req, den := p.demand.counts(m.clockMs)
	v := &PoolView{
		ID:             p.ID,
		Config:         p.Config,
		Held:           p.Held,
		Sold:           p.Sold,
		Available:      p.Available(),
		Claim:          claimOf(p, m.clockMs),
		Heat:           p.demand.heatAt(&p.Config.Demand, m.clockMs),
		RequestsPerSec: float64(req) * 1000 / DemandWindowMs,
		DenialsPerSec:  float64(den) * 1000 / DemandWindowMs,
		Waiting:        int64(p.waitq.len()),
		WaitingQty:     p.waitq.qty,
		Stats:          p.stats,
		CreatedAtMs:    p.CreatedAtMs,
		UpdatedAtMs:    p.UpdatedAtMs,
	}
	if p.draw != nil {
		v.DrawEntries = int64(len(p.draw.byBuyer))
	}
	v.DrawClosed = p.Config.Mode == ModeDraw && p.draw == nil
	return v
}

// Pool returns a pool, or a not_found error.
func (m *Machine) Pool(id string) (*PoolView, *Error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	p := m.pools[id]
	if p == nil {
		return nil, errorf(NotFound, "no pool %q", id)
	}
	return m.poolView(p), nil
}

// HotPools returns up to n pools that are hot (those with a lease table of
// their own), busiest first, for metrics with bounded label cardinality.
func (m *Machine) HotPools(n int) []*PoolView {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []*PoolView
	for _, t := range m.tables {
		if t.owner != nil {
			out = append(out, m.poolView(t.owner))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].RequestsPerSec != out[j].RequestsPerSec {
			return out[i].RequestsPerSec > out[j].RequestsPerSec
		}
		return out[i].ID < out[j].ID
	})
	return out[:min(n, len(out))]
}

// Pools lists up to limit pools with ids after the given one, in id order,
// and reports whether more follow.
func (m *Machine) Pools(after string, limit int) ([]*PoolView, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	i := sort.SearchStrings(m.poolIDs, after)
	if i < len(m.poolIDs) && m.poolIDs[i] == after {
		i++
	}
	end := min(len(m.poolIDs), i+limit)
	out := make([]*PoolView, 0, end-i)
	for _, id := range m.poolIDs[i:end] {
		out = append(out, m.poolView(m.pools[id]))
	}
	return out, end < len(m.poolIDs)
}
