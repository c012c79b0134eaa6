package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// mergeScenario is a login surge. During the first half of --duration
// each of --users users fills an account cart (1-3 lines) and, as an
// anonymous visitor, another cart (1-3 lines): each anonymous line is, with
// probability --conflict, the same item as an account line with another
// quantity, with probability --same the same item and quantity, else a
// new item. Then everybody logs in within --surge of the middle of the
// run: the anonymous cart is merged into the account cart under the
// review policy, a share (--replay) sends the merge again (the contract:
// nothing changes), the cart is read back and, when the merge left it
// needs_review, reviewed.
//
// Every merge answer is checked against what the harness put in the two
// carts: one report entry per anonymous line, "added" for a new item,
// "collapsed" for the same quantity, "conflict" for another quantity with
// the line changed last kept (ties to the account cart), and the cart
// needs_review exactly when there was a conflict. Holdfast only: other
// targets are skipped.
type mergeScenario struct{ o *options }

func (s *mergeScenario) sessions() int { return s.o.users }

func (s *mergeScenario) opsPerSession() float64 {
	return 2 + 4 + 1 + s.o.mergeReplay + 1 + s.o.conflict*2
}

// arrivalShare: by default users arrive during the first 40% of the run,
// so their carts are ready before the surge.
func (s *mergeScenario) arrivalShare() float64 { return 0.4 }

func (s *mergeScenario) defaultDrain() time.Duration {
	return s.o.thinkMax*8 + 2*time.Second
}

type mergeLineWant struct {
	pool      string
	qty       int64
	updatedAt time.Time
}

type mergeUser struct {
	id          string
	acct, anon  CartView
	acctLines   []mergeLineWant
	anonLines   []mergeLineWant
	mergedVer   int64
	mergedState string
	seq         int
}

type mergeRun struct {
	o     *options
	t     Target
	mt    MergeTarget
	specs []PoolSpec
	users []mergeUser
	t0    time.Time

	mu       sync.Mutex
	mismatch int64
	firstBad string
	c        *counters
}

// Counter indexes of a merge run.
const (
	mMerges = iota
	mConflicts
	mCollapsed
	mAdded
	mReviews
	mReplays
	mStaleReads
	mFailedSessions
)

func (s *mergeScenario) newRun(env *runEnv) (scenarioRun, string) {
	mt, ok := env.t.(MergeTarget)
	if !ok {
		return nil, fmt.Sprintf("merge: target %s has no cart merge (holdfast only)", env.t.Name())
	}
	o := s.o
	r := &mergeRun{o: o, t: env.t, mt: mt, t0: env.start, users: make([]mergeUser, o.users),
		c: newCounters("merges", "conflicts", "collapsed", "added", "reviews", "replays", "stale_reads", "sessions_failed")}
	r.specs = make([]PoolSpec, o.pools)
	for i := range r.specs {
		r.specs[i] = PoolSpec{ID: env.prefix + "-p" + strconv.Itoa(i), OnHand: 1_000_000}
	}
	for i := range r.users {
		r.users[i].id = env.prefix + "-u" + strconv.Itoa(i)
	}
	return r, ""
}

func (r *mergeRun) pools() []PoolSpec { return r.specs }

func (r *mergeRun) key(u *mergeUser, what string) string {
	u.seq++
	return u.id + "-" + what + strconv.Itoa(u.seq)
}

func (r *mergeRun) bad(u *mergeUser, format string, args ...any) {
	r.mu.Lock()
	r.mismatch++
	if r.firstBad == "" {
		r.firstBad = u.id + ": " + fmt.Sprintf(format, args...)
	}
	r.mu.Unlock()
}

