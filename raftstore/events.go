package raftstore

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// A node's log has one line per notable event and nothing per request (see
// docs/operations.md, "Logs"). At info: a leader elected (every node logs
// what it sees, once per term), the membership as first seen and every
// change to it, a snapshot taken or restored, an expiry backlog cleared.
// At warn: no leader for a while, an expiry backlog, and hashicorp/raft's
// own warnings and errors (each message at most once per raftLogEvery).

// Event watching limits.
const (
	// eventCheckInterval is how often the watcher compares leader,
	// membership and expiry lag with what it last logged (observations
	// from raft wake it sooner).
	eventCheckInterval = 250 * time.Millisecond
	// leaderlessWarnAfter: a node that knows no leader for this long says
	// so once (an election normally takes a few election timeouts).
	leaderlessWarnAfter = 5 * time.Second
	// expiryBacklogMs: the leader reports an expiry backlog when the
	// earliest pending deadline is this late on two checks in a row, and
	// reports it cleared once the lag is under half of it.
	expiryBacklogMs = 1000
)

// eventWatch is what the watcher last logged.
type eventWatch struct {
	leader          string
	term            uint64
	leaderlessSince time.Time // zero while a leader is known
	leaderlessTold  bool

	members map[string]raft.Server // nil until a configuration is seen

	lateChecks     int // consecutive checks with the lag over expiryBacklogMs
	backlog        bool
	backlogSince   time.Time
	backlogMaxLate int64
}

// watchEvents logs leader, membership and expiry-backlog changes until the
// node closes.
func (n *Node) watchEvents() {
	defer n.wg.Done()
	wake := make(chan raft.Observation, 16)
	obs := raft.NewObserver(wake, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.PeerObservation:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(obs)
	defer n.raft.DeregisterObserver(obs)
	t := time.NewTicker(eventCheckInterval)
	defer t.Stop()
	var w eventWatch
	for {
		select {
		case <-n.closed:
			return
		case <-wake:
		case <-t.C:
		}
		now := time.Now()
		w.checkLeader(n, now)
		w.checkMembers(n)
		w.checkExpiry(n, now)
	}
}

func (w *eventWatch) checkLeader(n *Node, now time.Time) {
	_, lid := n.raft.LeaderWithID()
	id := string(lid)
	if id == "" {
		if w.leaderlessSince.IsZero() {
			w.leaderlessSince = now
		}
		if !w.leaderlessTold && now.Sub(w.leaderlessSince) >= leaderlessWarnAfter {
			w.leaderlessTold = true
			n.log.Warn("no leader", "for_ms", now.Sub(w.leaderlessSince).Milliseconds(), "term", n.raft.CurrentTerm(), "last_leader", w.leader)
		}
		return
	}
	term := n.raft.CurrentTerm()
	if id == w.leader && term == w.term {
		return
	}
	attrs := []any{"leader", id, "term", term, "self", id == n.cfg.ID}
	if w.leader != "" {
		attrs = append(attrs, "previous", w.leader)
	}
	if !w.leaderlessSince.IsZero() {
		attrs = append(attrs, "leaderless_ms", now.Sub(w.leaderlessSince).Milliseconds())
	}
	n.log.Info("leader elected", attrs...)
	w.leader, w.term = id, term
	w.leaderlessSince, w.leaderlessTold = time.Time{}, false
}

func (w *eventWatch) checkMembers(n *Node) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	servers := f.Configuration().Servers
	if len(servers) == 0 {
		return // a node waiting to join
	}
	cur := make(map[string]raft.Server, len(servers))
	for _, s := range servers {
		cur[string(s.ID)] = s
	}
	if w.members == nil {
		w.members = cur
		n.log.Info("cluster members", "members", describeServers(servers))
		return
	}
	var added, removed, changed []string
	for id, s := range cur {
		old, ok := w.members[id]
		switch {
		case !ok:
			added = append(added, describeServer(s))
		case old.Address != s.Address || old.Suffrage != s.Suffrage:
			changed = append(changed, describeServer(s))
		}
	}
	for id, s := range w.members {
		if _, ok := cur[id]; !ok {
			removed = append(removed, describeServer(s))
		}
	}
	if len(added)+len(removed)+len(changed) == 0 {
		return
	}
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	w.members = cur
	var attrs []any
	for _, f := range []struct {
		key  string
		list []string
	}{{"added", added}, {"removed", removed}, {"changed", changed}} {
		if len(f.list) > 0 {
			attrs = append(attrs, f.key, strings.Join(f.list, ","))
		}
	}
	n.log.Info("membership changed", append(attrs, "members", describeServers(servers))...)
}

