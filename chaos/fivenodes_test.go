package chaos

import (
	"testing"
	"time"
)

// TestChaosFiveNodes runs the faults that need five nodes: a 2 | 3 split
// with the leader in the minority, and two followers killed at once.
func TestChaosFiveNodes(t *testing.T) {
	e := newEnv(t, 5, ciSeed+2, WorkloadConfig{Workers: 10, ColdPools: 20}, "go test ./chaos -run TestChaosFiveNodes -count=1 -v")
	r, ctx := e.run, e.ctx
	r.sleep(ctx, 2*time.Second)
	e.must(r.KillLeader(ctx, time.Second))
	e.must(r.SplitLeaderMinority(ctx, 5*time.Second))
	e.must(r.KillFollowers(ctx, 2, 2*time.Second))
	e.must(r.IsolateLeader(ctx, 4*time.Second))
	r.SplitFlapping(ctx, 4*time.Second)
	e.must(r.Latency(ctx, 3*time.Second))
	r.sleep(ctx, time.Second)
	e.finish()
}