func (r *mergeRun) start(x *exec, i int) {
	u := &r.users[i]
	used := map[int]bool{}
	pick := func() int {
		for {
			p := x.rng.IntN(len(r.specs))
			if !used[p] || len(used) >= len(r.specs) {
				used[p] = true
				return p
			}
		}
	}
	for range 1 + x.rng.IntN(3) {
		u.acctLines = append(u.acctLines, mergeLineWant{pool: r.specs[pick()].ID, qty: 1 + int64(x.rng.IntN(3))})
	}
	taken := map[string]bool{}
	for range 1 + x.rng.IntN(3) {
		l := mergeLineWant{qty: 1 + int64(x.rng.IntN(3))}
		p := x.rng.Float64()
		var match *mergeLineWant
		for j := range u.acctLines {
			if !taken[u.acctLines[j].pool] {
				match = &u.acctLines[j]
				break
			}
		}
		switch {
		case match != nil && p < r.o.conflict:
			l.pool, l.qty = match.pool, match.qty%3+1 // another quantity
			taken[l.pool] = true
		case match != nil && p < r.o.conflict+r.o.same:
			l.pool, l.qty = match.pool, match.qty
			taken[l.pool] = true
		default:
			l.pool = r.specs[pick()].ID
		}
		u.anonLines = append(u.anonLines, l)
	}
	r.create(x, u, true)
}

// create makes the account cart (acct) or the anonymous one and fills it.
func (r *mergeRun) create(x *exec, u *mergeUser, acct bool) {
	owner, cart := "anon:"+u.id, &u.anon
	if acct {
		owner, cart = "user:"+u.id, &u.acct
	}
	o := x.do("cart_create", func(ctx context.Context) (Outcome, error) {
		v, oc, err := r.mt.CreateCart(ctx, owner, r.key(u, "c"))
		*cart = v
		return oc, err
	})
	if o != OK {
		r.c.add(mFailedSessions, 1)
		return
	}
	x.after(x.uniform(0, r.o.thinkMin), func(x *exec) { r.add(x, u, acct, 0) })
}

func (r *mergeRun) add(x *exec, u *mergeUser, acct bool, j int) {
	lines, cart := u.anonLines, &u.anon
	if acct {
		lines, cart = u.acctLines, &u.acct
	}
	l := &lines[j]
	o := x.do("cart_add", func(ctx context.Context) (Outcome, error) {
		v, oc, err := r.mt.AddLine(ctx, cart.ID, CartLine{Pool: l.pool, Qty: l.qty}, r.key(u, "a"))
		if oc == OK {
			*cart = v
			for _, cl := range v.Lines {
				if cl.Pool == l.pool {
					l.updatedAt = cl.UpdatedAt
				}
			}
		}
		return oc, err
	})
	if o != OK {
		r.c.add(mFailedSessions, 1)
		return
	}
	switch {
	case j+1 < len(lines):
		x.after(x.uniform(0, r.o.thinkMin), func(x *exec) { r.add(x, u, acct, j+1) })
	case acct:
		x.after(x.uniform(0, r.o.thinkMin), func(x *exec) { r.create(x, u, false) })
	default:
		// Log in during the surge, in the middle of the run.
		at := r.t0.Add(r.o.duration / 2).Add(x.uniform(0, r.o.surge))
		x.at(at, func(x *exec) { r.merge(x, u) })
	}
}

// expected is what the review policy must do with each anonymous line.
func (u *mergeUser) expected() (outcomes []string, qty map[string]int64, conflict bool) {
	qty = map[string]int64{}
	for _, l := range u.acctLines {
		qty[l.pool] = l.qty
	}
	for _, s := range u.anonLines {
		var t *mergeLineWant
		for j := range u.acctLines {
			if u.acctLines[j].pool == s.pool {
				t = &u.acctLines[j]
			}
		}
		switch {
		case t == nil:
			outcomes = append(outcomes, "added")
			qty[s.pool] = s.qty
		case t.qty == s.qty:
			outcomes = append(outcomes, "collapsed")
		default:
			outcomes = append(outcomes, "conflict")
			conflict = true
			if s.updatedAt.After(t.updatedAt) {
				qty[s.pool] = s.qty
			}
		}
	}
	return outcomes, qty, conflict
}

func (r *mergeRun) check(u *mergeUser, m MergeResult, what string) {
	outs, qty, conflict := u.expected()
	if len(m.Report) != len(outs) {
		r.bad(u, "%s: %d report entries, want %d", what, len(m.Report), len(outs))
		return
	}
	for j, e := range m.Report {
		if e.Outcome != outs[j] || e.Pool != u.anonLines[j].pool || e.Qty != qty[e.Pool] {
			r.bad(u, "%s: line %d (%s): %s qty %d, want %s qty %d", what, j, e.Pool, e.Outcome, e.Qty, outs[j], qty[e.Pool])
			return
		}
	}
	r.checkCart(u, m.Cart, what, qty, conflict)
}