// describeServer renders a member as id=addr, with its suffrage unless it
// votes.
func describeServer(s raft.Server) string {
	d := string(s.ID) + "=" + string(s.Address)
	if s.Suffrage != raft.Voter {
		d += "(" + strings.ToLower(s.Suffrage.String()) + ")"
	}
	return d
}

func describeServers(servers []raft.Server) string {
	parts := make([]string, len(servers))
	for i, s := range servers {
		parts[i] = describeServer(s)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// checkExpiry watches, on the leader, how late the earliest pending
// deadline is: holds and waits that should have expired but have not
// (ticks not committing, or applying too slowly).
func (w *eventWatch) checkExpiry(n *Node, now time.Time) {
	lateMs := int64(0)
	leader := n.raft.State() == raft.Leader
	if leader {
		if next, due := n.sm.NextDeadlineMs(); due {
			lateMs = n.NowMs() - next
		}
	}
	switch {
	case lateMs >= expiryBacklogMs:
		w.lateChecks++
		w.backlogMaxLate = max(w.backlogMaxLate, lateMs)
		if !w.backlog && w.lateChecks >= 2 {
			w.backlog, w.backlogSince = true, now
			n.log.Warn("expiry backlog", "late_ms", lateMs)
		}
	case w.backlog && (lateMs < expiryBacklogMs/2 || !leader):
		n.log.Info("expiry backlog cleared", "lasted_ms", now.Sub(w.backlogSince).Milliseconds(),
			"max_late_ms", w.backlogMaxLate, "leader", leader)
		w.backlog, w.lateChecks, w.backlogMaxLate = false, 0, 0
	case !w.backlog:
		w.lateChecks, w.backlogMaxLate = 0, 0
	}
}

// loggedFSM logs each snapshot taken and restored (one line each) around
// the fsm; everything else is the fsm's own.
type loggedFSM struct {
	*fsm
	log *slog.Logger
}

// Snapshot implements raft.FSM.
func (l loggedFSM) Snapshot() (raft.FSMSnapshot, error) {
	s, err := l.fsm.Snapshot()
	if err != nil {
		return nil, err // raft logs the failure
	}
	return &loggedSnapshot{FSMSnapshot: s, log: l.log, index: l.fsm.applied.Load(), clockMs: l.fsm.sm.ClockMs(), start: time.Now()}, nil
}

// Restore implements raft.FSM.
func (l loggedFSM) Restore(rc io.ReadCloser) error {
	start := time.Now()
	cr := &countingReader{ReadCloser: rc}
	if err := l.fsm.Restore(cr); err != nil {
		return err // raft logs the failure
	}
	l.log.Info("snapshot restored", "bytes", cr.n, "log_clock_ms", l.fsm.sm.ClockMs(), "took_ms", time.Since(start).Milliseconds())
	return nil
}

type loggedSnapshot struct {
	raft.FSMSnapshot
	log     *slog.Logger
	index   uint64
	clockMs int64
	start   time.Time
}

// Persist implements raft.FSMSnapshot.
func (s *loggedSnapshot) Persist(sink raft.SnapshotSink) error {
	cs := &countingSink{SnapshotSink: sink}
	if err := s.FSMSnapshot.Persist(cs); err != nil {
		return err // raft logs the failure
	}
	s.log.Info("snapshot taken", "id", sink.ID(), "applied_index", s.index, "log_clock_ms", s.clockMs,
		"bytes", cs.n, "took_ms", time.Since(s.start).Milliseconds())
	return nil
}

type countingSink struct {
	raft.SnapshotSink
	n int64
}

func (c *countingSink) Write(p []byte) (int, error) {
	k, err := c.SnapshotSink.Write(p)
	c.n += int64(k)
	return k, err
}

type countingReader struct {
	io.ReadCloser
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.ReadCloser.Read(p)
	c.n += int64(k)
	return k, err
}

// repeatEvery: one hashicorp/raft or Pebble message (by its text or
// format) is logged at most this often; repeats in between are counted and
// reported with the next. A dead follower otherwise costs a "failed to
// contact" line per lease timeout.
const repeatEvery = 10 * time.Second

// maxRepeatKeys bounds the messages whose repeats are tracked.
const maxRepeatKeys = 256

// repeatLimiter lets each message through at most once per repeatEvery.
type repeatLimiter struct {
	mu   sync.Mutex
	seen map[string]*repeats
}

type repeats struct {
	last       time.Time
	suppressed int
}

// allow reports whether msg may be logged now, and how many times it was
// held back since it last was.
func (r *repeatLimiter) allow(msg string, now time.Time) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.seen[msg]
	if m == nil {
		if r.seen == nil || len(r.seen) >= maxRepeatKeys {
			r.seen = make(map[string]*repeats)
		}
		m = &repeats{}
		r.seen[msg] = m
	} else if now.Sub(m.last) < repeatEvery {
		m.suppressed++
		return false, 0
	}
	n := m.suppressed
	m.last, m.suppressed = now, 0
	return true, n
}

// raftLogger gives hashicorp/raft a logger. With out set (tests pass
// io.Discard) it writes hclog's own text there; otherwise raft's warnings
// and errors become records of log, with component=raft.
func raftLogger(out io.Writer, log *slog.Logger) hclog.Logger {
	if out != nil {
		return hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: out})
	}
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: io.Discard})
	l.RegisterSink(&raftSink{log: log.With("component", "raft")})
	return l
}

