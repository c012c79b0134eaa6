package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// options are the parsed command line of one bench run.
type options struct {
	scenario    string
	targets     []string
	rate        float64 // requests/s, open loop; 0: scenario default (unless closed loop)
	concurrency int     // closed loop: requests in flight
	workers     int     // open loop: most requests in flight
	duration    time.Duration
	drain       time.Duration // 0: scenario default
	timeout     time.Duration
	retries     int
	seed        uint64
	jsonPath    string
	plotPath    string
	progress    bool
	probes      int
	leaderAware bool        // holdfast targets: writes straight to the leader
	token       string      // holdfast targets: bearer token ("" for none)
	tls         *tls.Config // https targets (nil: the system's roots)

	// --find-max: a closed-loop ramp over findMaxSteps (requests in
	// flight), each findMaxStep long, stopping when throughput grows by
	// findMaxGrowth or less or p99 passes findMaxP99; then the measured
	// open-loop run at findMaxShare of the best throughput.
	findMax       bool
	findMaxSteps  []int
	findMaxStep   time.Duration
	findMaxP99    time.Duration
	findMaxShare  float64
	findMaxGrowth float64
	// findMaxPatience is how many steps in a row may fail to grow before
	// the ramp stops (one noisy step should not end it).
	findMaxPatience int
	// quickLedger is set on the options of a ramp step: its ledger is read
	// at once, without waiting for its holds to expire.
	quickLedger bool

	holdTTL            time.Duration
	abandon            float64
	thinkMin, thinkMax time.Duration
	pollEvery          time.Duration

	// drop
	buyers, units, limit int
	mode                 string
	wait                 bool
	dupes                float64
	watch                int
	reveal               time.Duration

	// retail
	pools              int
	stockMin, stockMax int
	ops                int
	readsPerWrite      float64
	maxLines           int
	skew               float64
	readThink          time.Duration

	// merge
	users          int
	conflict, same float64
	surge          time.Duration
	mergeReplay    float64
}

// scenario is a workload: drop, retail or merge.
type scenario interface {
	// sessions is how many sessions (buyers, shoppers, users) may start.
	sessions() int
	// opsPerSession is the expected number of operations of one session,
	// which turns --rate (requests/s) into session arrivals.
	opsPerSession() float64
	// defaultDrain is how long continuations may run after arrivals stop.
	defaultDrain() time.Duration
	// newRun prepares a run against one target, or says why it is skipped.
	newRun(env *runEnv) (scenarioRun, string)
}

// scenarioRun is a scenario's state against one target.
type scenarioRun interface {
	pools() []PoolSpec
	start(x *exec, i int)
	// finish reads the ledger and fills in the scenario's checks.
	finish(ctx context.Context, tr *TargetReport)
}

// runEnv is what a scenario run gets to know about its target run.
type runEnv struct {
	o      *options
	t      Target
	prefix string // unique per target run: every id starts with it
	start  time.Time
}

func (o *options) newScenario() (scenario, error) {
	switch o.scenario {
	case "drop":
		return &dropScenario{o: o}, nil
	case "retail":
		return &retailScenario{o: o}, nil
	case "merge":
		return &mergeScenario{o: o}, nil
	}
	return nil, fmt.Errorf("unknown scenario %q (drop, retail, merge)", o.scenario)
}

// runAll runs the scenario against every target in turn (never at once,
// so they do not compete for the machine).
func runAll(ctx context.Context, o *options, reg Registry, stderr io.Writer) *Report {
	rep := &Report{Scenario: o.scenario, Started: time.Now().UTC(), Settings: o.settings()}
	for i, u := range o.targets {
		if ctx.Err() != nil {
			break
		}
		rep.Targets = append(rep.Targets, runTarget(ctx, o, reg, i, u, stderr))
	}
	return rep
}

