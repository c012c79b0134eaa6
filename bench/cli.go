package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Main is `holdfast bench SCENARIO [flags]`. reg holds the schemes of
// targets built elsewhere (Redis, PostgreSQL); "http", "https" and "noop" are
// always known. It returns the exit status: 0, 1 when a target failed or a
// correctness check failed, 2 for a usage error.
func Main(args []string, reg Registry, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usageText)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	o, err := parseOptions(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "holdfast bench:", err)
		return 2
	}
	all := Builtin()
	for k, v := range reg {
		all[k] = v
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := runAll(ctx, o, all, stderr)
	rep.WriteTable(stdout)
	status := 0
	if o.jsonPath != "" {
		if err := rep.WriteJSON(o.jsonPath); err != nil {
			fmt.Fprintln(stderr, "holdfast bench: --json:", err)
			status = 1
		}
	}
	if o.plotPath != "" {
		if err := rep.WritePlot(o.plotPath); err != nil {
			fmt.Fprintln(stderr, "holdfast bench: --plot:", err)
			status = 1
		}
	}
	if rep.failed() {
		status = 1
	}
	return status
}

const usageText = `usage: holdfast bench SCENARIO [flags]

Scenarios:
  drop     a sneaker drop: --buyers buyers, one pool of --units units, --limit per buyer,
           fcfs or --mode draw; --abandon of the winners never confirm (holds expire and,
           with --wait or a draw, go to the waitlist); the rest confirm after a think time
  retail   --pools pools with deep stock, Zipf popularity; carts: adds, --reads-per-write
           cart reads per write, checkout, --abandon abandoned, confirms; --ops operations
  merge    a login surge: anonymous carts merged into account carts under the review
           policy (holdfast only)

Targets (--target, repeatable; run one after the other):
  http://host:port[,host:port...]   a holdfast cluster, all nodes listed (round-robin)
  noop:// | noop://host:port        the ceiling: a no-op fasthttp server started by the harness
  redis://..., postgres://...       peers, when this build registers them

Load: open loop at --rate requests/s (sessions scheduled; latency from the scheduled
time), or closed loop with --concurrency requests in flight (when --rate is not given).
Without either: open loop spreading the sessions over --duration. New sessions start
for --duration; their follow-ups (confirms, polls) get --drain more.

Max load (--find-max, drop and retail): per target, a closed-loop ramp (--find-max-steps
requests in flight, --find-max-step each, think times skipped, fresh pools each step)
finds the most ops/s sustained with p99 within --find-max-p99; the ramp stops when
1 + --find-max-patience steps in a row add no more than 5%, or one passes the bound. Then the measured run: open loop at
--find-max-share (50%) of that rate for --duration. The ledger checks run after every
step and after the measured run.

Run "holdfast bench SCENARIO -h" for the flags.
`

// targetList is the repeatable --target flag.
type targetList []string