// raftSink turns hclog records into slog records, rate-limited per message.
type raftSink struct {
	log     *slog.Logger
	repeats repeatLimiter
}

// Accept implements hclog.SinkAdapter.
func (s *raftSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	var lvl slog.Level
	switch {
	case level >= hclog.Error:
		lvl = slog.LevelError
	case level == hclog.Warn:
		lvl = slog.LevelWarn
	default:
		return // raft's info and debug lines are per election step: too chatty
	}
	ok, suppressed := s.repeats.allow(msg, time.Now())
	if !ok {
		return
	}
	attrs := make([]any, 0, len(args)+2)
	for i := 0; i+1 < len(args); i += 2 {
		attrs = append(attrs, fmt.Sprint(args[i]), args[i+1])
	}
	if suppressed > 0 {
		attrs = append(attrs, "repeats_not_logged", suppressed)
	}
	if name != "raft" && name != "" {
		attrs = append(attrs, "logger", name)
	}
	s.log.Log(context.Background(), lvl, msg, attrs...)
}

// pebbleLogger sends Pebble's messages to the node's log with
// component=pebble: errors (a failed write or sync, which also latch the
// store failed) at error, each format at most once per repeatEvery; its
// informational lines, one per flush and compaction, at debug.
type pebbleLogger struct {
	log     *slog.Logger
	repeats *repeatLimiter
}

func newPebbleLogger(log *slog.Logger) pebbleLogger {
	return pebbleLogger{log: log.With("component", "pebble"), repeats: &repeatLimiter{}}
}

// Infof implements pebble.Logger.
func (l pebbleLogger) Infof(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, args...))
	}
}

// Errorf implements pebble.Logger.
func (l pebbleLogger) Errorf(format string, args ...any) {
	ok, suppressed := l.repeats.allow(format, time.Now())
	if !ok {
		return
	}
	if suppressed > 0 {
		l.log.Error(fmt.Sprintf(format, args...), "repeats_not_logged", suppressed)
		return
	}
	l.log.Error(fmt.Sprintf(format, args...))
}

// Fatalf implements pebble.Logger. The store's own logger never forwards
// Fatalf (it latches the failure and calls Errorf); log it as an error.
func (l pebbleLogger) Fatalf(format string, args ...any) { l.Errorf(format, args...) }