func runTarget(ctx context.Context, o *options, reg Registry, idx int, rawURL string, stderr io.Writer) *TargetReport {
	conns := o.workers
	if o.concurrency > 0 && o.rate == 0 {
		conns = o.concurrency
	}
	if o.findMax {
		conns = max(o.workers, o.findMaxSteps[len(o.findMaxSteps)-1])
	}
	t, err := reg.Open(rawURL, TargetOptions{Conns: conns, Timeout: o.timeout, Retries: o.retries, LeaderAware: o.leaderAware, Token: o.token, TLS: o.tls})
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return &TargetReport{URL: rawURL, Target: rawURL, Error: err.Error()}
	}
	defer t.Close()
	var tr *TargetReport
	if o.findMax {
		tr = runFindMax(ctx, o, t, idx, stderr)
	} else {
		tr = runPhase(ctx, o, t, idx, 0, phase{rate: o.rate, duration: o.duration, drain: o.drain, probes: true}, stderr).tr
	}
	tr.URL, tr.Target = rawURL, t.Name()
	return tr
}

// phase is one load run against an open target: fresh pools (the
// scenario's, with a prefix of their own, set up with Target.Setup, which
// also resets a peer), the load, then the scenario's checks.
type phase struct {
	// closed > 0: closed loop with this many requests in flight and think
	// times skipped (a find-max ramp step). Else open loop at rate; rate 0
	// is the scenario's default, or --concurrency's closed loop.
	closed   int
	rate     float64
	duration time.Duration
	drain    time.Duration // 0: the scenario's default
	noDrain  bool          // the run ends with the arrival window
	probes   bool
	// quick reads the ledger without waiting for holds to expire.
	quick bool
	// warmup > 0 measures the window [t0+warmup, t0+duration).
	warmup time.Duration
	label  string
}

type phaseResult struct {
	tr       *TargetReport
	window   *hdrhistogram.Histogram
	winFails int64
	winS     float64 // the measurement window's length
	// exhausted: the closed loop ran out of sessions this long after its
	// start, before the arrival window ended (0: it did not).
	exhausted time.Duration
}

// routeReporter is a target that reports how its requests were routed
// (holdfast).
type routeReporter interface {
	RouteStats() RouteStats
	DiscoveryNote() string
}

