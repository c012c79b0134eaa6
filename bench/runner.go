package bench

import (
	"container/heap"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// The runner drives a scenario's sessions (a buyer, a shopper, a login)
// against one target. A session is written as a chain of tasks: a task
// does one or a few operations, then may schedule its continuation after
// a think time. One dispatcher goroutine hands due tasks to a fixed pool
// of workers:
//
//   - open loop (interval > 0): session i is scheduled at start + i*interval
//     whatever happens to the others. Every operation's latency is measured
//     from its scheduled time (the session's arrival, or the due time of a
//     continuation), so time spent waiting for a free worker while the
//     target falls behind counts: no coordinated omission. The worker pool
//     (--workers) bounds requests in flight; it should be well above
//     rate x latency.
//   - closed loop (interval == 0): a new session starts whenever a worker
//     is free and no continuation is due, so exactly --concurrency
//     requests are in flight; latency is measured from when a worker takes
//     the task. With noThink (the find-max ramp) think times are skipped,
//     so each worker runs sessions back to back with the scenario's mix of
//     operations.
//
// Continuations due before new sessions go first. No session starts after
// arrivalEnd; at hardEnd pending continuations are dropped and the run
// ends once in-flight requests return.
type runner struct {
	sessions   int
	interval   time.Duration
	workers    int
	t0         time.Time
	arrivalEnd time.Time
	hardEnd    time.Time
	rec        *recorder
	ctx        context.Context
	seed       uint64
	start      func(x *exec, i int)
	// noThink skips think times: a continuation scheduled with after is
	// due at once (the find-max ramp, where a closed loop must keep its
	// requests in flight instead of waiting on simulated people). Waits
	// scheduled with at or afterReal (polls, a draw's close) keep their
	// time.
	noThink bool

	ready chan task
	push  chan task
	done  chan struct{}

	started    atomic.Int64
	inflight   atomic.Int64
	behindNs   atomic.Int64 // how late the last session started (open loop)
	notStarted int64
	dropped    int64
	endedAt    time.Time
	// exhaustedAt is when a closed loop started its last session before
	// the arrival window ended (zero: it did not run out).
	exhaustedAt time.Time
}

type task struct {
	at  time.Time
	seq uint64
	fn  func(*exec)
}

type taskHeap []task

func (h taskHeap) Len() int { return len(h) }
func (h taskHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h taskHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *taskHeap) Push(x any)   { *h = append(*h, x.(task)) }
func (h *taskHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = task{}
	*h = old[:len(old)-1]
	return t
}

// exec is a worker's handle on the run, passed to every task.
type exec struct {
	r      *runner
	ctx    context.Context
	worker int
	rng    *rand.Rand
	// sched is when the current operation should have started: the task's
	// scheduled time for its first operation, then the end of the
	// previous one.
	sched time.Time
}

// do runs one operation and records its outcome and latency.
func (x *exec) do(op string, f func(ctx context.Context) (Outcome, error)) Outcome {
	o, err := f(x.ctx)
	if err != nil && o == OK {
		o = Failed
	}
	end := time.Now()
	x.r.rec.record(x.worker, op, o, end.Sub(x.sched), end, err)
	x.sched = end
	return o
}

// after schedules fn to run d from now: a think time, skipped when the
// run has noThink.
func (x *exec) after(d time.Duration, fn func(*exec)) {
	if x.r.noThink {
		d = 0
	}
	x.at(time.Now().Add(d), fn)
}

// afterReal schedules fn to run d from now even when think times are
// skipped: a poll interval, which would otherwise become a busy loop.
func (x *exec) afterReal(d time.Duration, fn func(*exec)) { x.at(time.Now().Add(d), fn) }

// at schedules fn to run at t.
func (x *exec) at(t time.Time, fn func(*exec)) { x.r.push <- task{at: t, fn: fn} }

// uniform returns a duration uniformly in [lo, hi].
func (x *exec) uniform(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(x.rng.Int64N(int64(hi-lo)+1))
}

// chance is true with probability p.
func (x *exec) chance(p float64) bool { return x.rng.Float64() < p }

// run executes the sessions and returns when every worker is done.
func (r *runner) run(progress io.Writer, label string) {
	r.ready = make(chan task)
	r.push = make(chan task)
	r.done = make(chan struct{}, r.workers)
	var wg sync.WaitGroup
	for w := range r.workers {
		wg.Go(func() {
			x := &exec{r: r, ctx: r.ctx, worker: w, rng: rand.New(rand.NewPCG(r.seed, uint64(w)+1))}
			for t := range r.ready {
				if r.interval == 0 {
					x.sched = time.Now()
				} else {
					x.sched = t.at
				}
				r.inflight.Add(1)
				t.fn(x)
				r.inflight.Add(-1)
				r.done <- struct{}{}
			}
		})
	}
	stopProgress := make(chan struct{})
	var pwg sync.WaitGroup
	if progress != nil {
		pwg.Go(func() { r.progress(progress, label, stopProgress) })
	}
	r.dispatch()
	wg.Wait()
	r.endedAt = time.Now()
	close(stopProgress)
	pwg.Wait()
}

func (r *runner) dispatch() {
	h := &taskHeap{}
	var seq uint64
	next := 0
	pending := 0 // tasks handed to workers and not yet done
	stopping := false
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		if !stopping && !now.Before(r.hardEnd) {
			stopping = true
			r.dropped += int64(h.Len())
			*h = (*h)[:0]
		}
		// No session starts after the arrival window: in open loop, none
		// scheduled after it (one scheduled before it starts late, its
		// latency counting the wait, until the hard end); in closed loop,
		// none once it has passed.
		if next < r.sessions && (stopping || !r.arrivalAt(next, now).Before(r.arrivalEnd)) {
			r.notStarted += int64(r.sessions - next)
			next = r.sessions
		}
		var cand task
		have, fromHeap := false, false
		if !stopping {
			if h.Len() > 0 && !(*h)[0].at.After(now) {
				cand, have, fromHeap = (*h)[0], true, true
			} else if next < r.sessions {
				if at := r.arrivalAt(next, now); !at.After(now) {
					i := next
					cand, have = task{at: at, fn: func(x *exec) { r.start(x, i) }}, true
				}
			}
		}
		if !have && pending == 0 && (stopping || (h.Len() == 0 && next >= r.sessions)) {
			close(r.ready)
			return
		}
		wake := r.hardEnd
		if stopping {
			wake = now.Add(time.Hour)
		}
		if h.Len() > 0 && (*h)[0].at.Before(wake) {
			wake = (*h)[0].at
		}
		if next < r.sessions {
			if r.arrivalEnd.Before(wake) {
				wake = r.arrivalEnd
			}
			if at := r.arrivalAt(next, now); at.Before(wake) {
				wake = at
			}
		}
		var readyCh chan task
		if have {
			readyCh = r.ready
		} else {
			timer.Reset(max(wake.Sub(now), 0))
		}
		select {
		case readyCh <- cand:
			pending++
			if fromHeap {
				heap.Pop(h)
			} else {
				next++
				r.started.Add(1)
				if r.interval > 0 {
					r.behindNs.Store(int64(time.Since(cand.at)))
				} else if next == r.sessions && time.Now().Before(r.arrivalEnd) {
					// Out of sessions: from now on fewer requests are in
					// flight, so a measurement window ends here.
					r.exhaustedAt = time.Now()
					r.rec.cutWindow(r.exhaustedAt)
				}
			}
		case t := <-r.push:
			if stopping {
				r.dropped++
			} else {
				seq++
				t.seq = seq
				heap.Push(h, t)
			}
		case <-r.done:
			pending--
		case <-timer.C:
		}
		if !have {
			timer.Stop()
		}
	}
}

