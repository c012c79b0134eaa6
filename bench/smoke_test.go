package bench_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/bench"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

// The smoke tests run each scenario at tiny sizes through bench.Main (the
// `holdfast bench` command line) against an in-process single-node
// holdfast and the no-op ceiling, and check the JSON report: the rows are
// there, nothing failed, and the ledger checks pass.

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startNode starts one holdfast node (Pebble with fsync, Raft over
// loopback, the API on a real socket) and returns its target URL.
func startNode(t *testing.T) string {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	raftAddr, httpAddr := freeAddr(t), freeAddr(t)
	reg := prometheus.NewRegistry()
	machine := engine.New(engine.Config{})
	node, err := raftstore.Open(raftstore.Config{
		ID: "n1", DataDir: t.TempDir(), RaftAddr: raftAddr, APIAddr: httpAddr,
		Peers:            []raftstore.Peer{{ID: "n1", Addr: raftAddr}},
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, Logger: quiet, RaftLog: io.Discard, Registerer: reg,
	}, machine)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		node.Close()
		t.Fatal(err)
	}
	srv := api.New(api.Config{Node: node, Alloc: machine.Alloc, Carts: machine, Registry: reg, Logger: quiet, RequestTimeout: 5 * time.Second})
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		node.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for !node.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("no leader within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "http://" + httpAddr
}

// runBench runs `holdfast bench args...` and returns its JSON report.
func runBench(t *testing.T, args ...string) *bench.Report {
	t.Helper()
	path := filepath.Join(t.TempDir(), "report.json")
	var out, errs strings.Builder
	args = append(args, "--progress=false", "--json", path)
	start := time.Now()
	if rc := bench.Main(args, bench.Registry{}, &out, &errs); rc != 0 {
		t.Fatalf("bench %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, rc, out.String(), errs.String())
	}
	t.Logf("bench %s took %v:\n%s", args[0], time.Since(start).Round(time.Millisecond), out.String())
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report: %v", err)
	}
	return &rep
}

func op(t *testing.T, tr *bench.TargetReport, name string) bench.OpReport {
	t.Helper()
	for _, o := range tr.Ops {
		if o.Op == name {
			return o
		}
	}
	t.Fatalf("%s: no %q row in %+v", tr.Target, name, tr.Ops)
	return bench.OpReport{}
}

// checkReport: every op row has samples and no failure, the ledger checks
// named pass (status ok, value 0).
func checkReport(t *testing.T, tr *bench.TargetReport, ops []string, checks ...string) {
	t.Helper()
	if tr.Error != "" || tr.Skipped != "" {
		t.Fatalf("%s: error %q skipped %q", tr.Target, tr.Error, tr.Skipped)
	}
	for _, name := range ops {
		o := op(t, tr, name)
		if o.Count == 0 || o.Outcomes["failed"] != 0 || o.P99 <= 0 || o.Max < o.P99 {
			t.Errorf("%s %s: %+v", tr.Target, name, o)
		}
	}
	if tr.Total.Outcomes["failed"] != 0 {
		t.Errorf("%s: %d failed operations", tr.Target, tr.Total.Outcomes["failed"])
	}
	if len(tr.Series) == 0 {
		t.Errorf("%s: no time series", tr.Target)
	}
	got := map[string]bench.Check{}
	for _, c := range tr.Checks {
		got[c.Name] = c
	}
	for _, name := range checks {
		c, ok := got[name]
		if !ok {
			t.Errorf("%s: no check %q in %+v", tr.Target, name, tr.Checks)
			continue
		}
		if c.Status != "ok" || c.Value != 0 {
			t.Errorf("%s: check %q: %+v", tr.Target, name, c)
		}
	}
}

var ledgerChecks = []string{"oversell (units)", "buyer limit violations", "acknowledged confirms missing", "sold below acknowledged (units)"}

func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	hf := startNode(t)

	t.Run("drop", func(t *testing.T) {
		rep := runBench(t, "drop", "--target", hf, "--buyers", "2000", "--units", "100", "--duration", "1s",
			"--hold-ttl", "1s", "--think-min", "50ms", "--think-max", "400ms", "--probes", "4")
		tr := rep.Targets[0]
		checkReport(t, tr, []string{"instock", "reserve", "confirm"}, append(ledgerChecks, "stuck holds (units)")...)
		res := op(t, tr, "reserve").Outcomes
		// 100 units, plus abandoned holds that came back within the run.
		if res["ok"] < 100 || res["sold_out"] == 0 {
			t.Errorf("reserve outcomes %v: want every unit granted, the rest sold out", res)
		}
		if c := tr.Checks[2]; c.Of == 0 {
			t.Errorf("no acknowledged confirms to check: %+v", c)
		}
		if f := tr.Fairness; f == nil || f.Buyers != 2000 || f.Units != res["ok"] || f.Jain <= 0 {
			t.Errorf("fairness %+v", f)
		}
		if e := tr.ExpiryLag; e == nil || e.Samples == 0 || e.NotBack != 0 {
			t.Errorf("expiry lag %+v", e)
		}
		if d := tr.LateDisappointment; d == nil || d.Attempts != 2000 {
			t.Errorf("late disappointment %+v", d)
		}
	})

	t.Run("drop-wait", func(t *testing.T) {
		rep := runBench(t, "drop", "--target", hf, "--buyers", "500", "--units", "20", "--duration", "1s",
			"--wait", "--hold-ttl", "1s", "--think-min", "50ms", "--think-max", "300ms", "--poll", "200ms", "--drain", "2s", "--probes", "0")
		tr := rep.Targets[0]
		checkReport(t, tr, []string{"reserve", "poll"}, ledgerChecks...)
		if f := tr.Fairness; f == nil || f.QueueJumps != 0 {
			t.Errorf("queue jumps: %+v", f)
		}
	})

	t.Run("retail", func(t *testing.T) {
		// Nobody abandons, so every checkout's confirm is checked.
		rep := runBench(t, "retail", "--target", hf, "--pools", "50", "--ops", "200", "--duration", "1s",
			"--hold-ttl", "2s", "--think-min", "50ms", "--think-max", "300ms", "--read-think", "5ms", "--abandon", "0", "--probes", "0")
		tr := rep.Targets[0]
		checkReport(t, tr, []string{"cart_create", "cart_add", "cart_read", "checkout", "confirm"}, append(ledgerChecks, "stuck holds (units)")...)
		if c := tr.Checks[2]; c.Of == 0 || c.Of != op(t, tr, "checkout").Count {
			t.Errorf("acknowledged confirms %+v, want one per checkout", c)
		}
		if d := tr.LateDisappointment; d == nil || d.Attempts == 0 {
			t.Errorf("late disappointment %+v", d)
		}
	})

	t.Run("merge", func(t *testing.T) {
		rep := runBench(t, "merge", "--target", hf, "--users", "50", "--pools", "20", "--duration", "1s", "--surge", "200ms")
		tr := rep.Targets[0]
		checkReport(t, tr, []string{"cart_create", "cart_add", "merge", "cart_read"}, "merge answers not as the review policy says")
	})

	t.Run("find-max", func(t *testing.T) {
		// A two-step ramp, then the measured run at half the max; the
		// leader-aware client on a single node forwards nothing.
		rep := runBench(t, "drop", "--target", hf, "--find-max", "--find-max-steps", "4,16", "--find-max-step", "600ms",
			"--buyers", "20000", "--units", "50", "--duration", "1s", "--drain", "1s", "--hold-ttl", "500ms",
			"--think-min", "20ms", "--think-max", "200ms", "--probes", "2")
		tr := rep.Targets[0]
		checkReport(t, tr, []string{"instock", "reserve"}, append(ledgerChecks, "find-max ramp: ledger checks failed")...)
		fm := tr.FindMax
		if fm == nil || len(fm.Steps) == 0 || fm.MaxPerSec <= 0 || fm.Rate != fm.MaxPerSec*0.5 || fm.Stopped == "" {
			t.Fatalf("find-max %+v", fm)
		}
		for _, st := range fm.Steps {
			if st.Ops == 0 || st.P99 <= 0 || st.Checks == "" {
				t.Errorf("ramp step %+v", st)
			}
		}
		if !strings.Contains(tr.Mode, "open loop") || !strings.Contains(tr.Mode, "50% of the max") {
			t.Errorf("mode %q", tr.Mode)
		}
		if r := tr.Routing; r == nil || !r.LeaderAware || r.Writes == 0 || r.WritesForwarded != 0 || r.SentToLeader == 0 {
			t.Errorf("routing %+v", r)
		}
	})

	t.Run("noop", func(t *testing.T) {
		rep := runBench(t, "drop", "--target", "noop://", "--buyers", "1000", "--units", "10", "--duration", "1s",
			"--think-max", "300ms")
		tr := rep.Targets[0]
		checkReport(t, tr, []string{"instock", "reserve", "confirm"})
		if tr.Target != "noop" || op(t, tr, "reserve").Outcomes["ok"] < 1000 {
			t.Errorf("noop: %+v", tr)
		}
		for _, c := range tr.Checks {
			if c.Status != "n/a" {
				t.Errorf("noop check %+v: want n/a", c)
			}
		}
		// The emulated retail flow on a target without a cart API.
		rep = runBench(t, "retail", "--target", "noop://", "--pools", "20", "--ops", "200", "--duration", "1s", "--think-max", "300ms", "--read-think", "5ms")
		checkReport(t, rep.Targets[0], []string{"cart_add", "cart_read", "checkout"})
		// merge skips it with a message, without failing.
		rep = runBench(t, "merge", "--target", "noop://", "--users", "5", "--pools", "10", "--duration", "1s")
		if !strings.Contains(rep.Targets[0].Skipped, "holdfast only") {
			t.Errorf("merge on noop: %+v", rep.Targets[0])
		}
	})
}
