package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Check statuses.
const (
	statusOK   = "ok"
	statusFail = "FAIL"
	statusNA   = "n/a"
	statusInfo = "info"
)

// ledgerInput is what the harness knows after a run, to be checked
// against the target's final state.
type ledgerInput struct {
	pools []PoolSpec
	// holds are the ids of every hold the target handed out.
	holds []string
	// acked maps each hold whose confirm the target acknowledged to its
	// units.
	acked map[string]int64
	// lastExpiry is the latest expires_at of a hold the harness knows; once
	// it has passed, a pool without a waitlist must hold nothing.
	lastExpiry time.Time
	// noWait reads the ledger at once instead of waiting for lastExpiry
	// (a find-max ramp step: the stuck-holds check is then n/a unless
	// every hold is already due).
	noWait bool
}

// checkLedger reads the target's final state and appends the checks:
//
//   - oversell: per pool, sold + held above the stock the scenario set up
//     (and sold alone above it); must be 0;
//   - buyer limit: (buyer, pool) pairs holding or having bought more than
//     the pool's per-buyer limit (units in active, waiting and confirmed
//     holds, as the target's ledger reports them); must be 0;
//   - confirms missing: acknowledged confirms whose hold the target does
//     not have as sold; must be 0;
//   - sold below acknowledged: units of acknowledged confirms beyond what
//     the pools count as sold; must be 0 (the reverse, sales whose
//     acknowledgement was lost in transport, is reported as info);
//   - stuck holds: units still held in pools without a waitlist after
//     every hold the harness knows of has expired; must be 0.
//
// It returns the ledger, or ok=false when there is none (no-op target or
// a read error, reported as n/a).
func checkLedger(ctx context.Context, t Target, in ledgerInput, tr *TargetReport) (Ledger, bool) {
	names := make([]string, len(in.pools))
	for i, p := range in.pools {
		names[i] = p.ID
	}
	// Let every known hold fall due before reading, within reason.
	if wait := time.Until(in.lastExpiry.Add(500 * time.Millisecond)); !in.noWait && wait > 0 && wait < 15*time.Second {
		time.Sleep(wait)
	}
	holds := dedupe(in.holds)
	l, err := t.Ledger(ctx, names, holds)
	if err != nil {
		msg := "ledger read failed: " + err.Error()
		if isNoLedger(err) {
			msg = "target keeps no state"
		}
		for _, n := range []string{"oversell (units)", "buyer limit violations", "acknowledged confirms missing", "sold below acknowledged (units)", "stuck holds (units)"} {
			tr.Checks = append(tr.Checks, Check{Name: n, Status: statusNA, Detail: msg})
		}
		return l, false
	}
	var oversell, soldOver, missingPools, sold int64
	worst := ""
	for _, p := range in.pools {
		pl, ok := l.Pools[p.ID]
		if !ok {
			missingPools++
			continue
		}
		sold += pl.Sold
		if over := pl.Sold + pl.Held - p.OnHand; over > 0 {
			oversell += over
			if worst == "" {
				worst = fmt.Sprintf("%s: on_hand %d held %d sold %d (stock %d)", p.ID, pl.OnHand, pl.Held, pl.Sold, p.OnHand)
			}
		}
		if pl.Sold > p.OnHand {
			soldOver += pl.Sold - p.OnHand
		}
	}
	c := Check{Name: "oversell (units)", Value: oversell, Of: sumStock(in.pools), Detail: worst}
	c.Status = passIf(oversell == 0 && soldOver == 0 && missingPools == 0)
	if missingPools > 0 {
		c.Detail = fmt.Sprintf("%d pools missing from the ledger", missingPools)
	}
	tr.Checks = append(tr.Checks, c)

	limits := map[string]int64{}
	for _, p := range in.pools {
		if p.PerBuyerLimit > 0 {
			limits[p.ID] = p.PerBuyerLimit
		}
	}
	var over int64
	detail := ""
	for bp, u := range l.BuyerUnits {
		if lim, ok := limits[bp.Pool]; ok && u > lim {
			over++
			if detail == "" || bp.Buyer < detail {
				detail = bp.Buyer
			}
		}
	}
	if detail != "" {
		detail = "e.g. " + detail
	}
	tr.Checks = append(tr.Checks, Check{Name: "buyer limit violations", Value: over, Of: int64(len(l.BuyerUnits)), Status: passIf(over == 0), Detail: detail})

	var missing, ackedUnits int64
	first := ""
	for id, u := range in.acked {
		ackedUnits += u
		if !l.Confirmed[id] {
			missing++
			if first == "" || id < first {
				first = id
			}
		}
	}
	if first != "" {
		first = "e.g. " + first
	}
	tr.Checks = append(tr.Checks, Check{Name: "acknowledged confirms missing", Value: missing, Of: int64(len(in.acked)), Status: passIf(missing == 0), Detail: first})
	below := max(ackedUnits-sold, 0)
	tr.Checks = append(tr.Checks, Check{Name: "sold below acknowledged (units)", Value: below, Of: ackedUnits, Status: passIf(below == 0),
		Detail: fmt.Sprintf("sold %d, acknowledged %d, unacknowledged sales %d", sold, ackedUnits, max(sold-ackedUnits, 0))})

	if len(holds) == 0 {
		tr.Checks = append(tr.Checks, Check{Name: "stuck holds (units)", Status: statusNA, Detail: "no holds"})
	} else if time.Now().Before(in.lastExpiry) {
		tr.Checks = append(tr.Checks, Check{Name: "stuck holds (units)", Status: statusNA, Detail: "holds not yet due"})
	} else {
		var stuck int64
		checked := 0
		for _, p := range in.pools {
			if p.Waitlist || p.Draw != nil {
				continue // offers the harness does not know of may be live
			}
			checked++
			stuck += l.Pools[p.ID].Held
		}
		if checked == 0 {
			tr.Checks = append(tr.Checks, Check{Name: "stuck holds (units)", Status: statusNA, Detail: "waitlist offers may be live"})
		} else {
			tr.Checks = append(tr.Checks, Check{Name: "stuck holds (units)", Value: stuck, Status: passIf(stuck == 0),
				Detail: "held units after every known hold expired"})
		}
	}
	return l, true
}

