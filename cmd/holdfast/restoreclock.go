package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/holdfast/holdfast/allocator"
	"github.com/holdfast/holdfast/engine"
	"github.com/holdfast/holdfast/raftstore"
)

// adoptRestoreClock moves a cluster restored with --restore to the time of
// the restore. Left alone, cluster time would resume at the backup's and
// catch up only 1% faster than real time (the guard against a leader with a
// wrong clock), so a day-old backup would keep draw windows and expiries a
// day late for months. A restore is an operator's decision, so here the
// clock jumps, through the log (allocator.KindSetClock): every replica
// moves at the same entry, holds that expired in real time since the
// backup expire, and cluster time carries on from there.
//
// Every restored node runs it (raftstore.RestorePending: also after a
// restart, or a data directory prepared by holdfast ctl restore); whichever
// leads proposes the jump, the others see their state machine's clock pass
// the target. Then the mark is cleared. It gives up after two minutes
// without a leader (and tries again at the next start).
func adoptRestoreClock(ctx context.Context, node *raftstore.Node, m *engine.Machine, dataDir string, wallMs func() int64, log *slog.Logger) {
	target := wallMs()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	done := func() {
		if err := raftstore.ClearRestorePending(dataDir); err != nil {
			log.Warn("cannot clear the restore mark", "err", err)
		}
	}
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		if m.ClockMs() >= target {
			done()
			return
		}
		if node.IsLeader() {
			c := allocator.Command{Kind: allocator.KindSetClock, Delta: wallMs()}
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := node.Propose(pctx, c.AppendEncode(nil))
			cancel()
			if err == nil {
				log.Info("restored cluster resumes at the time of the restore", "cluster_time_ms", c.Delta)
				done()
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	log.Warn("restored cluster clock not moved: no leader within 2 minutes; it catches up 1% faster than real time")
}