func runPhase(ctx context.Context, o *options, t Target, idx, seq int, p phase, stderr io.Writer) *phaseResult {
	po := *o
	po.quickLedger = p.quick
	res := &phaseResult{tr: &TargetReport{}}
	tr := res.tr
	sc, err := po.newScenario()
	if err != nil {
		tr.Error = err.Error()
		return res
	}
	label := fmt.Sprintf("[%s %s%s]", o.scenario, t.Name(), p.label)
	ms := strconv.FormatInt(time.Now().UnixMilli(), 36)
	prefix := fmt.Sprintf("hfb%s%d-%s", ms, idx, o.scenario[:1])
	if seq > 0 {
		prefix = fmt.Sprintf("hfb%s%d.%d-%s", ms, idx, seq, o.scenario[:1])
	}
	env := &runEnv{o: &po, t: t, prefix: prefix, start: time.Now()}
	sr, skip := sc.newRun(env)
	if sr == nil {
		tr.Skipped = skip
		fmt.Fprintf(stderr, "%s skipped: %s\n", label, skip)
		return res
	}
	if skip != "" {
		tr.Notes = append(tr.Notes, skip)
	}

	pools := sr.pools()
	var probes *expiryProbes
	if p.probes && o.probes > 0 && o.holdTTL > 0 && o.scenario != "merge" {
		probes = newExpiryProbes(t, prefix, o.probes, min(o.holdTTL, time.Second))
		pools = append(pools, probes.pools()...)
	}
	setupStart := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	err = t.Setup(sctx, pools)
	cancel()
	if err != nil {
		tr.Error = "setup: " + err.Error()
		fmt.Fprintf(stderr, "%s setup failed: %v\n", label, err)
		return res
	}
	tr.SetupS = time.Since(setupStart).Seconds()
	if o.progress {
		fmt.Fprintf(stderr, "%s %d pools set up in %.1fs\n", label, len(pools), tr.SetupS)
	}
	rr, _ := t.(routeReporter)
	var routeBefore RouteStats
	if rr != nil {
		routeBefore = rr.RouteStats()
	}

	drain := p.drain
	if drain <= 0 {
		drain = sc.defaultDrain()
	}
	if p.noDrain {
		drain = 0
	}
	t0 := time.Now()
	r := &runner{
		sessions:   sc.sessions(),
		t0:         t0,
		arrivalEnd: t0.Add(p.duration),
		hardEnd:    t0.Add(p.duration + drain),
		rec:        newRecorder(t0, runtime.GOMAXPROCS(0)*4),
		seed:       o.seed,
		start:      sr.start,
	}
	if p.warmup > 0 {
		r.rec.setWindow(t0.Add(p.warmup), r.arrivalEnd)
	}
	// Requests in flight at the hard end get their own timeout, no more.
	rctx, rcancel := context.WithDeadline(ctx, r.hardEnd.Add(o.timeout))
	defer rcancel()
	r.ctx = rctx
	switch {
	case p.closed > 0:
		r.workers = p.closed
		r.noThink = true
		tr.Mode = fmt.Sprintf("closed loop, %d in flight, think times skipped", p.closed)
	case o.concurrency > 0 && p.rate == 0:
		r.workers = o.concurrency
		tr.Mode = fmt.Sprintf("closed loop, %d in flight", o.concurrency)
	default:
		rate := p.rate
		if rate <= 0 { // sessions spread over the arrival window
			window := p.duration.Seconds()
			if w, ok := sc.(interface{ arrivalShare() float64 }); ok {
				window *= w.arrivalShare()
			}
			rate = float64(sc.sessions()) * sc.opsPerSession() / window
		} else {
			// No more sessions than the arrival window has room for, so
			// that "not started" counts only sessions that fell behind.
			r.sessions = min(r.sessions, max(1, int(math.Ceil(rate*p.duration.Seconds()/sc.opsPerSession()))))
		}
		r.interval = time.Duration(float64(time.Second) * sc.opsPerSession() / rate)
		r.interval = max(r.interval, time.Nanosecond)
		r.workers = o.workers
		if o.concurrency > 0 {
			r.workers = o.concurrency
		}
		tr.Mode = fmt.Sprintf("open loop, %.0f req/s (%.0f sessions/s), up to %d in flight", rate, float64(time.Second)/float64(r.interval), r.workers)
	}

	var pwg sync.WaitGroup
	probesStop := make(chan struct{})
	if probes != nil {
		pwg.Go(func() { probes.run(rctx, r.hardEnd, probesStop) })
	}
	var progress io.Writer
	if o.progress {
		progress = stderr
	}
	r.run(progress, label)
	close(probesStop)
	pwg.Wait()

	elapsed := r.endedAt.Sub(t0)
	tr.ElapsedS = elapsed.Seconds()
	tr.Sessions = r.started.Load()
	tr.NotStarted = r.notStarted
	tr.Dropped = r.dropped
	tr.Ops, tr.Total = r.rec.opsReport(elapsed)
	tr.Series = r.rec.series(elapsed)
	for i, pt := range tr.Series {
		if i < len(tr.Series)-1 || len(tr.Series) == 1 {
			tr.PeakPerSec = max(tr.PeakPerSec, float64(pt.Ops))
		}
	}
	if p.warmup > 0 {
		res.window, res.winFails = r.rec.window()
		res.winS = max(r.rec.windowEnd().Sub(r.rec.winFrom).Seconds(), 0)
	}
	if !r.exhaustedAt.IsZero() {
		res.exhausted = r.exhaustedAt.Sub(t0)
	}
	if probes != nil {
		tr.ExpiryLag = probes.report()
	}
	if rr != nil {
		rs := rr.RouteStats().sub(routeBefore)
		tr.Routing = &rs
		tr.Notes = append(tr.Notes, rs.note())
		if d := rr.DiscoveryNote(); d != "" {
			tr.Notes = append(tr.Notes, "leader-aware client: "+d)
		}
	}
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Minute)
	defer fcancel()
	sr.finish(fctx, tr)
	return res
}