func passIf(ok bool) string {
	if ok {
		return statusOK
	}
	return statusFail
}

func sumStock(pools []PoolSpec) int64 {
	var s int64
	for _, p := range pools {
		s += p.OnHand
	}
	return s
}

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if id != "" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// jain is Jain's fairness index (sum x)^2 / (n sum x^2) over xs, 0 when
// nothing was given out.
func jain(xs []int64) float64 {
	var s, s2 float64
	for _, x := range xs {
		s += float64(x)
		s2 += float64(x) * float64(x)
	}
	if s2 == 0 || len(xs) == 0 {
		return 0
	}
	return s * s / (float64(len(xs)) * s2)
}

// ---- expiry lag ----

// expiryProbes measures how long a target takes to give back the units of
// an abandoned hold. Each probe pool (one unit, nothing else touches it)
// is reserved with a short TTL and never confirmed; from expires_at the
// probe polls the pool (PoolReader, else Ledger on that pool) every 2 ms
// until the unit is available again. The lag recorded is the time the
// first read that saw it back returned, minus expires_at: an upper bound,
// within one poll interval plus one read. expires_at comes from the
// target's clock, so harness and target must share a clock (same host, or
// NTP-synchronised: skew adds to the lag). The probes run during the whole
// load phase, so they see the target's expiry machinery under that load.
type expiryProbes struct {
	t    Target
	ids  []string
	ttl  time.Duration
	mu   sync.Mutex
	hist *hdrhistogram.Histogram
	// notBack counts probes whose unit was not back within 10 s;
	// noExpiry, answers without an expires_at (no measure possible).
	notBack, noExpiry, failed int64
	method                    string
}