// arrivalAt is when session i is due: open loop, on its schedule; closed
// loop, now.
func (r *runner) arrivalAt(i int, now time.Time) time.Time {
	if r.interval > 0 {
		return r.t0.Add(time.Duration(i) * r.interval)
	}
	return now
}

// progress writes one status line a second: on a terminal it rewrites the
// line in place, elsewhere it appends lines.
func (r *runner) progress(w io.Writer, label string, stop <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	eol := "\n"
	if isTerminal(w) {
		eol = "\r"
	}
	var lastOps int64
	last := r.t0
	for {
		select {
		case <-stop:
			if eol == "\r" {
				fmt.Fprint(w, "\n")
			}
			return
		case now := <-tick.C:
			ops := r.rec.ops.Load()
			rate := float64(ops-lastOps) / now.Sub(last).Seconds()
			lastOps, last = ops, now
			p99 := 0.0
			if h := r.rec.second(int(now.Sub(r.rec.start)/time.Second) - 1); h != nil {
				p99 = usToMs(h.ValueAtQuantile(99))
			}
			line := fmt.Sprintf("%s %5.1fs  sessions %d/%d  ops %d  %.0f/s  p99(last s) %.1fms  in flight %d  failed %d",
				label, now.Sub(r.t0).Seconds(), r.started.Load(), r.sessions, ops, rate, p99, r.inflight.Load(), r.rec.fails.Load())
			if b := time.Duration(r.behindNs.Load()); r.interval > 0 && b > 50*time.Millisecond {
				line += fmt.Sprintf("  behind %.1fs", b.Seconds())
			}
			fmt.Fprint(w, line+"    "+eol)
		}
	}
}