func (r *mergeRun) checkCart(u *mergeUser, c CartView, what string, qty map[string]int64, conflict bool) {
	wantState := "open"
	if conflict {
		wantState = "needs_review"
	}
	if c.State != wantState {
		r.bad(u, "%s: cart %s state %s, want %s", what, c.ID, c.State, wantState)
		return
	}
	if len(c.Lines) != len(qty) {
		r.bad(u, "%s: cart has %d lines, want %d", what, len(c.Lines), len(qty))
		return
	}
	for _, l := range c.Lines {
		if qty[l.Pool] != l.Qty {
			r.bad(u, "%s: line %s qty %d, want %d", what, l.Pool, l.Qty, qty[l.Pool])
			return
		}
	}
}

func (r *mergeRun) merge(x *exec, u *mergeUser) {
	var m MergeResult
	key := r.key(u, "m")
	o := x.do("merge", func(ctx context.Context) (Outcome, error) {
		var err error
		m, err = r.mt.MergeCarts(ctx, u.acct.ID, u.anon.ID, "review", key)
		return m.Outcome, err
	})
	if o != OK {
		r.c.add(mFailedSessions, 1)
		return
	}
	r.c.add(mMerges, 1)
	for _, e := range m.Report {
		switch e.Outcome {
		case "conflict":
			r.c.add(mConflicts, 1)
		case "collapsed":
			r.c.add(mCollapsed, 1)
		case "added":
			r.c.add(mAdded, 1)
		}
	}
	r.check(u, m, "merge")
	u.mergedVer, u.mergedState = m.Cart.Version, m.Cart.State
	if x.chance(r.o.mergeReplay) {
		// The same merge again, as a client that lost the answer would send
		// it without its key: the contract says nothing changes.
		r.c.add(mReplays, 1)
		var m2 MergeResult
		o := x.do("merge", func(ctx context.Context) (Outcome, error) {
			var err error
			m2, err = r.mt.MergeCarts(ctx, u.acct.ID, u.anon.ID, "review", r.key(u, "m"))
			return m2.Outcome, err
		})
		if o == OK {
			r.check(u, m2, "merge replay")
			if m2.Cart.Version != m.Cart.Version {
				r.bad(u, "merge replay moved the cart from version %d to %d", m.Cart.Version, m2.Cart.Version)
			}
		} else {
			r.bad(u, "merge replay: %s", o)
		}
	}
	x.after(x.uniform(r.o.thinkMin, r.o.thinkMax), func(x *exec) { r.readBack(x, u) })
}

func (r *mergeRun) readBack(x *exec, u *mergeUser) {
	var v CartView
	o := x.do("cart_read", func(ctx context.Context) (Outcome, error) {
		var err error
		v, err = r.mt.ReadCart(ctx, u.acct.ID)
		return OK, err
	})
	if o != OK {
		return
	}
	_, qty, conflict := u.expected()
	if v.Version < u.mergedVer {
		r.c.add(mStaleReads, 1) // a follower's replica behind the merge
	} else {
		r.checkCart(u, v, "read after merge", qty, conflict)
	}
	if u.mergedState != "needs_review" {
		return
	}
	var rv CartView
	o = x.do("review", func(ctx context.Context) (Outcome, error) {
		var oc Outcome
		var err error
		rv, oc, err = r.mt.ReviewCart(ctx, u.acct.ID, r.key(u, "r"))
		return oc, err
	})
	if o == OK {
		r.c.add(mReviews, 1)
		if rv.State != "open" {
			r.bad(u, "review left the cart %s", rv.State)
		}
	}
}

func (r *mergeRun) finish(ctx context.Context, tr *TargetReport) {
	checkLedger(ctx, r.t, ledgerInput{pools: r.specs, acked: map[string]int64{}}, tr)
	r.mu.Lock()
	defer r.mu.Unlock()
	tr.Checks = append(tr.Checks, Check{Name: "merge answers not as the review policy says", Value: r.mismatch,
		Of: r.c.get(mMerges) + r.c.get(mReplays), Status: passIf(r.mismatch == 0), Detail: r.firstBad})
	tr.Counters = r.c.export()
}
