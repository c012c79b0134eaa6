package raftstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast/holdfast/raftstore/internal/logstore"
)

// Peer is one initial member of a cluster.
type Peer struct {
	ID   string
	Addr string // Raft address, host:port
}

// Config configures a Node. Zero durations and sizes take the documented
// defaults, tuned for a LAN or loopback cluster.
type Config struct {
	ID       string // node id; required
	DataDir  string // Pebble store and snapshots; required
	RaftAddr string // Raft listen and advertised address; required
	// APIAddr is announced through the log so followers can forward to the
	// leader. raftstore treats it as an opaque string.
	APIAddr string
	// Peers are the initial members, used only to bootstrap an empty data
	// directory. Empty means a single-node cluster of this node.
	Peers []Peer
	// NoBootstrap leaves an empty data directory unconfigured: the node
	// waits to be added to a running cluster (serve --join).
	NoBootstrap bool

	HeartbeatTimeout   time.Duration // default 500ms
	ElectionTimeout    time.Duration // default 500ms
	LeaderLeaseTimeout time.Duration // default 250ms
	ApplyTimeout       time.Duration // how long a proposal may wait to commit; default 5s
	SnapshotThreshold  uint64        // log entries between snapshots; default 8192
	TrailingLogs       uint64        // entries kept after a snapshot; default 10240

	// MaxBatchCmds bounds the commands coalesced into one log entry;
	// default 512. MaxBatchBytes bounds its size; default 256 KiB.
	MaxBatchCmds  int
	MaxBatchBytes int
	// Pipelines is how many entries may be in flight at once. A batch is
	// proposed at once when none is in flight, and otherwise only when it
	// is full (group commit). Default 4.
	Pipelines int
	// TickInterval is how often the leader checks for due deadlines; it
	// bounds expiry lag. Default 5ms.
	TickInterval time.Duration
	// FreshnessMs: an idle leader still writes a tick this often so
	// followers' stale reads can say how old they are. Default 1000.
	FreshnessMs int64
	// ClockOffset shifts this node's wall clock; fault tests use it to
	// simulate a leader whose clock is wrong.
	ClockOffset time.Duration
	// ClockOffsetFunc, when set, is added to ClockOffset at every wall
	// clock reading, so fault tests can step the clock while the node
	// runs (holdfast serve --debug-clock-file).
	ClockOffsetFunc func() time.Duration
	// DebugDiskFullFile, when set, makes every write and sync of the
	// Pebble store fail with ENOSPC while a file exists at that path:
	// fault tests use it to fill the disk of a running node.
	DebugDiskFullFile string

	// Registerer receives raftstore's metrics; nil means none.
	Registerer prometheus.Registerer
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// RaftLog receives hashicorp/raft's own log lines (warnings and
	// errors) as hclog text; nil sends them to Logger (see raftLogger).
	RaftLog io.Writer
	// PeerTLS, when set, carries Raft traffic over mutual TLS with it
	// (see LoadPeerTLS): a peer without a certificate from its CA can
	// neither connect to this node nor be connected to. Nil: plain TCP.
	PeerTLS *tls.Config
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HeartbeatTimeout, 500*time.Millisecond)
	def(&c.ElectionTimeout, 500*time.Millisecond)
	def(&c.LeaderLeaseTimeout, 250*time.Millisecond)
	def(&c.ApplyTimeout, 5*time.Second)
	def(&c.TickInterval, 5*time.Millisecond)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.MaxBatchCmds <= 0 {
		c.MaxBatchCmds = 512
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 256 << 10
	}
	if c.Pipelines <= 0 {
		c.Pipelines = 4
	}
	if c.FreshnessMs <= 0 {
		c.FreshnessMs = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Errors returned by Node. Callers map them to 503 unavailable: each is
// safe to retry with the same idempotency key.
var (
	// ErrNotLeader: this node is not the leader; forward or retry.
	ErrNotLeader = errors.New("raftstore: not the leader")
	// ErrClosed: the node is shutting down.
	ErrClosed = errors.New("raftstore: node closed")
	// ErrIndeterminate: leadership was lost while the proposal was in
	// flight; it may or may not have committed.
	ErrIndeterminate = errors.New("raftstore: outcome unknown (leadership lost)")
	// ErrTimeout: the proposal did not commit in time.
	ErrTimeout = errors.New("raftstore: timed out")
)

// Node is one member of a holdfast Raft group: it replicates a StateMachine
// over hashicorp/raft with a Pebble log, coalesces concurrent proposals
// into shared log entries, and serves linearizable read barriers.
//
// Today a process runs one group (group id 0). The log store is already
// namespaced by group id, so several groups, each owning a partition of
// the pools, can later share one Pebble DB and one process.
type Node struct {
	cfg   Config
	log   *slog.Logger
	sm    StateMachine
	fsm   *fsm
	raft  *raft.Raft
	db    *logstore.DB
	trans *raft.NetworkTransport

	proposals chan *proposal
	verify    verifier

	barrierMu   sync.Mutex
	barrierTerm atomic.Uint64

	lastStamp atomic.Int64
	clockMu   sync.Mutex
	clockBase time.Time // carries a monotonic reading
	baseMs    int64     // cluster time at clockBase
	seenMs    int64     // ms since clockBase at the last NowMs
	creditUs  int64     // catch-up earned since the node fell behind, in us

	tickInFlight atomic.Bool
	closed       chan struct{}
	closeOnce    sync.Once
	wg           sync.WaitGroup

	metrics *nodeMetrics
}

type proposal struct {
	cmd  []byte
	done chan proposalResult
}

type proposalResult struct {
	res any
	err error
}

// Open starts a node: it opens (or creates) the data directory, bootstraps
// the cluster from cfg.Peers if the directory is empty, and joins Raft.
func Open(cfg Config, sm StateMachine) (*Node, error) {
	cfg.setDefaults()
	if cfg.ID == "" || cfg.DataDir == "" || cfg.RaftAddr == "" {
		return nil, errors.New("raftstore: ID, DataDir and RaftAddr are required")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("raftstore: %w", err)
	}
	n := &Node{
		cfg:       cfg,
		log:       cfg.Logger.With("node", cfg.ID),
		sm:        sm,
		fsm:       newFSM(sm),
		proposals: make(chan *proposal, 8192),
		closed:    make(chan struct{}),
		clockBase: time.Now(),
		metrics:   newNodeMetrics(cfg.Registerer),
	}
	n.baseMs = n.clockBase.Add(n.clockOffset()).UnixMilli()
	n.fsm.onBatch = n.metrics.observeBatch

	var err error
	var opts logstore.Options
	opts.Logger = newPebbleLogger(n.log) // events.go
	if cfg.DebugDiskFullFile != "" {
		opts.FS = diskFullFS{FS: vfs.Default, trigger: cfg.DebugDiskFullFile}
	}
	n.db, err = logstore.Open(filepath.Join(cfg.DataDir, "pebble"), opts)
	if err != nil {
		return nil, fmt.Errorf("raftstore: open store: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			n.shutdownRaw()
			n.db.Close()
		}
	}()
	if kvsm, isKV := sm.(KVStateMachine); isKV {
		if err := kvsm.OpenKV(&pebbleKV{db: n.db}); err != nil {
			return nil, fmt.Errorf("raftstore: open state machine keyspace: %w", err)
		}
	}
	store, err := n.db.Group(0)
	if err != nil {
		return nil, fmt.Errorf("raftstore: %w", err)
	}
	logs, err := raft.NewLogCache(1024, store)
	if err != nil {
		return nil, fmt.Errorf("raftstore: %w", err)
	}
	hlog := raftLogger(cfg.RaftLog, n.log)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "snapshots"), 2, hlog)
	if err != nil {
		return nil, fmt.Errorf("raftstore: %w", err)
	}
	addr, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("raftstore: raft address: %w", err)
	}
	n.trans, err = newTransport(&cfg, addr, hlog)
	if err != nil {
		return nil, fmt.Errorf("raftstore: raft transport: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = 5 * time.Millisecond
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true
	rc.Logger = hlog

	has, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		return nil, fmt.Errorf("raftstore: %w", err)
	}
	// Heartbeats go through raft's main loop (the transport's fast path is
	// exposed to hashicorp/raft#695: replicas can diverge after a partition
	// heals) and replication is not pipelined (hashicorp/raft#612). See
	// noFastPath.
	n.raft, err = raft.NewRaft(rc, loggedFSM{n.fsm, n.log}, logs, store, snaps, noFastPath{n.trans})
	if err != nil {
		return nil, fmt.Errorf("raftstore: %w", err)
	}
	if !has && !cfg.NoBootstrap {
		peers := cfg.Peers
		if len(peers) == 0 {
			peers = []Peer{{ID: cfg.ID, Addr: cfg.RaftAddr}}
		}
		var servers []raft.Server
		for _, p := range peers {
			servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		if err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return nil, fmt.Errorf("raftstore: bootstrap: %w", err)
		}
		n.log.Info("bootstrapped cluster", "members", len(servers))
	}
	n.verify.raft = n.raft
	n.registerOpsMetrics(cfg.Registerer)
	n.wg.Add(1)
	go n.proposeLoop()
	n.wg.Add(1)
	go n.leaderLoop()
	n.wg.Add(1)
	go n.watchEvents() // events.go: one log line per notable event
	ok = true
	return n, nil
}