func (t *targetList) String() string { return strings.Join(*t, " ") }
func (t *targetList) Set(v string) error {
	*t = append(*t, v)
	return nil
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{scenario: args[0]}
	switch o.scenario {
	case "drop", "retail", "merge":
	default:
		return nil, fmt.Errorf("unknown scenario %q (drop, retail, merge)", o.scenario)
	}
	fs := flag.NewFlagSet("holdfast bench "+o.scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var targets targetList
	fs.Var(&targets, "target", "target URL (repeatable; default http://127.0.0.1:8080)")
	fs.Float64Var(&o.rate, "rate", 0, "open loop: requests per second (0: spread the sessions over --duration)")
	fs.IntVar(&o.concurrency, "concurrency", 0, "closed loop: requests in flight (with --rate: the most in flight)")
	fs.IntVar(&o.workers, "workers", 1024, "open loop: the most requests in flight")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "how long new sessions start")
	fs.DurationVar(&o.drain, "drain", 0, "extra time for follow-ups after --duration (0: the scenario's think times and hold TTL)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "per request, retries included")
	fs.IntVar(&o.retries, "retries", 3, "retries of a 503 or a lost request (same Idempotency-Key)")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed")
	fs.StringVar(&o.jsonPath, "json", "", "write the report as JSON to this file")
	fs.StringVar(&o.plotPath, "plot", "", "draw throughput and p99 over time to this .svg or .png file")
	fs.BoolVar(&o.progress, "progress", true, "print a progress line to stderr every second")
	fs.IntVar(&o.probes, "probes", 8, "expiry-lag probe pools (0: no expiry-lag measure)")
	fs.StringVar(&o.token, "token", os.Getenv("HOLDFAST_TOKEN"), "holdfast targets: bearer token (default $HOLDFAST_TOKEN; checkout role, admin to create pools)")
	caFile := fs.String("ca", "", "https targets: PEM CA bundle to trust (default: the system's roots)")
	insecure := fs.Bool("insecure-skip-verify", false, "https targets: do not verify the server certificate (tests only)")
	fs.BoolVar(&o.leaderAware, "leader-aware", true, "holdfast targets: send writes and linearizable reads straight to the leader (learned from X-Holdfast-Node); false: round-robin, followers forward")
	var steps string
	if o.scenario != "merge" {
		fs.BoolVar(&o.findMax, "find-max", false, "find each target's max throughput with a closed-loop ramp, then measure at --find-max-share of it (open loop)")
		fs.StringVar(&steps, "find-max-steps", "16,32,64,128,256,512,1024", "find-max: requests in flight of the ramp's steps, increasing (at most 12)")
		fs.DurationVar(&o.findMaxStep, "find-max-step", 3*time.Second, "find-max: length of one step (its first third is warm-up, not measured)")
		fs.DurationVar(&o.findMaxP99, "find-max-p99", 250*time.Millisecond, "find-max: a step whose p99 passes this is over the max")
		fs.IntVar(&o.findMaxPatience, "find-max-patience", 1, "find-max: steps in a row that may add no more than 5% before the ramp stops")
		fs.Float64Var(&o.findMaxShare, "find-max-share", 0.5, "find-max: load of the measured run, as a share of the max")
	}
	fs.DurationVar(&o.holdTTL, "hold-ttl", 5*time.Second, "hold TTL (checkout holds, drop holds, waitlist offers)")
	thinkMin, thinkMax := 200*time.Millisecond, 2*time.Second
	if o.scenario == "merge" { // clicks between cart edits
		thinkMin, thinkMax = 20*time.Millisecond, 200*time.Millisecond
	}
	fs.DurationVar(&o.thinkMin, "think-min", thinkMin, "shortest think time (before a confirm; merge: between edits)")
	fs.DurationVar(&o.thinkMax, "think-max", thinkMax, "longest think time")
	fs.DurationVar(&o.pollEvery, "poll", time.Second, "how often a queued buyer polls its hold")
	switch o.scenario {
	case "drop":
		fs.IntVar(&o.buyers, "buyers", 180000, "buyers (one session each)")
		fs.IntVar(&o.units, "units", 3200, "units in the pool")
		fs.IntVar(&o.limit, "limit", 1, "per-buyer limit (0: none)")
		fs.StringVar(&o.mode, "mode", "fcfs", "fcfs or draw (the draw closes when --duration ends)")
		fs.BoolVar(&o.wait, "wait", false, "waitlist: buyers reserve with wait:true and poll their place")
		fs.Float64Var(&o.abandon, "abandon", 0.4, "share of winners who never confirm")
		fs.Float64Var(&o.dupes, "dupes", 0.05, "share of buyers who double-click (a second request, another key)")
		fs.IntVar(&o.watch, "watch", 2000, "queued buyers further back than this stop polling")
		fs.DurationVar(&o.reveal, "reveal", 2*time.Second, "draw: entrants check their result within this time of the close")
	case "retail":
		fs.IntVar(&o.pools, "pools", 20000, "pools")
		fs.IntVar(&o.stockMin, "stock-min", 500, "smallest stock of a pool")
		fs.IntVar(&o.stockMax, "stock-max", 5000, "largest stock of a pool")
		fs.IntVar(&o.ops, "ops", 300000, "operations (bounds the number of shoppers)")
		fs.Float64Var(&o.readsPerWrite, "reads-per-write", 14, "cart reads per cart write")
		fs.IntVar(&o.maxLines, "max-lines", 3, "most lines in a cart")
		fs.Float64Var(&o.skew, "skew", 1.1, "Zipf exponent of pool popularity (0: uniform)")
		fs.Float64Var(&o.abandon, "abandon", 0.75, "share of checkouts never confirmed")
		fs.DurationVar(&o.readThink, "read-think", 20*time.Millisecond, "mean time between cart reads")
	case "merge":
		fs.IntVar(&o.users, "users", 5000, "users (an account cart and an anonymous cart each)")
		fs.IntVar(&o.pools, "pools", 200, "pools the carts' lines draw from")
		fs.Float64Var(&o.conflict, "conflict", 0.3, "share of anonymous lines that conflict with an account line")
		fs.Float64Var(&o.same, "same", 0.2, "share of anonymous lines identical to an account line")
		fs.DurationVar(&o.surge, "surge", 5*time.Second, "logins spread over this long from the middle of the run")
		fs.Float64Var(&o.mergeReplay, "replay", 0.1, "share of merges sent twice")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.findMaxGrowth = 0.05
	if o.findMax {
		for _, f := range strings.Split(steps, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				return nil, fmt.Errorf("--find-max-steps: %q is not a number", f)
			}
			o.findMaxSteps = append(o.findMaxSteps, n)
		}
	}
	if *caFile != "" || *insecure {
		o.tls = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: *insecure}
		if *caFile != "" {
			pem, err := os.ReadFile(*caFile)
			if err != nil {
				return nil, fmt.Errorf("--ca: %w", err)
			}
			o.tls.RootCAs = x509.NewCertPool()
			if !o.tls.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--ca %s: no PEM certificate found", *caFile)
			}
		}
	}
	o.targets = targets
	if len(o.targets) == 0 {
		o.targets = []string{"http://127.0.0.1:8080"}
	}
	return o, o.validate()
}