func newExpiryProbes(t Target, prefix string, n int, ttl time.Duration) *expiryProbes {
	p := &expiryProbes{t: t, ttl: ttl, hist: hdrhistogram.New(histMin, histMax, 3)}
	for i := range n {
		p.ids = append(p.ids, prefix+"-probe-"+strconv.Itoa(i))
	}
	if _, ok := t.(PoolReader); ok {
		p.method = "probe pools polled with a pool read"
	} else {
		p.method = "probe pools polled with Ledger"
	}
	return p
}

func (p *expiryProbes) pools() []PoolSpec {
	out := make([]PoolSpec, len(p.ids))
	for i, id := range p.ids {
		out[i] = PoolSpec{ID: id, OnHand: 1, HoldTTLMs: p.ttl.Milliseconds()}
	}
	return out
}

func (p *expiryProbes) read(ctx context.Context, pool string) (int64, error) {
	if pr, ok := p.t.(PoolReader); ok {
		pl, err := pr.ReadPool(ctx, pool)
		return pl.OnHand - pl.Held - pl.Sold, err
	}
	l, err := p.t.Ledger(ctx, []string{pool}, nil)
	if err != nil {
		return 0, err
	}
	pl := l.Pools[pool]
	return pl.OnHand - pl.Held - pl.Sold, nil
}

// run cycles every probe pool until end or until stop is closed (the
// load is over); a cycle under way finishes.
func (p *expiryProbes) run(ctx context.Context, end time.Time, stop <-chan struct{}) {
	var wg sync.WaitGroup
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for i, id := range p.ids {
		wg.Go(func() {
			// Stagger the probes over one TTL.
			sleepUntil(ctx, time.Now().Add(p.ttl*time.Duration(i)/time.Duration(len(p.ids))))
			for n := 0; ctx.Err() == nil && !stopped() && time.Now().Add(p.ttl).Before(end); n++ {
				if !p.once(ctx, id, fmt.Sprintf("%s-%d", id, n)) {
					return
				}
			}
		})
	}
	wg.Wait()
}

// once runs one probe; false means the target cannot be probed.
func (p *expiryProbes) once(ctx context.Context, pool, buyer string) bool {
	h, err := p.t.Reserve(ctx, ReserveRequest{Buyer: buyer, Pool: pool, Qty: 1, TTLMs: p.ttl.Milliseconds(), IdemKey: buyer})
	if err != nil || h.Outcome != OK {
		p.count(&p.failed)
		sleepUntil(ctx, time.Now().Add(100*time.Millisecond))
		return true
	}
	if h.ExpiresAt.IsZero() {
		p.count(&p.noExpiry)
		return false
	}
	sleepUntil(ctx, h.ExpiresAt)
	deadline := h.ExpiresAt.Add(10 * time.Second)
	for ctx.Err() == nil {
		avail, err := p.read(ctx, pool)
		now := time.Now()
		if err == nil && avail >= 1 {
			p.mu.Lock()
			_ = p.hist.RecordValue(clampUs(now.Sub(h.ExpiresAt)))
			p.mu.Unlock()
			return true
		}
		if isNoLedger(err) {
			p.count(&p.noExpiry)
			return false
		}
		if now.After(deadline) {
			p.count(&p.notBack)
			return true
		}
		sleepUntil(ctx, now.Add(2*time.Millisecond))
	}
	return true
}

func (p *expiryProbes) count(c *int64) {
	p.mu.Lock()
	*c++
	p.mu.Unlock()
}

func (p *expiryProbes) report() *ExpiryLag {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := &ExpiryLag{Method: p.method, ProbeTTLMs: p.ttl.Milliseconds(), Samples: p.hist.TotalCount(), NotBack: p.notBack, Failed: p.failed}
	if e.Samples > 0 {
		e.P50 = usToMs(p.hist.ValueAtQuantile(50))
		e.P90 = usToMs(p.hist.ValueAtQuantile(90))
		e.P99 = usToMs(p.hist.ValueAtQuantile(99))
		e.Max = usToMs(p.hist.Max())
	}
	if p.noExpiry > 0 && e.Samples == 0 {
		e.Method = "n/a: the target gives no expires_at or keeps no state"
	}
	return e
}

func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
	case <-tm.C:
	}
}

func newRand(seed, stream uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, stream)) }