// noFastPath hides two of the TCP transport's optimizations from raft:
//
//   - the heartbeat fast path, so heartbeats are handled by raft's main loop
//     like every other RPC: the fast path bypasses the main loop's term
//     checks (hashicorp/raft#695);
//   - pipelined AppendEntries. When a follower answers Success=false (its
//     log store failed, e.g. a full disk) raft's pipeline decoder returns
//     while the sender can still park on the pipeline's in-flight channel,
//     and nothing closes it: replication to that follower stops for the
//     rest of the leader's term while heartbeats go on, so the follower
//     never times out, never catches up and, after a restart, never
//     applies anything (hashicorp/raft#612, grafana/pyroscope#5518; the
//     chaos suite hit it). Without the pipeline raft replicates with one
//     AppendEntries in flight per follower, carrying every entry waiting
//     (up to MaxAppendEntries), which group commit keeps large anyway.
type noFastPath struct{ *raft.NetworkTransport }

// SetHeartbeatHandler is deliberately a no-op.
func (noFastPath) SetHeartbeatHandler(func(raft.RPC)) {}

// AppendEntriesPipeline is deliberately unsupported; raft falls back to
// synchronous AppendEntries.
func (noFastPath) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

// ID is this node's id.
func (n *Node) ID() string { return n.cfg.ID }