func (o *options) validate() error {
	switch {
	case o.duration <= 0:
		return errors.New("--duration must be positive")
	case o.rate < 0 || o.concurrency < 0 || o.workers < 1:
		return errors.New("--rate and --concurrency must not be negative, --workers at least 1")
	case o.timeout <= 0 || o.retries < 0:
		return errors.New("--timeout must be positive and --retries not negative")
	case o.holdTTL < time.Millisecond:
		return errors.New("--hold-ttl must be at least 1ms")
	case o.thinkMin < 0 || o.thinkMax < o.thinkMin:
		return errors.New("--think-min must be between 0 and --think-max")
	case o.pollEvery <= 0:
		return errors.New("--poll must be positive")
	case o.abandon < 0 || o.abandon > 1:
		return errors.New("--abandon must be between 0 and 1")
	}
	if o.findMax {
		switch {
		case o.rate > 0 || o.concurrency > 0:
			return errors.New("--find-max sets the load itself: drop --rate and --concurrency")
		case len(o.findMaxSteps) == 0 || len(o.findMaxSteps) > 12:
			return errors.New("--find-max-steps must list 1 to 12 steps")
		case o.findMaxStep < 500*time.Millisecond || o.findMaxStep > time.Minute:
			return errors.New("--find-max-step must be between 500ms and 1m")
		case o.findMaxP99 <= 0:
			return errors.New("--find-max-p99 must be positive")
		case o.findMaxShare <= 0 || o.findMaxShare > 1:
			return errors.New("--find-max-share must be in (0, 1]")
		case o.findMaxPatience < 0 || o.findMaxPatience > 12:
			return errors.New("--find-max-patience must be between 0 and 12")
		}
		for i, n := range o.findMaxSteps {
			if n < 1 || n > 65536 || (i > 0 && n <= o.findMaxSteps[i-1]) {
				return errors.New("--find-max-steps must be increasing, each between 1 and 65536")
			}
		}
	}
	switch o.scenario {
	case "drop":
		switch {
		case o.buyers < 1 || o.units < 1 || o.limit < 0:
			return errors.New("--buyers and --units must be at least 1, --limit not negative")
		case o.mode != "fcfs" && o.mode != "draw":
			return errors.New(`--mode must be "fcfs" or "draw"`)
		case o.dupes < 0 || o.dupes > 1:
			return errors.New("--dupes must be between 0 and 1")
		}
	case "retail":
		switch {
		case o.pools < 1 || o.ops < 1 || o.maxLines < 1:
			return errors.New("--pools, --ops and --max-lines must be at least 1")
		case o.stockMin < 1 || o.stockMax < o.stockMin:
			return errors.New("--stock-min must be at least 1 and at most --stock-max")
		case o.readsPerWrite < 0 || o.skew < 0 || o.readThink < 0:
			return errors.New("--reads-per-write, --skew and --read-think must not be negative")
		}
	case "merge":
		switch {
		case o.users < 1 || o.pools < 7:
			return errors.New("--users must be at least 1 and --pools at least 7")
		case o.conflict < 0 || o.same < 0 || o.conflict+o.same > 1:
			return errors.New("--conflict and --same must be shares adding up to at most 1")
		case o.mergeReplay < 0 || o.mergeReplay > 1 || o.surge < 0:
			return errors.New("--replay must be between 0 and 1, --surge not negative")
		}
	}
	return nil
}

// isTerminal says whether w is a terminal (the progress line then
// rewrites itself).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
