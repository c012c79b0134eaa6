package bench_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/auth"
	"github.com/holdfast/holdfast/bench"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/internal/testcert"
	"github.com/holdfast/holdfast/raftstore"
)

// startSecureNode starts one node serving HTTPS with tokens required and
// returns its https:// target URL.
func startSecureNode(t *testing.T, cert tls.Certificate, tokens *auth.Table) string {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	raftAddr, httpAddr := freeAddr(t), freeAddr(t)
	reg := prometheus.NewRegistry()
	machine := engine.New(engine.Config{})
	node, err := raftstore.Open(raftstore.Config{
		ID: "n1", DataDir: t.TempDir(), RaftAddr: raftAddr, APIAddr: httpAddr,
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
	ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	srv := api.New(api.Config{Node: node, Alloc: machine.Alloc, Carts: machine, Registry: reg, Logger: quiet, RequestTimeout: 5 * time.Second, Auth: tokens})
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
	return "https://" + httpAddr
}

// TestBenchHTTPSWithToken: the harness runs against a node serving HTTPS
// with auth, given --ca (or --insecure-skip-verify) and --token; without
// the token it fails instead of measuring refusals.
func TestBenchHTTPSWithToken(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	ca := testcert.NewCA(t, "api ca")
	const token = "hf_bench-admin"
	tokens, err := auth.Parse(strings.NewReader(auth.FormatEntry(auth.Admin, "bench", []byte(token))))
	if err != nil {
		t.Fatal(err)
	}
	target := startSecureNode(t, ca.Issue(t, "n1", "127.0.0.1").TLS, tokens)
	caFile := ca.WriteFile(t, t.TempDir(), "ca.crt")
	small := []string{"--buyers", "200", "--units", "20", "--duration", "500ms", "--hold-ttl", "1s",
		"--think-min", "20ms", "--think-max", "100ms", "--probes", "0"}

	rep := runBench(t, append([]string{"drop", "--target", target, "--ca", caFile, "--token", token}, small...)...)
	checkReport(t, rep.Targets[0], []string{"instock", "reserve", "confirm"}, ledgerChecks...)
	if ok := op(t, rep.Targets[0], "reserve").Outcomes["ok"]; ok < 20 {
		t.Errorf("%d reserves granted over https, want every unit", ok)
	}

	t.Setenv("HOLDFAST_TOKEN", token)
	rep = runBench(t, append([]string{"drop", "--target", target, "--insecure-skip-verify"}, small...)...)
	checkReport(t, rep.Targets[0], []string{"instock", "reserve", "confirm"}, ledgerChecks...)

	t.Setenv("HOLDFAST_TOKEN", "")
	var out, errs strings.Builder
	if rc := bench.Main(append([]string{"drop", "--target", target, "--ca", caFile, "--progress=false"}, small...), bench.Registry{}, &out, &errs); rc == 0 {
		t.Fatalf("a run without a token succeeded:\n%s", out.String())
	}
	if rc := bench.Main(append([]string{"drop", "--target", target, "--token", token, "--progress=false"}, small...), bench.Registry{}, &out, &errs); rc == 0 {
		t.Fatalf("a run that does not trust the server's CA succeeded:\n%s", out.String())
	}
}