// catchUpPerMille bounds how much faster than real time cluster time may
// run while it is behind this node's wall clock: a leader whose wall clock
// is ahead can make a hold expire at most 1% early.
const catchUpPerMille = 10

// NowMs is this node's timestamp for log entries: cluster time. A node that
// takes leadership continues from the log clock (the wall clock only on a
// fresh cluster) and advances with its monotonic clock, so neither a wall
// clock step nor a wrong wall clock on a new leader moves log time; while
// behind the wall clock it catches up at most catchUpPerMille faster than
// real time (after a full-cluster outage). Never smaller than a stamp it
// gave before.
//
// The catch-up is earned only while behind: a leader that ran in step
// with its wall clock for an hour and then sees it jump forward must not
// spend an hour's 1% at once (that expired short holds immediately).
func (n *Node) NowMs() int64 {
	var smMs int64
	if n.sm != nil {
		smMs = n.sm.ClockMs()
	}
	n.clockMu.Lock()
	elapsed := time.Since(n.clockBase).Milliseconds()
	now := n.baseMs + elapsed
	if smMs > now {
		// The state machine's clock was moved past cluster time by a
		// command (a restored cluster adopting the time of its restore):
		// cluster time continues from there.
		n.baseMs, n.clockBase, n.seenMs, n.creditUs = smMs, time.Now(), 0, 0
		elapsed, now = 0, smMs
	}
	if gap := n.wallMs() - now; gap > 0 {
		n.creditUs += (elapsed - n.seenMs) * catchUpPerMille
		if step := min(gap, n.creditUs/1000); step > 0 {
			n.baseMs += step
			n.creditUs -= step * 1000
			now += step
		}
	} else {
		n.creditUs = 0
	}
	n.seenMs = elapsed
	n.clockMu.Unlock()
	for {
		last := n.lastStamp.Load()
		if now <= last {
			return last
		}
		if n.lastStamp.CompareAndSwap(last, now) {
			return now
		}
	}
}