// runFindMax finds the target's max sustainable throughput with a
// closed-loop ramp, then measures latency in open loop at a share of it.
//
// Each step of the ramp is a phase of its own: fresh pools, --find-max-step
// of closed loop with the step's requests in flight and think times
// skipped (each worker runs sessions back to back, so the scenario's mix
// of operations keeps the target busy), no drain. Throughput and latency
// are measured over the step after its first third (warm-up: connections,
// the first sessions' mix). A step is over the max when its p99 passes
// --find-max-p99 or more than 1% of its operations failed; the ramp stops
// there, or once 1 + --find-max-patience steps in a row added no more than
// 5% to the best throughput so far (patience 1: one noisy step on a shared
// machine does not end the ramp), or after the last step. The max is the best
// throughput of the steps within the bound (the first step's when even it
// was over). The ledger of every step is checked at once (no wait for its
// holds to expire: stuck holds are checked on the measured run only); a
// failure in any step fails the target.
//
// The measured run is the normal open-loop run at --find-max-share of the
// max, for --duration with the scenario's think times, drain and
// expiry-lag probes, and the full ledger checks.
func runFindMax(ctx context.Context, o *options, t Target, idx int, stderr io.Writer) *TargetReport {
	warm := o.findMaxStep / 3
	fm := &FindMax{
		Method:     "closed-loop ramp, think times skipped, fresh pools each step; throughput of operations that did not fail",
		StepS:      o.findMaxStep.Seconds(),
		WarmupS:    warm.Seconds(),
		P99BoundMs: float64(o.findMaxP99) / float64(time.Millisecond),
		Growth:     o.findMaxGrowth,
		Patience:   o.findMaxPatience,
		Share:      o.findMaxShare,
	}
	var checksRun, checksFailed int64
	firstFail := ""
	best, bestC := 0.0, 0
	flat := 0 // steps in a row without growth
	for i, c := range o.findMaxSteps {
		if ctx.Err() != nil {
			fm.Stopped = "interrupted"
			break
		}
		res := runPhase(ctx, o, t, idx, i+1, phase{closed: c, duration: o.findMaxStep, noDrain: true, quick: true,
			warmup: warm, label: fmt.Sprintf(" find-max %d", c)}, stderr)
		if res.tr.Skipped != "" || res.tr.Error != "" {
			res.tr.FindMax = fm
			return res.tr
		}
		h := res.window
		n := h.TotalCount()
		st := RampStep{InFlight: c, Ops: n, Failed: res.winFails, SetupS: res.tr.SetupS, Checks: checksText(res.tr.Checks)}
		if res.winS > 0 {
			st.PerSec = float64(n-res.winFails) / res.winS
		}
		if n > 0 {
			st.P50 = usToMs(h.ValueAtQuantile(50))
			st.P99 = usToMs(h.ValueAtQuantile(99))
			st.P999 = usToMs(h.ValueAtQuantile(99.9))
		}
		if rs := res.tr.Routing; rs != nil && rs.Writes > 0 {
			share := rs.ForwardedShare
			st.ForwardedShare = &share
		}
		if res.exhausted > 0 {
			st.OutOfSessionsS = res.exhausted.Seconds()
		}
		for _, ch := range res.tr.Checks {
			switch ch.Status {
			case statusOK:
				checksRun++
			case statusFail:
				checksRun++
				checksFailed++
				if firstFail == "" {
					firstFail = fmt.Sprintf("%d in flight: %s = %d %s", c, ch.Name, ch.Value, ch.Detail)
				}
			}
		}
		over := ""
		switch {
		case res.winS < (o.findMaxStep-warm).Seconds()/4:
			over = fmt.Sprintf("the scenario ran out of sessions %.2fs into the step, too early to measure (raise --buyers or --ops)", res.exhausted.Seconds())
		case n == 0:
			over = "no operation ended in the measured window"
		case float64(res.winFails) > 0.01*float64(n):
			over = fmt.Sprintf("%.1f%% of operations failed", 100*float64(res.winFails)/float64(n))
		case st.P99 > fm.P99BoundMs:
			over = fmt.Sprintf("p99 %.1f ms over the %.0f ms bound", st.P99, fm.P99BoundMs)
		}
		st.Over = over != ""
		fm.Steps = append(fm.Steps, st)
		if o.progress {
			fmt.Fprintf(stderr, "[%s %s] find-max %d in flight: %.0f ops/s, p99 %.1f ms, %d failed, ledger %s\n",
				o.scenario, t.Name(), c, st.PerSec, st.P99, st.Failed, st.Checks)
		}
		if over != "" {
			fm.Stopped = fmt.Sprintf("%d in flight: %s", c, over)
			break
		}
		if best == 0 || st.PerSec > best*(1+o.findMaxGrowth) {
			flat = 0
		} else {
			flat++
		}
		if st.PerSec > best {
			best, bestC = st.PerSec, c
		}
		if flat > o.findMaxPatience {
			fm.Stopped = fmt.Sprintf("%d in flight: %d steps in a row not more than %.0f%% over the best", c, flat, 100*o.findMaxGrowth)
			break
		}
	}
	if fm.Stopped == "" {
		fm.Stopped = "after the last step"
		if flat == 0 {
			fm.Stopped += " (throughput still growing: the max may be higher)"
		}
	}
	for _, st := range fm.Steps {
		if st.OutOfSessionsS > 0 && !st.Over {
			fm.Note = "some steps ran out of sessions before their end: measured until then (raise --buyers or --ops for full steps)"
		}
	}
	if best == 0 && len(fm.Steps) > 0 && fm.Steps[0].PerSec > 0 {
		best, bestC = fm.Steps[0].PerSec, fm.Steps[0].InFlight
		fm.Note = "even the first step was over the bound: its throughput is taken as the max"
	}
	fm.MaxPerSec, fm.AtInFlight = best, bestC
	rampCheck := Check{Name: "find-max ramp: ledger checks failed", Value: checksFailed, Of: checksRun, Status: passIf(checksFailed == 0),
		Detail: firstFail}
	if checksRun == 0 {
		rampCheck.Status, rampCheck.Detail = statusNA, "no ledger checked (target keeps no state)"
	} else if firstFail == "" {
		rampCheck.Detail = fmt.Sprintf("every check of %d steps, read right after each step", len(fm.Steps))
	}
	if best <= 0 {
		return &TargetReport{Error: "find-max: no step sustained any throughput", FindMax: fm, Checks: []Check{rampCheck}}
	}
	fm.Rate = best * o.findMaxShare
	tr := runPhase(ctx, o, t, idx, 0, phase{rate: fm.Rate, duration: o.duration, drain: o.drain, probes: true,
		label: fmt.Sprintf(" at %.0f%%", 100*o.findMaxShare)}, stderr).tr
	tr.FindMax = fm
	if tr.Mode != "" {
		tr.Mode += fmt.Sprintf(" (%.0f%% of the max)", 100*o.findMaxShare)
	}
	tr.Checks = append(tr.Checks, rampCheck)
	return tr
}

