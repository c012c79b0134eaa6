package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
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
	tr := &TargetReport{URL: rawURL, Target: rawURL}
	sc, err := o.newScenario()
	if err != nil {
		tr.Error = err.Error()
		return tr
	}
	conns := o.workers
	if o.concurrency > 0 && o.rate == 0 {
		conns = o.concurrency
	}
	t, err := reg.Open(rawURL, TargetOptions{Conns: conns, Timeout: o.timeout, Retries: o.retries})
	if err != nil {
		tr.Error = err.Error()
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return tr
	}
	defer t.Close()
	tr.Target = t.Name()
	label := fmt.Sprintf("[%s %s]", o.scenario, t.Name())
	prefix := fmt.Sprintf("hfb%s%d-%s", strconv.FormatInt(time.Now().UnixMilli(), 36), idx, o.scenario[:1])
	env := &runEnv{o: o, t: t, prefix: prefix, start: time.Now()}
	sr, skip := sc.newRun(env)
	if sr == nil {
		tr.Skipped = skip
		fmt.Fprintf(stderr, "%s skipped: %s\n", label, skip)
		return tr
	}
	if skip != "" {
		tr.Notes = append(tr.Notes, skip)
	}

	pools := sr.pools()
	var probes *expiryProbes
	if o.probes > 0 && o.holdTTL > 0 && o.scenario != "merge" {
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
		return tr
	}
	tr.SetupS = time.Since(setupStart).Seconds()
	if o.progress {
		fmt.Fprintf(stderr, "%s %d pools set up in %.1fs\n", label, len(pools), tr.SetupS)
	}

	drain := o.drain
	if drain <= 0 {
		drain = sc.defaultDrain()
	}
	t0 := time.Now()
	r := &runner{
		sessions:   sc.sessions(),
		t0:         t0,
		arrivalEnd: t0.Add(o.duration),
		hardEnd:    t0.Add(o.duration + drain),
		rec:        newRecorder(t0, runtime.GOMAXPROCS(0)*4),
		seed:       o.seed,
		start:      sr.start,
	}
	// Requests in flight at the hard end get their own timeout, no more.
	rctx, rcancel := context.WithDeadline(ctx, r.hardEnd.Add(o.timeout))
	defer rcancel()
	r.ctx = rctx
	switch {
	case o.concurrency > 0 && o.rate == 0:
		r.workers = o.concurrency
		tr.Mode = fmt.Sprintf("closed loop, %d in flight", o.concurrency)
	default:
		rate := o.rate
		if rate <= 0 { // sessions spread over the arrival window
			window := o.duration.Seconds()
			if w, ok := sc.(interface{ arrivalShare() float64 }); ok {
				window *= w.arrivalShare()
			}
			rate = float64(sc.sessions()) * sc.opsPerSession() / window
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
	for i, p := range tr.Series {
		if i < len(tr.Series)-1 || len(tr.Series) == 1 {
			tr.PeakPerSec = max(tr.PeakPerSec, float64(p.Ops))
		}
	}
	if probes != nil {
		tr.ExpiryLag = probes.report()
	}
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Minute)
	defer fcancel()
	sr.finish(fctx, tr)
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

// maxTime keeps the latest of the times stored in it (unix nanoseconds).
type maxTime struct{ ns atomic.Int64 }

func (m *maxTime) observe(t time.Time) {
	if t.IsZero() {
		return
	}
	v := t.UnixNano()
	for {
		cur := m.ns.Load()
		if v <= cur || m.ns.CompareAndSwap(cur, v) {
			return
		}
	}
}

func (m *maxTime) get() time.Time {
	if v := m.ns.Load(); v != 0 {
		return time.Unix(0, v)
	}
	return time.Time{}
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
