package bench

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram ranges, in microseconds: 1 us to 10 minutes.
const (
	histMin = 1
	histMax = int64(10 * time.Minute / time.Microsecond)
)

// recorder collects every operation's latency and outcome: per operation
// an HDR histogram (3 significant digits) and outcome counts, and per
// second of the run a histogram of all operations (2 significant digits)
// for the time series. Workers write to their own shard, so recording
// takes an uncontended lock.
type recorder struct {
	start  time.Time
	shards []*recShard
	ops    atomic.Int64
	fails  atomic.Int64
	// winFrom and winTo (unix ns; 0: no window), set before the run, bound
	// a measurement window: operations that end in [winFrom, winTo) also
	// go to each shard's window histogram (the find-max ramp measures a
	// step there, after its warm-up). cutWindow may end it early.
	winFrom time.Time
	winTo   atomic.Int64
}

type recShard struct {
	mu   sync.Mutex
	ops  map[string]*opStat
	secs []*hdrhistogram.Histogram // by second since start, all operations
	win  *hdrhistogram.Histogram   // the measurement window, all operations
	// winFails counts the window's failed operations.
	winFails int64
}

type opStat struct {
	hist *hdrhistogram.Histogram
	// first and last are when the first and the last operation ended.
	first, last time.Time
	outcomes    [NumOutcomes]int64
	firstErr    string
}

func newRecorder(start time.Time, shards int) *recorder {
	r := &recorder{start: start}
	for range max(shards, 1) {
		r.shards = append(r.shards, &recShard{ops: map[string]*opStat{}})
	}
	return r
}

func clampUs(d time.Duration) int64 {
	us := int64(d / time.Microsecond)
	return min(max(us, histMin), histMax)
}

// record adds one operation that ended at end after taking lat (measured
// from its scheduled start).
func (r *recorder) record(shard int, op string, o Outcome, lat time.Duration, end time.Time, err error) {
	s := r.shards[shard%len(r.shards)]
	us := clampUs(lat)
	sec := int(end.Sub(r.start) / time.Second)
	s.mu.Lock()
	st := s.ops[op]
	if st == nil {
		st = &opStat{hist: hdrhistogram.New(histMin, histMax, 3)}
		s.ops[op] = st
	}
	_ = st.hist.RecordValue(us)
	if st.first.IsZero() || end.Before(st.first) {
		st.first = end
	}
	if end.After(st.last) {
		st.last = end
	}
	st.outcomes[o]++
	if err != nil && st.firstErr == "" {
		st.firstErr = err.Error()
	}
	if wt := r.winTo.Load(); wt != 0 && !end.Before(r.winFrom) && end.UnixNano() < wt {
		if s.win == nil {
			s.win = hdrhistogram.New(histMin, histMax, 3)
		}
		_ = s.win.RecordValue(us)
		if o == Failed {
			s.winFails++
		}
	}
	if sec >= 0 {
		for len(s.secs) <= sec {
			s.secs = append(s.secs, nil)
		}
		h := s.secs[sec]
		if h == nil {
			h = hdrhistogram.New(histMin, histMax, 2)
			s.secs[sec] = h
		}
		_ = h.RecordValue(us)
	}
	s.mu.Unlock()
	r.ops.Add(1)
	if o == Failed {
		r.fails.Add(1)
	}
}

// second merges the histograms of one second (nil if nothing ended then).
func (r *recorder) second(sec int) *hdrhistogram.Histogram {
	var out *hdrhistogram.Histogram
	for _, s := range r.shards {
		s.mu.Lock()
		if sec >= 0 && sec < len(s.secs) && s.secs[sec] != nil {
			if out == nil {
				out = hdrhistogram.New(histMin, histMax, 2)
			}
			out.Merge(s.secs[sec])
		}
		s.mu.Unlock()
	}
	return out
}

func usToMs(us int64) float64 { return float64(us) / 1000 }

// setWindow sets the measurement window [from, to).
func (r *recorder) setWindow(from, to time.Time) {
	r.winFrom = from
	r.winTo.Store(to.UnixNano())
}