func (n *Node) wallMs() int64 { return time.Now().Add(n.clockOffset()).UnixMilli() }

func (n *Node) clockOffset() time.Duration {
	if f := n.cfg.ClockOffsetFunc; f != nil {
		return n.cfg.ClockOffset + f()
	}
	return n.cfg.ClockOffset
}

// takeClock starts this node's cluster time on taking leadership: from the
// log clock, never below a stamp it gave before.
func (n *Node) takeClock() {
	base := n.sm.ClockMs()
	if base == 0 {
		base = n.wallMs() // a fresh cluster: nothing to continue from
	}
	base = max(base, n.lastStamp.Load())
	n.clockMu.Lock()
	n.baseMs, n.clockBase = base, time.Now()
	n.seenMs, n.creditUs = 0, 0
	n.clockMu.Unlock()
}

// IsLeader reports whether this node currently believes it leads.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's id and API address, if known.
func (n *Node) Leader() (id, apiAddr string, ok bool) {
	_, lid := n.raft.LeaderWithID()
	if lid == "" {
		return "", "", false
	}
	addr := n.fsm.member(string(lid))
	return string(lid), addr, addr != ""
}

// Err reports a latched storage failure: once set the node must not
// acknowledge writes.
func (n *Node) Err() error { return n.db.Err() }

// Propose replicates one command and returns the state machine's result
// for it once the entry carrying it is committed on a quorum (each member
// fsyncs before acknowledging) and applied here.
func (n *Node) Propose(ctx context.Context, cmd []byte) (any, error) {
	if err := n.db.Err(); err != nil {
		return nil, fmt.Errorf("raftstore: store failed: %w", err)
	}
	if n.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	p := &proposal{cmd: cmd, done: make(chan proposalResult, 1)}
	select {
	case n.proposals <- p:
	case <-n.closed:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-p.done:
		return r.res, r.err
	case <-n.closed:
		return nil, ErrClosed
	case <-ctx.Done():
		// The command may still commit; the client retries with its
		// idempotency key.
		return nil, ctx.Err()
	}
}

// proposeLoop is group commit: it collects queued proposals into one log
// entry. With nothing in flight a batch is proposed at once (an idle node
// adds no latency); while entries are in flight it keeps filling the next
// batch until one completes or the batch is full, so under load each fsync
// carries many commands. At most Pipelines entries are in flight.
func (n *Node) proposeLoop() {
	defer n.wg.Done()
	done := make(chan struct{}, n.cfg.Pipelines)
	inflight := 0
	var batch []*proposal
	size := 0
	for {
		// A full batch with every pipeline busy takes nothing more: the
		// proposals wait in the channel, so an entry stays within
		// MaxBatchCmds and MaxBatchBytes.
		in := n.proposals
		if len(batch) >= n.cfg.MaxBatchCmds || size >= n.cfg.MaxBatchBytes {
			in = nil
		}
		select {
		case p := <-in:
			batch = append(batch, p)
			size += len(p.cmd)
		fill:
			for len(batch) < n.cfg.MaxBatchCmds && size < n.cfg.MaxBatchBytes {
				select {
				case p := <-n.proposals:
					batch = append(batch, p)
					size += len(p.cmd)
				default:
					break fill
				}
			}
		case <-done:
			inflight--
		case <-n.closed:
			for _, p := range batch {
				p.done <- proposalResult{err: ErrClosed}
			}
			return
		}
		full := len(batch) >= n.cfg.MaxBatchCmds || size >= n.cfg.MaxBatchBytes
		if len(batch) > 0 && (inflight == 0 || (full && inflight < n.cfg.Pipelines)) {
			inflight++
			n.wg.Add(1)
			go n.commit(batch, done)
			batch, size = nil, 0
		}
	}
}

