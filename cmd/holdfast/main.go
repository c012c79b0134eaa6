// Command holdfast runs a holdfast node (serve), the load harness (bench)
// and prints its version (version). See CONTRACT.md for the command line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/holdfast/holdfast/api"
	"github.com/holdfast/holdfast/bench"
	"github.com/holdfast/holdfast/bench/peers"
	"github.com/holdfast/holdfast/ctl"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "holdfast", version)
		return 0
	case "bench":
		return bench.Main(args[1:], benchTargets(), stdout, stderr)
	case "ctl":
		return ctl.Main(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "holdfast: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  holdfast serve [--id n1] [--data ./data] [--http 127.0.0.1:8080] [--raft 127.0.0.1:9080] [--peers n1=host:port,...]
  holdfast bench SCENARIO [flags]
  holdfast ctl COMMAND (holdfast ctl help)
  holdfast version
`)
}

// benchTargets are the peer systems the load harness can run against,
// beside its built-in holdfast (http://) and no-op (noop://) targets.
func benchTargets() bench.Registry {
	reg := bench.Registry{}
	reg.RegisterTarget("redis", peers.OpenRedis)
	reg.RegisterTarget("postgres", peers.OpenPostgres)
	reg.RegisterTarget("postgresql", peers.OpenPostgres)
	return reg
}

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", "n1", "node id")
	dataDir := fs.String("data", "./data", "data directory (Pebble store and snapshots)")
	httpAddr := fs.String("http", "127.0.0.1:8080", "API listen address")
	raftAddr := fs.String("raft", "127.0.0.1:9080", "Raft listen address")
	peersFlag := fs.String("peers", "", "initial members id=host:port,... (same on every node)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text (key=value) or json (one object per line)")
	join := fs.String("join", "", "URL of a running node's API: join its cluster (empty data directory; uses $HOLDFAST_TOKEN)")
	restore := fs.String("restore", "", "backup file (holdfast ctl backup): start a new cluster from it (empty data directory)")
	clockOffset := fs.Duration("debug-clock-offset", 0, "shift this node's clock (fault tests only)")
	fastRefusals := fs.Bool("fast-refusals", true, "the leader answers requests its state certainly refuses without a log entry (false: all go through the log; for comparisons)")
	clockFile := fs.String("debug-clock-file", "", "file holding a clock offset re-read while running, e.g. -5m (fault tests only)")
	diskFullFile := fs.String("debug-disk-full-file", "", "while this file exists, storage writes fail with ENOSPC (fault tests only)")
	secFlags := addSecurityFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "holdfast:", err)
		return 2
	}
	defer dumpStacksOnSIGUSR1(stderr, log)() // from here on, even before ready
	sec, err := secFlags.load(*httpAddr, *raftAddr, log)
	if err != nil {
		fmt.Fprintln(stderr, "holdfast:", err)
		return 2
	}
	defer sec.reloadOnSIGHUP(log)()
	peers, err := ctl.ParsePeers(*peersFlag)
	if err != nil {
		fmt.Fprintln(stderr, "holdfast: --peers:", err)
		return 2
	}
	if len(peers) > 0 {
		found := false
		for _, p := range peers {
			found = found || p.ID == *id
		}
		if !found {
			fmt.Fprintf(stderr, "holdfast: --peers does not list this node (%s)\n", *id)
			return 2
		}
	}

	if *join != "" && (*restore != "" || len(peers) > 0) {
		fmt.Fprintln(stderr, "holdfast: --join cannot be combined with --restore or --peers")
		return 2
	}
	if *restore != "" {
		if err := restoreFrom(*restore, raftstore.Config{ID: *id, DataDir: *dataDir, RaftAddr: *raftAddr, Peers: peers}, log); err != nil {
			log.Error("cannot restore", "file", *restore, "err", err)
			return 1
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	machine := engine.New(engine.Config{})
	debugCtx, stopDebug := context.WithCancel(context.Background())
	defer stopDebug()
	var clockFn func() time.Duration
	if *clockFile != "" {
		clockFn = watchClockFile(debugCtx, *clockFile, log)
	}
	node, err := raftstore.Open(raftstore.Config{
		ID: *id, DataDir: *dataDir, RaftAddr: *raftAddr, APIAddr: *httpAddr, Peers: peers, NoBootstrap: *join != "",
		ClockOffset: *clockOffset, ClockOffsetFunc: clockFn, DebugDiskFullFile: *diskFullFile,
		Registerer: reg, Logger: log, PeerTLS: sec.peerTLS,
	}, machine)
	if err != nil {
		log.Error("cannot start node", "err", err)
		return 1
	}
	closeOnReturn := true // the SIGTERM path closes it itself, bounded
	defer func() {
		if closeOnReturn {
			node.Close()
		}
	}()
	if raftstore.RestorePending(*dataDir) { // this start's --restore, or one before it
		offset := *clockOffset
		go adoptRestoreClock(debugCtx, node, machine, *dataDir, func() int64 { return time.Now().Add(offset).UnixMilli() }, log)
	}

	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		log.Error("cannot listen", "addr", *httpAddr, "err", err)
		return 1
	}
	ln = sec.listener(ln)
	srv := api.New(api.Config{Node: node, Alloc: machine.Alloc, Carts: machine, Registry: reg, Logger: log, Auth: sec.authenticator(), ForwardTLS: sec.forwardTLS,
		DisableFastRefusals: !*fastRefusals})
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if *join != "" {
		if err := joinCluster(node, *join, ctl.Member{ID: *id, RaftAddr: *raftAddr, APIAddr: *httpAddr}, log); err != nil {
			log.Error("cannot join", "url", *join, "err", err)
			return 1
		}
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)

	// Ready once a leader is known whose API address is known too: only
	// then can this node answer writes (itself or by forwarding).
	ready := time.NewTicker(20 * time.Millisecond)
	for waiting := true; waiting; {
		select {
		case <-ready.C:
			if _, _, ok := node.Leader(); ok {
				waiting = false
			}
		case s := <-sig:
			log.Info("signal before ready", "signal", s.String())
			return 0
		case err := <-serveErr:
			log.Error("http server failed", "err", err)
			return 1
		}
	}
	ready.Stop()
	// The contract's readiness line: printed whatever the log level.
	fmt.Fprintf(stderr, "holdfast ready id=%s http=%s raft=%s version=%s\n", *id, *httpAddr, *raftAddr, version)

	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
	case err := <-serveErr:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			log.Error("http server failed", "err", err)
			return 1
		}
	}
	drainAndStepDown(srv, node, log)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	closeOnReturn = false
	finished, err := closeWithin(shutdownRaftLimit, node.Close, stderr)
	if !finished {
		log.Error("raft shutdown did not finish; exiting anyway (nothing acknowledged is lost)", "limit", shutdownRaftLimit)
		return 1
	}
	if err != nil {
		log.Warn("raft shutdown", "err", err)
	}
	return 0
}

// shutdownRaftLimit bounds how long SIGTERM waits for Raft and the store to
// close after the HTTP server has drained. raft.Shutdown waits for its
// goroutines; raftstore closes the transport's connections so RPCs to a
// peer that stopped answering end at once (chaos TermUnderBlackhole found
// them waiting out the 10 s I/O timeout, twice). The bound is the safety
// net for any other hang of that kind.
const shutdownRaftLimit = 12 * time.Second