func (o *options) settings() map[string]string {
	s := map[string]string{
		"duration": o.duration.String(), "seed": strconv.FormatUint(o.seed, 10),
		"timeout": o.timeout.String(), "retries": strconv.Itoa(o.retries),
	}
	if o.rate > 0 {
		s["rate"] = strconv.FormatFloat(o.rate, 'f', -1, 64)
	}
	if o.concurrency > 0 {
		s["concurrency"] = strconv.Itoa(o.concurrency)
	}
	s["leader_aware"] = strconv.FormatBool(o.leaderAware)
	if o.findMax {
		steps := make([]string, len(o.findMaxSteps))
		for i, n := range o.findMaxSteps {
			steps[i] = strconv.Itoa(n)
		}
		s["find_max"] = fmt.Sprintf("steps=%s,step=%s,p99<=%s,patience=%d,share=%g", strings.Join(steps, "/"), o.findMaxStep, o.findMaxP99, o.findMaxPatience, o.findMaxShare)
	}
	switch o.scenario {
	case "drop":
		s["buyers"], s["units"], s["limit"], s["mode"] = strconv.Itoa(o.buyers), strconv.Itoa(o.units), strconv.Itoa(o.limit), o.mode
		s["wait"], s["hold_ttl"], s["abandon"] = strconv.FormatBool(o.wait), o.holdTTL.String(), strconv.FormatFloat(o.abandon, 'f', -1, 64)
	case "retail":
		s["pools"], s["ops"], s["stock"] = strconv.Itoa(o.pools), strconv.Itoa(o.ops), fmt.Sprintf("%d-%d", o.stockMin, o.stockMax)
		s["reads_per_write"], s["abandon"], s["hold_ttl"] = strconv.FormatFloat(o.readsPerWrite, 'f', -1, 64), strconv.FormatFloat(o.abandon, 'f', -1, 64), o.holdTTL.String()
	case "merge":
		s["users"], s["pools"] = strconv.Itoa(o.users), strconv.Itoa(o.pools)
	}
	return s
}