// cutWindow ends the measurement window at t if it was to end later (the
// closed loop ran out of sessions: its load falls from then on).
func (r *recorder) cutWindow(t time.Time) {
	v := t.UnixNano()
	for {
		cur := r.winTo.Load()
		if cur == 0 || cur <= v || r.winTo.CompareAndSwap(cur, v) {
			return
		}
	}
}

// windowEnd is when the measurement window ends (zero: no window).
func (r *recorder) windowEnd() time.Time {
	if v := r.winTo.Load(); v != 0 {
		return time.Unix(0, v)
	}
	return time.Time{}
}

// window merges the measurement window's histograms and returns them with
// the number of failed operations in it.
func (r *recorder) window() (*hdrhistogram.Histogram, int64) {
	out := hdrhistogram.New(histMin, histMax, 3)
	var fails int64
	for _, s := range r.shards {
		s.mu.Lock()
		if s.win != nil {
			out.Merge(s.win)
		}
		fails += s.winFails
		s.mu.Unlock()
	}
	return out, fails
}

// opsReport summarises every operation, sorted by name, and all of them
// together; elapsed is the measured window for throughput.
func (r *recorder) opsReport(elapsed time.Duration) ([]OpReport, OpReport) {
	merged := map[string]*opStat{}
	for _, s := range r.shards {
		s.mu.Lock()
		for name, st := range s.ops {
			m := merged[name]
			if m == nil {
				m = &opStat{hist: hdrhistogram.New(histMin, histMax, 3)}
				merged[name] = m
			}
			m.hist.Merge(st.hist)
			m.span(st.first, st.last)
			for i, c := range st.outcomes {
				m.outcomes[i] += c
			}
			if m.firstErr == "" {
				m.firstErr = st.firstErr
			}
		}
		s.mu.Unlock()
	}
	total := &opStat{hist: hdrhistogram.New(histMin, histMax, 3)}
	var names []string
	for n := range merged {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []OpReport
	for _, n := range names {
		m := merged[n]
		total.hist.Merge(m.hist)
		total.span(m.first, m.last)
		for i, c := range m.outcomes {
			total.outcomes[i] += c
		}
		out = append(out, m.report(n, elapsed))
	}
	return out, total.report("all", elapsed)
}

func (m *opStat) span(first, last time.Time) {
	if !first.IsZero() && (m.first.IsZero() || first.Before(m.first)) {
		m.first = first
	}
	if last.After(m.last) {
		m.last = last
	}
}

// report summarises the operation. Its throughput is over the window in
// which it ran (first to last completion, at least a second, at most the
// run), so a confirm that only happens late is not diluted by the run.
func (m *opStat) report(name string, elapsed time.Duration) OpReport {
	h := m.hist
	o := OpReport{Op: name, Count: h.TotalCount(), Outcomes: map[string]int64{}, FirstError: m.firstErr}
	window := min(max(m.last.Sub(m.first), time.Second), max(elapsed, time.Millisecond))
	o.WindowS = window.Seconds()
	o.PerSec = float64(o.Count) / window.Seconds()
	if o.Count > 0 {
		o.P50 = usToMs(h.ValueAtQuantile(50))
		o.P90 = usToMs(h.ValueAtQuantile(90))
		o.P99 = usToMs(h.ValueAtQuantile(99))
		o.P999 = usToMs(h.ValueAtQuantile(99.9))
		o.Max = usToMs(h.Max())
	}
	for i, c := range m.outcomes {
		if c > 0 {
			o.Outcomes[Outcome(i).String()] = c
		}
	}
	return o
}

// series is throughput and p99 per second of the run.
func (r *recorder) series(elapsed time.Duration) []SeriesPoint {
	n := int(elapsed/time.Second) + 1
	out := make([]SeriesPoint, 0, n)
	for sec := range n {
		p := SeriesPoint{T: float64(sec)}
		if h := r.second(sec); h != nil {
			p.Ops = h.TotalCount()
			p.P99 = usToMs(h.ValueAtQuantile(99))
		}
		// The last second is partial: scale its rate.
		width := 1.0
		if rest := elapsed.Seconds() - float64(sec); rest < 1 && rest > 0 {
			width = rest
		}
		p.PerSec = float64(p.Ops) / width
		out = append(out, p)
	}
	return out
}
