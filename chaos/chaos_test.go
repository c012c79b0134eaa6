package chaos

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

var (
	flagSeed     = flag.Uint64("chaos.seed", 0, "seed of a randomized run (0: the fixed CI seed, or a random one with -chaos.duration)")
	flagDuration = flag.Duration("chaos.duration", 0, "run randomized faults for this long instead of the CI schedule (make chaos)")
	flagKeep     = flag.Bool("chaos.keep", false, "keep node data and logs even when the run passes")
)

// ciSeed is the CI run's fixed seed.
const ciSeed = 1

// holdfastBin is the binary under test, built once by TestMain.
var holdfastBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "holdfast-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	holdfastBin = filepath.Join(dir, "holdfast")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "build", "-o", holdfastBin, "github.com/holdfast/holdfast/cmd/holdfast")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building holdfast: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's cluster, workload and run.
type env struct {
	t        *testing.T
	dir      string
	run      *Run
	ctx      context.Context
	cancel   context.CancelFunc
	stopW    chan struct{}
	wDone    chan struct{}
	started  time.Time
	repro    string
	stopOnce bool
}

func newEnv(t *testing.T, nodes int, seed uint64, wcfg WorkloadConfig, repro string) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "holdfast-chaos-"+t.Name()+"-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{t: t, dir: dir, ctx: ctx, cancel: cancel, stopW: make(chan struct{}), wDone: make(chan struct{}), started: time.Now(), repro: repro}
	logf := func(format string, args ...any) {
		t.Logf("%s %s", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	c, err := NewCluster(holdfastBin, dir, nodes, logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		c.Close()
		if t.Failed() || *flagKeep {
			t.Logf("node data and logs kept in %s", dir)
		} else {
			os.RemoveAll(dir)
		}
	})
	for i := range c.Nodes {
		if err := c.WaitReady(i, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	wcfg.Seed = seed
	w, err := NewWorkload(ctx, c, wcfg)
	if err != nil {
		t.Fatal(err)
	}
	e.run = NewRun(c, w, seed, logf)
	if err := e.run.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(e.wDone)
		w.Run(ctx, e.stopW)
	}()
	return e
}

// must fails the test on a harness error (not a finding).
func (e *env) must(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatalf("harness: %v (reproduce: %s)", err, e.repro)
	}
}

// finish runs the final checks, prints the summary and fails the test on
// any failed check.
func (e *env) finish() {
	e.t.Helper()
	e.run.Finish(e.ctx, func() {
		close(e.stopW)
		select {
		case <-e.wDone:
		case <-time.After(2 * time.Minute):
			e.t.Errorf("the workload did not stop within 2 minutes")
		}
	}, e.dir)
	var buf bytes.Buffer
	e.run.Summary(&buf, time.Since(e.started))
	e.t.Logf("\n%s", buf.String())
	if out := os.Getenv("CHAOS_SUMMARY"); out != "" {
		f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err == nil {
			fmt.Fprintf(f, "%s\n", buf.String())
			f.Close()
		}
	}
	if failed := e.run.Checks.Failed(); len(failed) > 0 {
		for _, ch := range failed {
			e.t.Errorf("FAILED: %s: %s", ch.Name, ch.Detail)
		}
		e.t.Errorf("reproduce: %s", e.repro)
	}
}

// TestChaos is the CI-sized fault-injection run (fixed seed, a scripted
// schedule covering every fault on three nodes), or, with
// -chaos.duration (make chaos), a randomized run of that length.
func TestChaos(t *testing.T) {
	if *flagDuration > 0 {
		seed := *flagSeed
		if seed == 0 {
			seed = rand.Uint64() % 1_000_000
		}
		t.Logf("seed %d", seed)
		repro := fmt.Sprintf("make chaos SEED=%d DURATION=%s", seed, *flagDuration)
		e := newEnv(t, 3, seed, WorkloadConfig{HoldTTLMs: (*flagDuration + 30*time.Minute).Milliseconds()}, repro)
		randomFaults(e, *flagDuration)
		e.finish()
		return
	}
	e := newEnv(t, 3, ciSeed, WorkloadConfig{}, "go test ./chaos -run 'TestChaos$' -count=1 -v")
	r, ctx := e.run, e.ctx
	r.sleep(ctx, 3*time.Second) // warm up
	e.must(r.KillLeader(ctx, 2*time.Second))
	e.must(r.KillFollower(ctx, 2*time.Second))
	e.must(r.IsolateLeader(ctx, 5*time.Second))
	r.SplitFlapping(ctx, 6*time.Second)
	e.must(r.Latency(ctx, 5*time.Second))
	e.must(r.ResetPeers(ctx, 5*time.Second))
	e.must(r.BlackholeLeader(ctx, 5*time.Second))
	e.must(r.ClientPartition(ctx, 5*time.Second))
	e.must(r.ClockJumps(ctx, []time.Duration{-3 * time.Minute, 3 * time.Minute, -2 * time.Minute, 5 * time.Minute}, 2500*time.Millisecond))
	e.must(r.TermUnderLatency(ctx))
	e.must(r.TermUnderBlackhole(ctx, 4*time.Second))
	e.must(r.RollingRestart(ctx))
	e.must(r.KillLeader(ctx, time.Second))
	r.sleep(ctx, 2*time.Second)
	e.finish()
}

// randomFaults injects faults chosen by the run's seed until d has passed.
func randomFaults(e *env, d time.Duration) {
	r, ctx := e.run, e.ctx
	end := time.Now().Add(d)
	hold := func() time.Duration { return time.Duration(2000+r.rng.IntN(6000)) * time.Millisecond }
	for time.Now().Before(end) && ctx.Err() == nil {
		switch r.rng.IntN(15) {
		case 0:
			e.must(r.KillLeader(ctx, hold()/2))
		case 1:
			e.must(r.KillFollower(ctx, hold()/2))
		case 2:
			e.must(r.IsolateLeader(ctx, hold()))
		case 3:
			r.SplitFlapping(ctx, hold())
		case 4:
			r.Split(ctx, hold())
		case 5:
			e.must(r.Latency(ctx, hold()))
		case 6:
			e.must(r.ResetPeers(ctx, hold()))
		case 7:
			e.must(r.BlackholeLeader(ctx, hold()))
		case 8:
			e.must(r.ClientPartition(ctx, hold()))
		case 9:
			steps := []time.Duration{time.Duration(r.rng.IntN(10)-5) * time.Minute, time.Duration(r.rng.IntN(10)-5) * time.Minute}
			e.must(r.ClockJumps(ctx, steps, hold()/2))
		case 10:
			e.must(r.TermUnderLatency(ctx))
		case 11:
			if r.rng.IntN(3) == 0 {
				r.logf("rolling restart")
				e.must(r.RollingRestart(ctx))
			}
		case 12:
			e.must(r.TermUnderBlackhole(ctx, hold()))
		case 13:
			l, err := r.leader()
			e.must(err)
			if r.rng.IntN(2) == 0 {
				e.must(r.DiskFull(ctx, "leader", l))
			} else {
				e.must(r.DiskFull(ctx, "follower", (l+1)%len(r.C.Nodes)))
			}
		case 14:
			d := hold()
			r.logf("calm for %s", d)
			r.sleep(ctx, d)
		}
		r.sleep(ctx, time.Duration(500+r.rng.IntN(1500))*time.Millisecond)
	}
}