// ---- shared helpers of the scenarios ----

// disappointWindow: a failure for stock counts as a late disappointment
// when a cart read this recent showed the pool in stock.
const disappointWindow = 30 * time.Second

// pendingHolds tracks the expiry of every granted hold whose confirm has
// not been acknowledged (abandoned, refused, or never sent because the run
// ended first): such a hold must come back by itself, and the stuck-holds
// check waits for the latest of them.
type pendingHolds struct {
	mu  sync.Mutex
	exp map[string]time.Time
}

func (p *pendingHolds) add(id string, at time.Time) {
	if id == "" || at.IsZero() {
		return
	}
	p.mu.Lock()
	if p.exp == nil {
		p.exp = map[string]time.Time{}
	}
	if at.After(p.exp[id]) {
		p.exp[id] = at
	}
	p.mu.Unlock()
}

// confirmed drops a hold whose confirm was acknowledged.
func (p *pendingHolds) confirmed(id string) {
	p.mu.Lock()
	delete(p.exp, id)
	p.mu.Unlock()
}

// latest is the latest expiry of the pending holds (zero when none).
func (p *pendingHolds) latest() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var t time.Time
	for _, e := range p.exp {
		if e.After(t) {
			t = e
		}
	}
	return t
}

// minTime keeps the earliest time stored in it.
type minTime struct{ ns atomic.Int64 }

func (m *minTime) observe(t time.Time) {
	v := t.UnixNano()
	for {
		cur := m.ns.Load()
		if (cur != 0 && cur <= v) || m.ns.CompareAndSwap(cur, v) {
			return
		}
	}
}

// before says whether a time was stored and it is before t.
func (m *minTime) before(t time.Time) bool {
	v := m.ns.Load()
	return v != 0 && v < t.UnixNano()
}

// counters is a fixed set of named atomic counters.
type counters struct {
	names []string
	vals  []atomic.Int64
}

func newCounters(names ...string) *counters {
	return &counters{names: names, vals: make([]atomic.Int64, len(names))}
}

func (c *counters) add(i int, n int64) { c.vals[i].Add(n) }
func (c *counters) get(i int) int64    { return c.vals[i].Load() }

func (c *counters) export() []Counter {
	out := make([]Counter, len(c.names))
	for i, n := range c.names {
		out[i] = Counter{Name: n, Value: c.vals[i].Load()}
	}
	return out
}

// zipfTable draws indexes 0..n-1 with probability proportional to
// 1/(rank+1)^s; the ranks are shuffled so the popular items are spread.
type zipfTable struct {
	cum  []float64
	perm []int
}

func newZipfTable(n int, s float64, seed uint64) *zipfTable {
	z := &zipfTable{cum: make([]float64, n), perm: make([]int, n)}
	sum := 0.0
	for i := range n {
		sum += math.Pow(float64(i+1), -s)
		z.cum[i] = sum
	}
	for i := range z.cum {
		z.cum[i] /= sum
	}
	rng := newRand(seed, 7)
	for i := range z.perm {
		z.perm[i] = i
	}
	rng.Shuffle(n, func(i, j int) { z.perm[i], z.perm[j] = z.perm[j], z.perm[i] })
	return z
}

func (z *zipfTable) draw(u float64) int {
	lo, hi := 0, len(z.cum)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if z.cum[mid] < u {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return z.perm[lo]
}

// errText is err's text or "".
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// isNoLedger reports a target without state.
func isNoLedger(err error) bool { return errors.Is(err, ErrNoLedger) }
