package raftstore

import "github.com/prometheus/client_golang/prometheus"

type nodeMetrics struct {
	applySeconds prometheus.Histogram
	batchEntries prometheus.Histogram
	batchCmds    prometheus.Histogram
	ticks        prometheus.Counter
}

func newNodeMetrics(reg prometheus.Registerer) *nodeMetrics {
	m := &nodeMetrics{
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "holdfast_raft_apply_seconds",
			Help:    "Time from proposing a log entry until it is committed and applied on the leader.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		batchEntries: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "holdfast_raft_apply_batch_entries",
			Help:    "Log entries per FSM apply batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		batchCmds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "holdfast_raft_apply_batch_commands",
			Help:    "State machine commands per FSM apply batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		ticks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_raft_ticks_total",
			Help: "Idle ticks proposed by the leader to expire due holds or refresh the log clock.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.applySeconds, m.batchEntries, m.batchCmds, m.ticks)
	}
	return m
}

func (m *nodeMetrics) observeBatch(entries, cmds int) {
	m.batchEntries.Observe(float64(entries))
	if cmds > 0 {
		m.batchCmds.Observe(float64(cmds))
	}
}
