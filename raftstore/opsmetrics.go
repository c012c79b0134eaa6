package raftstore

import (
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// Operator-facing gauges read from the node at scrape time (see
// docs/operations.md, "Metrics and alerts").
var (
	descTerm = prometheus.NewDesc("holdfast_raft_term",
		"Current Raft term; it grows by one or more with every election.", nil, nil)
	descIsLeader = prometheus.NewDesc("holdfast_raft_leader",
		"1 while this node is the leader, else 0.", nil, nil)
	descHasLeader = prometheus.NewDesc("holdfast_raft_has_leader",
		"1 while this node knows a leader, else 0.", nil, nil)
	descLeaderChanges = prometheus.NewDesc("holdfast_raft_leader_changes_total",
		"Leaders this node has seen elected (a new leader or a new term) since it started.", nil, nil)
	descIndex = prometheus.NewDesc("holdfast_raft_index",
		"Raft log indexes on this node: last (in the log), commit (known committed), applied (in the state machine).", []string{"kind"}, nil)
	descExpiryLag = prometheus.NewDesc("holdfast_expiry_lag_seconds",
		"On the leader: how overdue the earliest pending deadline (a hold, offer or wait) is; 0 when nothing is overdue and on followers.", nil, nil)
	descMembers = prometheus.NewDesc("holdfast_raft_members",
		"Members of the configuration as this node sees it, by suffrage.", []string{"suffrage"}, nil)
)

// opsCollector exports the gauges above.
type opsCollector struct {
	n             *Node
	leaderChanges atomic.Uint64
}

// registerOpsMetrics registers the operator gauges and counts the leader
// elections raft reports (the observer's filter counts and delivers
// nothing, so it needs no goroutine).
func (n *Node) registerOpsMetrics(reg prometheus.Registerer) {
	c := &opsCollector{n: n}
	var (
		mu         sync.Mutex
		lastLeader raft.ServerID
		lastTerm   uint64
	)
	n.raft.RegisterObserver(raft.NewObserver(nil, false, func(o *raft.Observation) bool {
		if lo, ok := o.Data.(raft.LeaderObservation); ok && lo.LeaderID != "" {
			mu.Lock()
			defer mu.Unlock()
			if term := n.raft.CurrentTerm(); lo.LeaderID != lastLeader || term != lastTerm {
				lastLeader, lastTerm = lo.LeaderID, term
				c.leaderChanges.Add(1)
			}
		}
		return false
	}))
	if reg != nil {
		reg.MustRegister(c)
	}
}

// Describe implements prometheus.Collector.
func (c *opsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTerm, descIsLeader, descHasLeader, descLeaderChanges, descIndex, descExpiryLag, descMembers} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reads the node now.
func (c *opsCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	leader := n.IsLeader()
	_, lid := n.raft.LeaderWithID()
	gauge(descTerm, float64(n.raft.CurrentTerm()))
	gauge(descIsLeader, b2f(leader))
	gauge(descHasLeader, b2f(lid != ""))
	ch <- prometheus.MustNewConstMetric(descLeaderChanges, prometheus.CounterValue, float64(c.leaderChanges.Load()))
	gauge(descIndex, float64(n.raft.LastIndex()), "last")
	gauge(descIndex, float64(n.raft.CommitIndex()), "commit")
	gauge(descIndex, float64(n.fsm.applied.Load()), "applied")
	lag := 0.0
	if leader {
		if next, due := n.sm.NextDeadlineMs(); due {
			if late := n.NowMs() - next; late > 0 {
				lag = float64(late) / 1000
			}
		}
	}
	gauge(descExpiryLag, lag)
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		var voters, nonvoters float64
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				voters++
			} else {
				nonvoters++
			}
		}
		gauge(descMembers, voters, "voter")
		gauge(descMembers, nonvoters, "nonvoter")
	}
}
