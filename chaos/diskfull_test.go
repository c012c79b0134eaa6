package chaos

import (
	"testing"
	"time"
)

// TestChaosDiskFull fills the disk of a follower, then of the leader,
// under load: the node must stop acknowledging writes and say so (health
// fails, writes sent to it get 503) or stop (fail-stop), while the other
// two carry on; nothing acknowledged may be lost.
func TestChaosDiskFull(t *testing.T) {
	e := newEnv(t, 3, ciSeed+1, WorkloadConfig{Workers: 8, ColdPools: 20}, "go test ./chaos -run TestChaosDiskFull -count=1 -v")
	r, ctx := e.run, e.ctx
	r.sleep(ctx, 2*time.Second)
	l, err := r.leader()
	e.must(err)
	e.must(r.DiskFull(ctx, "follower", (l+1)%len(r.C.Nodes)))
	l, err = r.leader()
	e.must(err)
	e.must(r.DiskFull(ctx, "leader", l))
	r.sleep(ctx, 2*time.Second)
	e.finish()
}