// commit proposes one batch as one log entry and hands each proposal its
// result once the entry is committed and applied.
func (n *Node) commit(batch []*proposal, done chan<- struct{}) {
	defer n.wg.Done()
	defer func() { done <- struct{}{} }()
	buf := appendBatchHeader(make([]byte, 0, 64+len(batch)*64), n.NowMs(), len(batch))
	for _, p := range batch {
		buf = appendCmd(buf, p.cmd)
	}
	start := time.Now()
	f := n.raft.Apply(buf, n.cfg.ApplyTimeout)
	err := f.Error()
	n.metrics.applySeconds.Observe(time.Since(start).Seconds())
	var results []any
	if err == nil {
		switch r := f.Response().(type) {
		case []any:
			results = r
		case error:
			err = r
		}
		if err == nil && len(results) != len(batch) {
			err = fmt.Errorf("raftstore: %d results for %d commands", len(results), len(batch))
		}
	}
	err = mapRaftErr(err)
	for i, p := range batch {
		if err != nil {
			p.done <- proposalResult{err: err}
		} else {
			p.done <- proposalResult{res: results[i]}
		}
	}
}

func mapRaftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost):
		return ErrIndeterminate
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return ErrTimeout
	}
	return err
}

// leaderLoop does the leader's periodic work: announce its API address once
// per term, and propose ticks when deadlines fall due (so holds expire
// without traffic) or when the log clock has gone stale.
func (n *Node) leaderLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.TickInterval)
	defer t.Stop()
	var announcedTerm, clockTerm uint64
	for {
		select {
		case <-n.closed:
			return
		case <-t.C:
		}
		if n.raft.State() != raft.Leader {
			continue
		}
		if term := n.raft.CurrentTerm(); term != announcedTerm {
			if term != clockTerm {
				n.takeClock()
				clockTerm = term
			}
			if n.raft.Apply(encodeMember(n.cfg.ID, n.cfg.APIAddr), n.cfg.ApplyTimeout).Error() == nil {
				announcedTerm = term
				n.log.Debug("announced API address", "term", term) // watchEvents logs the election
			}
			continue
		}
		now := n.NowMs()
		next, due := n.sm.NextDeadlineMs()
		stale := now-n.sm.ClockMs() >= n.cfg.FreshnessMs
		if (due && next <= now) || stale {
			n.tick(now)
		}
	}
}

// tick proposes an empty batch: it moves the log clock, which reclaims
// what fell due. At most one tick is in flight.
func (n *Node) tick(nowMs int64) {
	if !n.tickInFlight.CompareAndSwap(false, true) {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.tickInFlight.Store(false)
		n.raft.Apply(appendBatchHeader(nil, nowMs, 0), n.cfg.ApplyTimeout).Error()
		n.metrics.ticks.Inc()
	}()
}

// ReadBarrier makes a following local read linearizable: when it returns
// nil, this node is the leader and its state machine reflects every write
// acknowledged before the call. Concurrent callers share one leadership
// check (the ReadIndex recipe of the Raft paper, section 6.4).
func (n *Node) ReadBarrier(ctx context.Context) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	// A new leader may not know the commit index of earlier terms until an
	// entry of its own term commits: one barrier per term settles it. The
	// barrier is an empty command entry, not raft.Barrier: hashicorp/raft
	// hands a batching FSM only command and configuration entries, so after
	// a raft barrier (or the term's no-op) the FSM's applied index would
	// stay below the commit index until the next command. Once this entry
	// is applied, every later entry of the term reaches the FSM.
	if term := n.raft.CurrentTerm(); n.barrierTerm.Load() != term {
		n.barrierMu.Lock()
		if n.barrierTerm.Load() != term {
			if err := n.raft.Apply(appendBatchHeader(nil, n.NowMs(), 0), n.cfg.ApplyTimeout).Error(); err != nil {
				n.barrierMu.Unlock()
				return mapRaftErr(err)
			}
			n.barrierTerm.Store(term)
		}
		n.barrierMu.Unlock()
	}
	idx := n.raft.CommitIndex()
	if err := n.verify.verify(); err != nil {
		return mapRaftErr(err)
	}
	for n.fsm.applied.Load() < idx {
		ch := n.fsm.waitCh()
		if n.fsm.applied.Load() >= idx {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.closed:
			return ErrClosed
		}
	}
	return nil
}

