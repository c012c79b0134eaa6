package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Run drives one fault-injection run: a cluster, a workload, faults, and
// the record of what was injected and measured.
type Run struct {
	C    *Cluster
	W    *Workload
	Seed uint64
	rng  *rand.Rand
	logf func(string, ...any)

	mu       sync.Mutex
	injected map[string]*faultStat
	order    []string
	// Avail is, per leader loss (SIGKILL or isolation of the leader), the
	// time until the next write succeeded.
	Avail []time.Duration
	// TermExit is, per SIGTERM, how long the process took to exit;
	// TermUnclean counts exits with a non-zero status.
	TermExit    []time.Duration
	TermUnclean int
	Checks      Checks
	// ClockJumps: holds probed during clock steps on the leader.
	ClockProbes int
}

type faultStat struct {
	count int
	total time.Duration
}

// NewRun returns a Run over an already created cluster and workload.
func NewRun(c *Cluster, w *Workload, seed uint64, logf func(string, ...any)) *Run {
	return &Run{C: c, W: w, Seed: seed, rng: rand.New(rand.NewPCG(seed, 0xfa017)), logf: logf, injected: map[string]*faultStat{}}
}

func (r *Run) note(name string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.injected[name]
	if s == nil {
		s = &faultStat{}
		r.injected[name] = s
		r.order = append(r.order, name)
	}
	s.count++
	s.total += d
}

func (r *Run) sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// leader waits for a leader (every running node healthy).
func (r *Run) leader() (int, error) {
	var need []int
	for i := range r.C.Nodes {
		if r.C.Running(i) {
			need = append(need, i)
		}
	}
	return r.C.WaitLeader(30*time.Second, need...)
}

// probeWrite measures availability: from since, it writes (a restock of
// the probe pool, fresh Idempotency-Key per try) to random live nodes
// until one succeeds.
func (r *Run) probeWrite(ctx context.Context, since time.Time) (time.Duration, error) {
	rng := rand.New(rand.NewPCG(uint64(since.UnixNano()), 7))
	deadline := since.Add(60 * time.Second)
	for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
		i := rng.IntN(len(r.C.Nodes))
		if !r.C.Running(i) {
			continue
		}
		key := fmt.Sprintf("probe-%d-%d", since.UnixNano(), n)
		st, _, err := r.W.attempt(ctx, i, "POST", "/v1/pools/"+probePool+"/adjust", `{"delta":1}`, key)
		if err == nil && st == 200 {
			return time.Since(since), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("no write succeeded within 60 s of %s", since.Format(time.RFC3339Nano))
}

// probePool is a pool outside the checked workload, for probes.
const probePool = "probe"

// Setup creates the probe pool.
func (r *Run) Setup(ctx context.Context) error {
	st, b, err := r.W.write(ctx, "PUT", "/v1/pools/"+probePool, `{"on_hand":1000000,"hold_ttl_ms":2000,"max_hold_ttl_ms":60000}`, "setup-probe", nil)
	if err != nil || (st != 200 && st != 201) {
		return fmt.Errorf("create probe pool: %d %s %v", st, b, err)
	}
	return nil
}

// ---- faults ----

// KillLeader SIGKILLs the leader, measures the time to the next successful
// write, and restarts it from its data directory after down.
func (r *Run) KillLeader(ctx context.Context, down time.Duration) error {
	l, err := r.leader()
	if err != nil {
		return err
	}
	start := time.Now()
	r.logf("SIGKILL leader %s", r.C.Nodes[l].ID)
	r.C.Kill(l)
	avail, err := r.probeWrite(ctx, start)
	if err != nil {
		r.Checks.Add("writes resume after the leader is killed", false, "%v", err)
	} else {
		r.mu.Lock()
		r.Avail = append(r.Avail, avail)
		r.mu.Unlock()
	}
	r.sleep(ctx, down)
	if err := r.restart(l); err != nil {
		return err
	}
	r.note("SIGKILL leader + restart", time.Since(start))
	return nil
}

func (r *Run) restart(i int) error {
	if err := r.C.Start(i); err != nil {
		return err
	}
	if err := r.C.WaitReady(i, 60*time.Second); err != nil {
		return err
	}
	return nil
}

// KillFollower SIGKILLs a follower and restarts it after down.
func (r *Run) KillFollower(ctx context.Context, down time.Duration) error {
	l, err := r.leader()
	if err != nil {
		return err
	}
	f := (l + 1 + r.rng.IntN(len(r.C.Nodes)-1)) % len(r.C.Nodes)
	start := time.Now()
	r.logf("SIGKILL follower %s", r.C.Nodes[f].ID)
	r.C.Kill(f)
	r.sleep(ctx, down)
	if err := r.restart(f); err != nil {
		return err
	}
	r.note("SIGKILL follower + restart", time.Since(start))
	return nil
}

// IsolateLeader cuts the leader off from every peer for d, measuring the
// time until the majority side accepts a write.
func (r *Run) IsolateLeader(ctx context.Context, d time.Duration) error {
	l, err := r.leader()
	if err != nil {
		return err
	}
	var rest []int
	for i := range r.C.Nodes {
		if i != l {
			rest = append(rest, i)
		}
	}
	start := time.Now()
	r.logf("isolate leader %s for %s", r.C.Nodes[l].ID, d)
	r.C.Partition([]int{l}, rest)
	// Clients keep talking to every node, the isolated one included:
	// it must not acknowledge anything (its writes time out: 503).
	avail, err := r.probeMajority(ctx, start, l)
	if err != nil {
		r.Checks.Add("the majority accepts writes while the leader is isolated", false, "%v", err)
	} else {
		r.mu.Lock()
		r.Avail = append(r.Avail, avail)
		r.mu.Unlock()
	}
	r.sleep(ctx, d-time.Since(start))
	r.C.Heal()
	r.note("isolate leader (partition 1 | rest)", time.Since(start))
	return nil
}

// probeMajority is probeWrite through nodes other than skip.
func (r *Run) probeMajority(ctx context.Context, since time.Time, skip int) (time.Duration, error) {
	deadline := since.Add(60 * time.Second)
	for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
		i := n % len(r.C.Nodes)
		if i == skip || !r.C.Running(i) {
			continue
		}
		key := fmt.Sprintf("probe-%d-%d", since.UnixNano(), n)
		st, _, err := r.W.attempt(ctx, i, "POST", "/v1/pools/"+probePool+"/adjust", `{"delta":1}`, key)
		if err == nil && st == 200 {
			return time.Since(since), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("no write succeeded within 60 s")
}

// SplitFlapping partitions one random node from the rest and heals, again
// and again, every 150-600 ms, for d.
func (r *Run) SplitFlapping(ctx context.Context, d time.Duration) {
	x := r.rng.IntN(len(r.C.Nodes))
	var rest []int
	for i := range r.C.Nodes {
		if i != x {
			rest = append(rest, i)
		}
	}
	start := time.Now()
	r.logf("flapping split %s | rest for %s", r.C.Nodes[x].ID, d)
	for cut := true; time.Since(start) < d && ctx.Err() == nil; cut = !cut {
		if cut {
			r.C.Partition([]int{x}, rest)
		} else {
			r.C.Heal()
		}
		r.sleep(ctx, time.Duration(150+r.rng.IntN(450))*time.Millisecond)
	}
	r.C.Heal()
	r.note("flapping links (split 1 | rest, on/off)", time.Since(start))
}

// Split partitions the cluster into a random minority and majority for d.
func (r *Run) Split(ctx context.Context, d time.Duration) {
	perm := r.rng.Perm(len(r.C.Nodes))
	k := (len(perm) - 1) / 2 // minority size
	minority, majority := perm[:k], perm[k:]
	start := time.Now()
	r.logf("split %v | %v for %s", minority, majority, d)
	r.C.Partition(minority, majority)
	r.sleep(ctx, d)
	r.C.Heal()
	r.note(fmt.Sprintf("split %d | %d", len(minority), len(majority)), time.Since(start))
}

// Latency adds latency with jitter to every Raft link for d.
func (r *Run) Latency(ctx context.Context, d time.Duration) error {
	lat := 20 + r.rng.IntN(60)
	start := time.Now()
	r.logf("latency %d ms on every Raft link for %s", lat, d)
	for i := range r.C.Nodes {
		for j := range r.C.Nodes {
			if i != j {
				if err := r.C.AddToxic(i, j, "latency", map[string]any{"latency": lat, "jitter": lat / 2}); err != nil {
					return err
				}
			}
		}
	}
	r.sleep(ctx, d)
	r.C.Heal()
	r.note("added latency (20-80 ms + jitter, all links)", time.Since(start))
	return nil
}

// ResetPeers makes random Raft links reset their connections shortly
// after data flows (TCP RST), for d.
func (r *Run) ResetPeers(ctx context.Context, d time.Duration) error {
	start := time.Now()
	n := 0
	for i := range r.C.Nodes {
		for j := range r.C.Nodes {
			if i != j && r.rng.IntN(2) == 0 {
				if err := r.C.AddToxic(i, j, "reset_peer", map[string]any{"timeout": 50 + r.rng.IntN(400)}); err != nil {
					return err
				}
				n++
			}
		}
	}
	r.logf("reset_peer on %d links for %s", n, d)
	r.sleep(ctx, d)
	r.C.Heal()
	r.note("dropped connections (reset_peer)", time.Since(start))
	return nil
}

// BlackholeLeader drops every byte to and from the leader (timeout toxic:
// connections stay open, nothing arrives, they close after 2 s) for d.
func (r *Run) BlackholeLeader(ctx context.Context, d time.Duration) error {
	l, err := r.leader()
	if err != nil {
		return err
	}
	start := time.Now()
	r.logf("blackhole leader %s for %s", r.C.Nodes[l].ID, d)
	for i := range r.C.Nodes {
		if i == l {
			continue
		}
		if err := r.C.AddToxic(l, i, "timeout", map[string]any{"timeout": 2000}); err != nil {
			return err
		}
		if err := r.C.AddToxic(i, l, "timeout", map[string]any{"timeout": 2000}); err != nil {
			return err
		}
	}
	r.sleep(ctx, d)
	r.C.Heal()
	r.note("blackholed leader (timeout toxic)", time.Since(start))
	return nil
}

// ClientPartition cuts the clients off from the leader for d: they talk
// through followers, which forward.
func (r *Run) ClientPartition(ctx context.Context, d time.Duration) error {
	l, err := r.leader()
	if err != nil {
		return err
	}
	start := time.Now()
	r.logf("clients partitioned from leader %s for %s", r.C.Nodes[l].ID, d)
	r.C.SetClientLink(l, false)
	before := r.W.Counters.Reserved.Load() + r.W.Counters.Confirmed.Load() + r.W.Counters.Released.Load()
	r.sleep(ctx, d)
	after := r.W.Counters.Reserved.Load() + r.W.Counters.Confirmed.Load() + r.W.Counters.Released.Load()
	r.C.SetClientLink(l, true)
	r.Checks.Add("writes succeed through followers while clients cannot reach the leader", after > before, "%d writes acknowledged in %s", after-before, d)
	r.note("client partitioned from the leader", time.Since(start))
	return nil
}

// RollingRestart SIGTERMs each node in turn, checks it exits in bounded
// time, and restarts it.
func (r *Run) RollingRestart(ctx context.Context) error {
	start := time.Now()
	for i := range r.C.Nodes {
		if ctx.Err() != nil {
			break
		}
		if _, err := r.leader(); err != nil {
			return err
		}
		if err := r.term(i); err != nil {
			return err
		}
		if err := r.restart(i); err != nil {
			return err
		}
	}
	r.note("rolling restart (SIGTERM, restart, each node)", time.Since(start))
	return nil
}

// termLimit bounds a SIGTERM exit: HTTP drain (10 s request timeout) plus
// the bounded Raft close (12 s) plus slack.
const termLimit = 30 * time.Second

func (r *Run) term(i int) error {
	r.logf("SIGTERM %s", r.C.Nodes[i].ID)
	d, err := r.C.Term(i, termLimit)
	r.mu.Lock()
	r.TermExit = append(r.TermExit, d)
	r.mu.Unlock()
	if err != nil {
		// Exit status 1 after SIGTERM: Raft's shutdown did not finish
		// within its bound and the process exited anyway (see
		// cmd/holdfast closeWithin); the node's log says so.
		r.logf("%s after SIGTERM: %v (%s)", r.C.Nodes[i].ID, err, d)
		r.mu.Lock()
		r.TermUnclean++
		r.mu.Unlock()
	}
	return nil
}

// TermUnderLatency SIGTERMs the leader while every link is slow and one
// follower is cut off (replication pipelines busy), then restarts it.
func (r *Run) TermUnderLatency(ctx context.Context) error {
	l, err := r.leader()
	if err != nil {
		return err
	}
	start := time.Now()
	for i := range r.C.Nodes {
		for j := range r.C.Nodes {
			if i != j {
				if err := r.C.AddToxic(i, j, "latency", map[string]any{"latency": 200, "jitter": 100}); err != nil {
					return err
				}
			}
		}
	}
	f := (l + 1) % len(r.C.Nodes)
	r.C.SetLink(l, f, false)
	r.sleep(ctx, 1500*time.Millisecond)
	if err := r.term(l); err != nil {
		return err
	}
	r.C.Heal()
	if err := r.restart(l); err != nil {
		return err
	}
	r.note("SIGTERM leader under latency + cut link", time.Since(start))
	return nil
}

// ClockJumps steps the leader's wall clock back and forward by minutes
// while short holds run on the probe pool, and checks that log time
// stays monotonic and close to real time, and that the holds expire
// neither early nor late.
func (r *Run) ClockJumps(ctx context.Context, steps []time.Duration, each time.Duration) error {
	l, err := r.leader()
	if err != nil {
		return err
	}
	start := time.Now()
	r.logf("clock jumps on leader %s: %v", r.C.Nodes[l].ID, steps)

	// Log time, as every node reports it, must never go back; cluster log
	// time (the largest any node reports) must not run ahead of real time
	// beyond the 1% catch-up and a tick. A follower that lagged catches up
	// faster than real time, so the rate is measured on the maximum, from
	// the leader's first reading.
	stopWatch := make(chan struct{})
	var watchWG sync.WaitGroup
	var clockErr []string
	var clockMu sync.Mutex
	var first, maxLC, firstReal time.Time
	for i := range r.C.Nodes {
		watchWG.Add(1)
		go func() {
			defer watchWG.Done()
			var last time.Time
			for {
				select {
				case <-stopWatch:
					return
				case <-time.After(50 * time.Millisecond):
				}
				st, err := r.C.Status(i, false)
				if err != nil {
					continue
				}
				lc, err := time.Parse(time.RFC3339Nano, st.LogClock)
				if err != nil {
					continue
				}
				clockMu.Lock()
				if !last.IsZero() && lc.Before(last) {
					clockErr = append(clockErr, fmt.Sprintf("%s: log clock went back from %s to %s", st.ID, last.Format(time.RFC3339Nano), st.LogClock))
				}
				last = lc
				if first.IsZero() && i == l {
					first, maxLC, firstReal = lc, lc, time.Now()
				}
				if !first.IsZero() && lc.After(maxLC) {
					maxLC = lc
					if ahead := maxLC.Sub(first) - time.Since(firstReal); ahead > 2*time.Second+time.Since(firstReal)/100 {
						clockErr = append(clockErr, fmt.Sprintf("%s: cluster log time ran %s ahead of real time", st.ID, ahead))
						first, firstReal = maxLC, time.Now() // report once per jump
					}
				}
				clockMu.Unlock()
			}
		}()
	}

	type probe struct {
		id              string
		sent, acked     time.Time
		expiredObserved time.Time
	}
	const ttl = 2000 * time.Millisecond
	var probes []*probe
	var probeMu sync.Mutex
	var probeWG sync.WaitGroup
	probeStop := make(chan struct{})
	probeWG.Add(1)
	go func() {
		defer probeWG.Done()
		n := 0
		for {
			select {
			case <-probeStop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			n++
			p := &probe{sent: time.Now()}
			key := fmt.Sprintf("clock-%d-%d", start.UnixNano(), n)
			body := fmt.Sprintf(`{"buyer":"clock-%d","lines":[{"pool":%q,"qty":1}],"ttl_ms":%d}`, n, probePool, ttl.Milliseconds())
			st, b, err := r.W.write(ctx, "POST", "/v1/reservations", body, key, nil)
			if err != nil || st != 201 {
				continue
			}
			var rj resJSON
			if json.Unmarshal(b, &rj) != nil {
				continue
			}
			p.acked, p.id = time.Now(), rj.ID
			probeMu.Lock()
			probes = append(probes, p)
			probeMu.Unlock()
			probeWG.Add(1)
			go func() {
				defer probeWG.Done()
				deadline := p.acked.Add(ttl + 30*time.Second)
				for time.Now().Before(deadline) {
					i := rand.IntN(len(r.C.Nodes)) // not part of the seed's schedule
					var rj resJSON
					st, err := httpGetJSON("http://"+r.C.Nodes[i].HTTPAddr+"/v1/reservations/"+p.id, &rj)
					now := time.Now()
					if err == nil && st == 200 && rj.State == "expired" {
						probeMu.Lock()
						p.expiredObserved = now
						probeMu.Unlock()
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
		}
	}()

	for _, s := range steps {
		if err := r.C.SetClockOffset(l, s); err != nil {
			return err
		}
		r.sleep(ctx, each)
	}
	if err := r.C.SetClockOffset(l, 0); err != nil {
		return err
	}
	close(probeStop)
	probeWG.Wait()
	close(stopWatch)
	watchWG.Wait()

	var early, late []string
	for _, p := range probes {
		if p.expiredObserved.IsZero() {
			late = append(late, p.id+" never expired")
			continue
		}
		// Expiry no earlier than ttl after the request was sent, minus
		// the 1% catch-up; no later than 5 s past ttl after the ack
		// (ticks, retries of the read, a leader change).
		if lived := p.expiredObserved.Sub(p.sent); lived < ttl-ttl/100-20*time.Millisecond {
			early = append(early, fmt.Sprintf("%s expired after %s", p.id, lived.Round(time.Millisecond)))
		}
		if lived := p.expiredObserved.Sub(p.acked); lived > ttl+5*time.Second {
			late = append(late, fmt.Sprintf("%s expired after %s", p.id, lived.Round(time.Millisecond)))
		}
	}
	r.ClockProbes += len(probes)
	r.Checks.Add("log time monotonic and near real time across leader clock jumps", len(clockErr) == 0, "%s", strings.Join(first3(clockErr), "; "))
	r.Checks.Add("holds expire neither early nor late across leader clock jumps", len(probes) > 0 && len(early) == 0 && len(late) == 0,
		"%d holds of %s; early: %s; late: %s", len(probes), ttl, strings.Join(first3(early), ", "), strings.Join(first3(late), ", "))
	r.note("leader wall clock steps ("+durList(steps)+")", time.Since(start))
	return nil
}

func durList(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.String())
	}
	return strings.Join(s, ", ")
}

// ---- the end of a run ----

// Finish heals everything, restarts stopped nodes, lets the workload
// resolve what it has in flight, and runs every final check.
func (r *Run) Finish(ctx context.Context, stopWorkload func(), artifacts string) {
	r.C.Heal()
	for i := range r.C.Nodes {
		_ = r.C.SetClockOffset(i, 0)
		_ = r.C.SetDiskFull(i, false)
		if !r.C.Running(i) {
			r.C.Reap(i)
			if err := r.restart(i); err != nil {
				r.Checks.Add("every node restarts", false, "%v", err)
			}
		}
	}
	if _, err := r.leader(); err != nil {
		r.Checks.Add("a leader after healing", false, "%v", err)
	}
	stopWorkload()

	if err := r.C.Converge(60 * time.Second); err != nil {
		r.Checks.Add("replicas converge", false, "%v", err)
	} else {
		r.Checks.Add("replicas converge", true, "")
	}
	if s, err := r.C.StateHashes(30 * time.Second); err != nil {
		r.Checks.Add("replica state hashes equal", false, "%v", err)
	} else {
		r.Checks.Add("replica state hashes equal", true, "%s", s)
	}
	for i := range r.C.Nodes {
		own, err := r.C.OwnView(i)
		r.Checks.Add("partitions cut what they claim ("+r.C.Nodes[i].ID+" kept its own --peers view)", err == nil && own, "%v", err)
	}
	unexpected := r.W.Unexpected()
	r.Checks.Add("every answer allowed by the contract", len(unexpected) == 0, "%s", strings.Join(first3(unexpected), " | "))
	illegal, unknown, ops, err := r.W.CheckLinearizable(artifacts, 60*time.Second)
	r.Checks.Add("linearizable per-pool histories (porcupine)", err == nil && len(illegal) == 0,
		"%d operations on %d pools; illegal: %s; check timed out: %s", ops, len(r.W.pools), strings.Join(illegal, ", "), strings.Join(unknown, ", "))
	r.W.CheckFinalState(&r.Checks)
	bounded := true
	for _, d := range r.TermExit {
		bounded = bounded && d < termLimit
	}
	if len(r.TermExit) > 0 {
		r.Checks.Add("SIGTERM exits in bounded time", bounded, "%s (limit %s)", durStats(r.TermExit), termLimit)
	}
	avail := len(r.Avail) > 0
	for _, a := range r.Avail {
		avail = avail && a < 15*time.Second
	}
	if len(r.Avail) > 0 {
		r.Checks.Add("writes resume within 15 s of losing the leader", avail, "%s", durStats(r.Avail))
	}
}

func durStats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	return fmt.Sprintf("n=%d min %s median %s max %s", len(s), s[0].Round(time.Millisecond), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

// Summary writes the run's table: faults injected, operations, checks.
func (r *Run) Summary(out io.Writer, elapsed time.Duration) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "== holdfast chaos run: seed %d, %d nodes, %s ==\n", r.Seed, len(r.C.Nodes), elapsed.Round(time.Second))
	fmt.Fprintf(tw, "fault injected\ttimes\ttotal time\n")
	r.mu.Lock()
	for _, name := range r.order {
		s := r.injected[name]
		fmt.Fprintf(tw, "%s\t%d\t%s\n", name, s.count, s.total.Round(100*time.Millisecond))
	}
	r.mu.Unlock()
	c := &r.W.Counters
	fmt.Fprintf(tw, "\noperations\tcount\t\n")
	for _, row := range []struct {
		name string
		v    int64
	}{
		{"client operations", c.Ops.Load()}, {"HTTP attempts", c.Attempts.Load()}, {"retries (503/timeout, same key)", c.Retries.Load()},
		{"reserved (201)", c.Reserved.Load()}, {"refused sold_out", c.SoldOut.Load()}, {"refused buyer_limit", c.BuyerLimit.Load()},
		{"confirmed", c.Confirmed.Load()}, {"released", c.Released.Load()}, {"extended", c.Extended.Load()},
		{"extension refused (max_extensions)", c.ExtendDenied.Load()}, {"restocks", c.Adjusted.Load()},
		{"linearizable reads", c.Reads.Load()}, {"outcome unknown after retries", c.Unknown.Load()},
		{"clock-jump hold probes", int64(r.ClockProbes)},
	} {
		fmt.Fprintf(tw, "%s\t%d\t\n", row.name, row.v)
	}
	fmt.Fprintf(tw, "\navailability (leader lost -> next write)\t%s\t\n", durStats(r.Avail))
	fmt.Fprintf(tw, "SIGTERM -> exit\t%s\t%d non-zero exits\n", durStats(r.TermExit), r.TermUnclean)
	fmt.Fprintf(tw, "\ncheck\tresult\tdetail\n")
	r.Checks.mu.Lock()
	for _, ch := range r.Checks.List {
		res := "PASS"
		if !ch.Passed {
			res = "FAIL"
		}
		d := ch.Detail
		if len(d) > 160 {
			d = d[:160] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", ch.Name, res, d)
	}
	r.Checks.mu.Unlock()
	tw.Flush()
}

// SplitLeaderMinority puts the leader in the minority side of a split
// (2 | 3 on five nodes, 1 | 2 on three) for d, measuring the time until
// the majority side accepts a write.
func (r *Run) SplitLeaderMinority(ctx context.Context, d time.Duration) error {
	l, err := r.leader()
	if err != nil {
		return err
	}
	n := len(r.C.Nodes)
	minority := []int{l}
	for k := 1; len(minority) < (n-1)/2; k++ {
		minority = append(minority, (l+k)%n)
	}
	var majority []int
	for i := range n {
		if !containsInt(minority, i) {
			majority = append(majority, i)
		}
	}
	start := time.Now()
	r.logf("split %v (with the leader) | %v for %s", minority, majority, d)
	r.C.Partition(minority, majority)
	avail, err := r.probeSide(ctx, start, majority)
	if err != nil {
		r.Checks.Add("the majority side accepts writes when the leader is in the minority", false, "%v", err)
	} else {
		r.mu.Lock()
		r.Avail = append(r.Avail, avail)
		r.mu.Unlock()
	}
	r.sleep(ctx, d-time.Since(start))
	r.C.Heal()
	r.note(fmt.Sprintf("split %d (leader) | %d", len(minority), len(majority)), time.Since(start))
	return nil
}

// KillFollowers SIGKILLs k followers at once (a quorum must remain) and
// restarts them after down; writes must go on meanwhile.
func (r *Run) KillFollowers(ctx context.Context, k int, down time.Duration) error {
	l, err := r.leader()
	if err != nil {
		return err
	}
	n := len(r.C.Nodes)
	var victims, alive []int
	for j := 1; j < n; j++ {
		if len(victims) < k {
			victims = append(victims, (l+j)%n)
		}
	}
	for i := range n {
		if !containsInt(victims, i) {
			alive = append(alive, i)
		}
	}
	start := time.Now()
	r.logf("SIGKILL followers %v", victims)
	for _, v := range victims {
		r.C.Kill(v)
	}
	avail, err := r.probeSide(ctx, start, alive)
	r.Checks.Add(fmt.Sprintf("writes go on with %d followers down", k), err == nil, "first write after %s %v", avail.Round(time.Millisecond), err)
	r.sleep(ctx, down)
	for _, v := range victims {
		if err := r.restart(v); err != nil {
			return err
		}
	}
	r.note(fmt.Sprintf("SIGKILL %d followers at once + restart", k), time.Since(start))
	return nil
}

// probeSide is probeWrite through the given nodes only.
func (r *Run) probeSide(ctx context.Context, since time.Time, nodes []int) (time.Duration, error) {
	deadline := since.Add(60 * time.Second)
	for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
		i := nodes[n%len(nodes)]
		key := fmt.Sprintf("probe-%d-%d", since.UnixNano(), n)
		st, _, err := r.W.attempt(ctx, i, "POST", "/v1/pools/"+probePool+"/adjust", `{"delta":1}`, key)
		if err == nil && st == 200 {
			return time.Since(since), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("no write through %v succeeded within 60 s", nodes)
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TermUnderBlackhole blackholes one follower (bytes to and from it vanish
// and its connections never close: the timeout toxic with no timeout) for
// a few seconds under load, so the leader's replication pipeline to it
// fills and parks, then SIGTERMs the leader: the shape of
// hashicorp/raft#612, where raft.Shutdown waits on that pipeline. The
// process must still exit in bounded time.
func (r *Run) TermUnderBlackhole(ctx context.Context, park time.Duration) error {
	l, err := r.leader()
	if err != nil {
		return err
	}
	f := (l + 1 + r.rng.IntN(len(r.C.Nodes)-1)) % len(r.C.Nodes)
	start := time.Now()
	r.logf("blackhole follower %s for %s, then SIGTERM leader %s", r.C.Nodes[f].ID, park, r.C.Nodes[l].ID)
	for i := range r.C.Nodes {
		if i == f {
			continue
		}
		if err := r.C.AddToxic(i, f, "timeout", map[string]any{"timeout": 0}); err != nil {
			return err
		}
		if err := r.C.AddToxic(f, i, "timeout", map[string]any{"timeout": 0}); err != nil {
			return err
		}
	}
	r.sleep(ctx, park)
	if err := r.term(l); err != nil {
		return err
	}
	r.C.Heal()
	if err := r.restart(l); err != nil {
		return err
	}
	r.note("SIGTERM leader while a follower is blackholed (raft#612 shape)", time.Since(start))
	return nil
}

// DiskFull fills node i's disk (role names it in the checks): its health
// must fail (or the process stop), a write sent to it must not be
// acknowledged, and the others must go on accepting writes. Then space
// comes back and the node, whose store latched the failure, restarts.
func (r *Run) DiskFull(ctx context.Context, role string, i int) error {
	c := r.C
	start := time.Now()
	r.logf("disk full on %s %s", role, c.Nodes[i].ID)
	if err := c.SetDiskFull(i, true); err != nil {
		return err
	}
	health := 200
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if health = c.Health(i); health != 200 {
			break
		}
	}
	exited, _ := c.Exited(i)
	r.Checks.Add(fmt.Sprintf("a full disk fails health (%s)", role), health != 200,
		"health %d after the disk filled (0: process gone; exited=%v)", health, exited)
	var got []string
	acked := 0
	for n := range 5 {
		key := fmt.Sprintf("diskfull-%d-%s-%d", start.UnixNano(), role, n)
		body := fmt.Sprintf(`{"buyer":"df-%s-%d","lines":[{"pool":%q,"qty":1}]}`, role, n, probePool)
		st, b, err := c.directWrite(ctx, i, "POST", "/v1/reservations", body, key)
		if st == 201 || st == 200 {
			acked++
		}
		got = append(got, fmt.Sprintf("%d %v %.60s", st, err, b))
	}
	r.Checks.Add(fmt.Sprintf("a node with a full disk acknowledges no write (%s)", role), acked == 0, "%v", got)
	if avail, err := r.probeMajority(ctx, start, i); err != nil {
		r.Checks.Add(fmt.Sprintf("the others accept writes while %s's disk is full", role), false, "%v", err)
	} else {
		r.Checks.Add(fmt.Sprintf("the others accept writes while %s's disk is full", role), true, "first write after %s", avail.Round(time.Millisecond))
	}
	r.sleep(ctx, 2*time.Second)
	if err := c.SetDiskFull(i, false); err != nil {
		return err
	}
	c.Kill(i)
	c.Reap(i)
	if err := r.restart(i); err != nil {
		return err
	}
	r.note("disk full ("+role+"), then restart", time.Since(start))
	return nil
}