// Consistent runs read with this node's applies paused, passing the index
// of the last applied entry: what read sees of the state machine is
// exactly the state at that index. Applies wait while read runs, so keep
// it for diagnostics (the state hash the fault suite compares).
func (n *Node) Consistent(read func(appliedIndex uint64)) {
	n.fsm.applyMu.Lock()
	defer n.fsm.applyMu.Unlock()
	read(n.fsm.applied.Load())
}

// verifier coalesces VerifyLeader calls: a caller joins the next round to
// start, never one already running (which may predate its read).
type verifier struct {
	raft    *raft.Raft
	mu      sync.Mutex
	running bool
	next    *verifyRound
}

type verifyRound struct {
	done chan struct{}
	err  error
}

func (v *verifier) verify() error {
	v.mu.Lock()
	if v.next == nil {
		v.next = &verifyRound{done: make(chan struct{})}
	}
	r := v.next
	if !v.running {
		v.running = true
		v.next = nil
		go v.run(r)
	}
	v.mu.Unlock()
	<-r.done
	return r.err
}

func (v *verifier) run(r *verifyRound) {
	for r != nil {
		r.err = v.raft.VerifyLeader().Error()
		close(r.done)
		v.mu.Lock()
		r, v.next = v.next, nil
		if r == nil {
			v.running = false
		}
		v.mu.Unlock()
	}
}

// Member is one voter of the cluster.
type Member struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr,omitempty"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}

// Status describes the cluster as this node sees it.
type Status struct {
	ID           string   `json:"id"`
	State        string   `json:"state"`
	Leader       string   `json:"leader"`
	Term         uint64   `json:"term"`
	CommitIndex  uint64   `json:"commit_index"`
	AppliedIndex uint64   `json:"applied_index"`
	LastIndex    uint64   `json:"last_index"`
	LogClockMs   int64    `json:"-"`
	Members      []Member `json:"members"`
}

// Status returns the cluster status as seen by this node.
func (n *Node) Status() Status {
	_, lid := n.raft.LeaderWithID()
	s := Status{
		ID:           n.cfg.ID,
		State:        n.raft.State().String(),
		Leader:       string(lid),
		Term:         n.raft.CurrentTerm(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.fsm.applied.Load(),
		LastIndex:    n.raft.LastIndex(),
		LogClockMs:   n.sm.ClockMs(),
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			s.Members = append(s.Members, Member{
				ID:       string(srv.ID),
				RaftAddr: string(srv.Address),
				APIAddr:  n.fsm.member(string(srv.ID)),
				Suffrage: srv.Suffrage.String(),
				Leader:   srv.ID == lid,
			})
		}
	}
	return s
}

// Snapshot forces a Raft snapshot now (tests and operators use it).
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Close shuts the node down: pending proposals fail with ErrClosed, Raft
// stops, and the store is closed.
func (n *Node) Close() error {
	var err error
	n.closeOnce.Do(func() {
		close(n.closed)
		err = n.shutdownRaw()
		n.wg.Wait()
		if cerr := n.db.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

func (n *Node) shutdownRaw() error {
	var shutdown raft.Future
	if n.raft != nil {
		shutdown = n.raft.Shutdown()
	}
	// Closing the transport (and its connections, see closingStream) ends
	// RPCs to peers that stopped answering, which raft.Shutdown waits for.
	var err error
	if n.trans != nil {
		err = n.trans.Close()
	}
	if shutdown != nil {
		if serr := shutdown.Error(); serr != nil {
			err = serr
		}
	}
	return err
}
